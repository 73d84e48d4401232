//! The language model's checkpoint layouts and loading.
//!
//! Our parameter names are BAAI's original ones: `model.layers.N.*`, `model.embed_tokens.weight`,
//! `model.norm.weight`, `lm_head.weight`. transformers saves the same tensors as
//! `text_model.model.*` / `text_model.lm_head.weight`, and its in-memory (v5) naming is
//! `model.text_model.*` / `lm_head.weight`. All three load, auto-detected; tensors of other models
//! in the same file (`vqmodel.*`) are left alone.

use crate::config::Emu3Config;
use crate::model::Emu3ForCausalLM;
use anyhow::{Result, bail};
use emu_tokenizer::checkpoint::{self, Checkpoint, Layout};
use std::path::Path;
use tch::{Device, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LmLayout {
    /// `model.layers.N.*`, `lm_head.weight` (BAAI/Emu3-Gen, Emu3-Chat).
    Original,
    /// `text_model.model.*`, `text_model.lm_head.weight` (transformers, as saved).
    TransformersSaved,
    /// `model.text_model.*`, `lm_head.weight` (transformers v5 naming).
    TransformersModel,
}

impl LmLayout {
    pub fn detect(ckpt: &Checkpoint) -> Result<Self> {
        if ckpt.names().any(|n| n.starts_with("text_model.model.")) {
            return Ok(LmLayout::TransformersSaved);
        }
        if ckpt.names().any(|n| n.starts_with("model.text_model.")) {
            return Ok(LmLayout::TransformersModel);
        }
        if ckpt
            .names()
            .any(|n| n.starts_with("model.layers.") || n.starts_with("model.embed_tokens."))
        {
            return Ok(LmLayout::Original);
        }
        let sample: Vec<_> = ckpt.names().take(3).collect();
        bail!(
            "{} holds no Emu3 language-model weights: expected `model.layers.*` (BAAI layout), \
             `text_model.model.*` or `model.text_model.*` (transformers), found e.g. {sample:?}",
            ckpt.origin.display()
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            LmLayout::Original => "original",
            LmLayout::TransformersSaved => "transformers",
            LmLayout::TransformersModel => "transformers-v5",
        }
    }
}

impl Layout for LmLayout {
    fn model_name(&self, name: &str) -> Option<String> {
        match self {
            LmLayout::Original => (name.starts_with("model.") || name.starts_with("lm_head."))
                .then(|| name.to_string()),
            LmLayout::TransformersSaved => {
                name.strip_prefix("text_model.model.").map(|r| format!("model.{r}")).or_else(|| {
                    name.strip_prefix("text_model.lm_head.").map(|r| format!("lm_head.{r}"))
                })
            }
            LmLayout::TransformersModel => name
                .strip_prefix("model.text_model.")
                .map(|r| format!("model.{r}"))
                .or_else(|| name.starts_with("lm_head.").then(|| name.to_string())),
        }
    }
}

impl Emu3ForCausalLM {
    /// Loads a model folder (config.json + weights) in any layout, as `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = Emu3Config::from_file(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        // Before allocating anything: are these language-model weights at all?
        LmLayout::detect(&ckpt)?;
        let model = Self::new(&config, device, kind)?;
        model.load_weights(&ckpt)?;
        Ok(model)
    }

    /// Copies weights from `ckpt` (layout auto-detected), checking coverage both ways.
    pub fn load_weights(&self, ckpt: &Checkpoint) -> Result<LmLayout> {
        let layout = LmLayout::detect(ckpt)?;
        checkpoint::load_into(&self.vs.variables(), ckpt, &layout, "language model")?;
        if ckpt.names().any(|n| n.starts_with("lm_head") || n.contains(".lm_head.")) {
            return Ok(layout);
        }
        bail!("{}: no lm_head weight", ckpt.origin.display())
    }

    /// Writes config.json and model.safetensors (BAAI layout) into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save_model_folder(
            dir,
            &self.config,
            "Emu3ForCausalLM",
            "Emu3",
            &self.vs.variables(),
        )
    }

    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }
}
