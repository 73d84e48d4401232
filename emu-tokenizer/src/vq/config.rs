//! `VqConfig`: the vision tokenizer's configuration, read from either checkpoint layout.
//!
//! BAAI's original config names fields `ch`, `ch_mult`, `z_channels`, `double_z`; HuggingFace
//! transformers' `Emu3VQVAEConfig` calls them `base_channels`, `channel_multiplier`,
//! `latent_channels`, `double_latent` and adds `hidden_size`/`num_attention_heads` for the
//! attention blocks. Both deserialize into this one struct; we always write the original names.
//! Defaults equal the released Emu3-VisionTokenizer.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VqConfig {
    pub codebook_size: i64,
    pub embed_dim: i64,
    #[serde(alias = "latent_channels")]
    pub z_channels: i64,
    #[serde(alias = "double_latent")]
    pub double_z: bool,
    pub in_channels: i64,
    pub out_channels: i64,
    pub temporal_downsample_factor: i64,
    #[serde(alias = "base_channels")]
    pub ch: i64,
    #[serde(alias = "channel_multiplier")]
    pub ch_mult: Vec<i64>,
    pub num_res_blocks: i64,
    pub attn_resolutions: Vec<i64>,
    pub dropout: f64,
    /// transformers only: the attention width, which must equal the channels where attention runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<i64>,
    /// transformers only: must be 1 (the reference's attention is single-head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<i64>,
}

impl Default for VqConfig {
    fn default() -> Self {
        Self::emu3()
    }
}

impl VqConfig {
    /// The released Emu3 vision tokenizer: 32768 codes, 8x spatial and 4x temporal downsampling.
    pub fn emu3() -> Self {
        VqConfig {
            codebook_size: 32768,
            embed_dim: 4,
            z_channels: 4,
            double_z: false,
            in_channels: 3,
            out_channels: 3,
            temporal_downsample_factor: 4,
            ch: 256,
            ch_mult: vec![1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![3],
            dropout: 0.0,
            hidden_size: None,
            num_attention_heads: None,
        }
    }

    /// The dimensions of the parity fixture: for tests.
    pub fn tiny() -> Self {
        VqConfig {
            codebook_size: 64,
            ch: 32,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            ..Self::emu3()
        }
    }

    /// Our own laptop-sized tokenizer for the synthetic world: 8x spatial, 4x temporal.
    pub fn small() -> Self {
        VqConfig {
            codebook_size: 512,
            embed_dim: 8,
            z_channels: 8,
            ch: 32,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            ..Self::emu3()
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "emu3" => Self::emu3(),
            "tiny" => Self::tiny(),
            "small" => Self::small(),
            other => bail!("unknown VQ preset `{other}`; expected one of: emu3, tiny, small"),
        })
    }

    /// Reads a config.json: a bare VQ config (either layout) or an Emu3 config with `vq_config`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let value = value.get("vq_config").cloned().unwrap_or(value);
        // Defaults are the released tokenizer's; a file naming no codebook is something else.
        if value.get("codebook_size").is_none() {
            bail!("{} has no `codebook_size`: not a VQ tokenizer config", path.display());
        }
        let cfg: VqConfig = serde_json::from_value(value)
            .with_context(|| format!("{}: not a VQ tokenizer config", path.display()))?;
        cfg.validate().with_context(|| format!("invalid VQ config in {}", path.display()))?;
        Ok(cfg)
    }

    /// Spatial downsampling factor (8 for Emu3).
    pub fn spatial_factor(&self) -> i64 {
        1 << (self.ch_mult.len() - 1)
    }

    /// Channels of the encoder's last level, where the middle block runs.
    pub fn block_channels(&self) -> i64 {
        self.ch * self.ch_mult.last().copied().unwrap_or(1)
    }

    pub fn encoder_out_channels(&self) -> i64 {
        if self.double_z { 2 * self.z_channels } else { self.z_channels }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.codebook_size > 0,
            "codebook_size must be positive, got {}",
            self.codebook_size
        );
        ensure!(self.embed_dim > 0, "embed_dim must be positive, got {}", self.embed_dim);
        ensure!(self.z_channels > 0, "z_channels must be positive, got {}", self.z_channels);
        ensure!(!self.ch_mult.is_empty(), "ch_mult must list at least one level");
        ensure!(
            self.num_res_blocks >= 1,
            "num_res_blocks must be at least 1, got {}",
            self.num_res_blocks
        );
        ensure!(
            self.in_channels > 0 && self.out_channels > 0,
            "in_channels and out_channels must be positive"
        );
        let t = self.temporal_downsample_factor;
        ensure!(
            t >= 1 && (t as u64).is_power_of_two(),
            "temporal_downsample_factor must be a power of two (1, 2, 4, ...), got {t}"
        );
        for (level, m) in self.ch_mult.iter().enumerate() {
            let c = self.ch * m;
            ensure!(
                *m > 0 && c % crate::nn::GROUPS == 0,
                "ch * ch_mult[{level}] = {} * {m} = {c} channels do not split into the {} GroupNorm groups",
                self.ch,
                crate::nn::GROUPS
            );
        }
        ensure!(
            self.ch % crate::nn::GROUPS == 0,
            "ch = {} channels do not split into the {} GroupNorm groups",
            self.ch,
            crate::nn::GROUPS
        );
        for &r in &self.attn_resolutions {
            ensure!(
                r >= 0 && (r as usize) < self.ch_mult.len(),
                "attn_resolutions names level {r}, but ch_mult has only {} levels",
                self.ch_mult.len()
            );
        }
        if let Some(hidden) = self.hidden_size {
            ensure!(
                hidden == self.block_channels(),
                "hidden_size {hidden} must equal ch * ch_mult[-1] = {} (the attention width)",
                self.block_channels()
            );
            for &r in &self.attn_resolutions {
                let c = self.ch * self.ch_mult[r as usize];
                ensure!(
                    c == hidden,
                    "attention at level {r} runs on {c} channels, but hidden_size is {hidden}"
                );
            }
        }
        if let Some(heads) = self.num_attention_heads {
            ensure!(
                heads == 1,
                "num_attention_heads must be 1 (the reference's attention is single-head), got {heads}"
            );
        }
        ensure!(
            self.embed_dim == self.z_channels,
            "embed_dim ({}) must equal z_channels ({}): the decoder runs its temporal layers on the quantized \
             and the post-quant latents together",
            self.embed_dim,
            self.z_channels
        );
        ensure!(
            !self.double_z,
            "double_z = true is not supported: quant_conv takes z_channels inputs"
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1), got {}",
            self.dropout
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_into_the_same_config() {
        let original = r#"{"codebook_size": 64, "embed_dim": 4, "z_channels": 4, "double_z": false,
            "ch": 32, "ch_mult": [1,2,2,2], "num_res_blocks": 1, "attn_resolutions": [3]}"#;
        let hf = r#"{"vq_config": {"codebook_size": 64, "embed_dim": 4, "latent_channels": 4,
            "double_latent": false, "base_channels": 32, "channel_multiplier": [1,2,2,2],
            "num_res_blocks": 1, "attn_resolutions": [3], "hidden_size": 64, "num_attention_heads": 1}}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), original).unwrap();
        std::fs::write(dir.path().join("b.json"), hf).unwrap();
        let a = VqConfig::from_file(&dir.path().join("a.json")).unwrap();
        let mut b = VqConfig::from_file(&dir.path().join("b.json")).unwrap();
        b.hidden_size = None;
        b.num_attention_heads = None;
        assert_eq!(a, b);
        assert_eq!(a, VqConfig::tiny());
        assert_eq!(a.spatial_factor(), 8);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = VqConfig { ch: 48, ..VqConfig::tiny() };
        let err = format!("{:#}", bad.validate().unwrap_err());
        assert!(err.contains("ch") && err.contains("GroupNorm"), "{err}");
        let bad = VqConfig { temporal_downsample_factor: 3, ..VqConfig::tiny() };
        assert!(
            format!("{:#}", bad.validate().unwrap_err()).contains("temporal_downsample_factor")
        );
        let bad = VqConfig { attn_resolutions: vec![7], ..VqConfig::tiny() };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("attn_resolutions"));
        let bad = VqConfig { hidden_size: Some(32), ..VqConfig::tiny() };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("hidden_size"));
        for p in ["emu3", "tiny", "small"] {
            VqConfig::preset(p).unwrap().validate().unwrap();
        }
    }
}
