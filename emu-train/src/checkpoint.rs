//! Run folders and atomic checkpoints.
//!
//! The checkpoint is `runs/<name>/model/`: a loadable model folder (config.json, model.safetensors,
//! tokenizer.json, vision_tokenizer/, and extensions.json when its training added to the
//! reference's format) plus optimizer.safetensors, state.json (step, seed, data cursor) and
//! train_config.json. It is written whole into `model.new/`, marked COMPLETE, and
//! swapped in by two renames (`model` -> `model.old`, `model.new` -> `model`), so a kill at any
//! moment leaves a complete checkpoint under one of the three names; [`latest`] finds it.

use crate::data::pack::Cursor;
use anyhow::{Context, Result, bail};
use emu_model::{Emu3Config, Emu3ForCausalLM, Extensions};
use emu_tokenizer::checkpoint::{save_atomic, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Tensor;

const COMPLETE: &str = "COMPLETE";

/// Where training stands: enough to continue bit-exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: i64,
    /// Base seed; step k's dropout uses seed + k, the data order uses (seed, epoch).
    pub seed: u64,
    pub cursor: Cursor,
    /// World size that wrote it (any world size can resume it).
    pub world: usize,
}

/// Files that travel with every checkpoint unchanged (hard-linked when possible).
pub struct Companions {
    pub tokenizer: PathBuf,
    pub vision_tokenizer: Option<PathBuf>,
    /// Written as `extensions.json` unless it is the reference's behaviour.
    pub extensions: Extensions,
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
            let e = e?;
            link_or_copy(&e.path(), &dst.join(e.file_name()))?;
        }
        return Ok(());
    }
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Writes a checkpoint of `lm` with its optimizer state into `run/model`, atomically.
pub fn save(
    run: &Path,
    lm: &Emu3ForCausalLM,
    optimizer: &[(String, Tensor)],
    state: &TrainState,
    train_config: &serde_json::Value,
    companions: &Companions,
) -> Result<PathBuf> {
    let final_dir = run.join("model");
    let new = run.join("model.new");
    let old = run.join("model.old");
    if new.exists() {
        std::fs::remove_dir_all(&new)
            .with_context(|| format!("removing a stale {}", new.display()))?;
    }
    std::fs::create_dir_all(&new).with_context(|| format!("creating {}", new.display()))?;
    lm.save(&new)?;
    save_atomic(optimizer, &new.join("optimizer.safetensors"))?;
    write_atomic(&new.join("state.json"), &serde_json::to_string_pretty(state)?)?;
    write_atomic(&new.join("train_config.json"), &serde_json::to_string_pretty(train_config)?)?;
    link_or_copy(&companions.tokenizer, &new.join("tokenizer.json"))?;
    if let Some(vq) = &companions.vision_tokenizer {
        link_or_copy(vq, &new.join("vision_tokenizer"))?;
    }
    if companions.extensions != Extensions::default() {
        let json = serde_json::to_string_pretty(&companions.extensions)?;
        write_atomic(&new.join(Extensions::FILE), &json)?;
    }
    write_atomic(&new.join(COMPLETE), &format!("{}\n", state.step))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old)
            .with_context(|| format!("moving {} aside", final_dir.display()))?;
    }
    std::fs::rename(&new, &final_dir)
        .with_context(|| format!("renaming {} to {}", new.display(), final_dir.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(final_dir)
}

/// The newest complete checkpoint of a run, whatever moment a previous writer was killed at.
pub fn latest(run: &Path) -> Option<PathBuf> {
    let complete = |d: &Path| d.join(COMPLETE).exists();
    let step = |d: &Path| {
        std::fs::read_to_string(d.join(COMPLETE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    ["model", "model.new", "model.old"]
        .iter()
        .map(|n| run.join(n))
        .filter(|d| complete(d))
        .max_by_key(|d| step(d))
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join("state.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
    )
    .with_context(|| format!("{} is not a training state", p.display()))
}

/// Refuses to resume when the architecture differs (anything but the token ids and dropout).
pub fn check_same_architecture(saved: &Emu3Config, wanted: &Emu3Config, dir: &Path) -> Result<()> {
    let fields = [
        ("vocab_size", saved.vocab_size, wanted.vocab_size),
        ("hidden_size", saved.hidden_size, wanted.hidden_size),
        ("intermediate_size", saved.intermediate_size, wanted.intermediate_size),
        ("num_hidden_layers", saved.num_hidden_layers, wanted.num_hidden_layers),
        ("num_attention_heads", saved.num_attention_heads, wanted.num_attention_heads),
        ("num_key_value_heads", saved.num_key_value_heads, wanted.num_key_value_heads),
    ];
    for (name, a, b) in fields {
        if a != b {
            bail!(
                "cannot resume {}: its {name} is {a}, but this run asks for {b}\nhint: use another --name for a \
                 new run, or the same model config to continue",
                dir.display()
            );
        }
    }
    if saved.rope_theta != wanted.rope_theta || saved.rms_norm_eps != wanted.rms_norm_eps {
        bail!(
            "cannot resume {}: its rope_theta/rms_norm_eps differ from this run's",
            dir.display()
        );
    }
    Ok(())
}
