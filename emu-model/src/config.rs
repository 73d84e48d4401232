//! `Emu3Config`: the language model's configuration, read from either checkpoint layout.
//!
//! BAAI's original config.json is flat (`rope_theta`, `img_token_id`, `boi_token_id`, `eol_token_id`,
//! `image_area`, ...). transformers' `Emu3Config` nests the LM in `text_config` (RoPE under
//! `rope_parameters`), keeps the VQ in `vq_config`, and names the image special tokens only through
//! `vocabulary_map`. Both deserialize into this one flat struct; we always write the flat form.
//! Defaults equal the released Emu3-8B.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Emu3Config {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub hidden_act: String,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Only `null` is supported (the released models use plain RoPE).
    pub rope_scaling: Option<Value>,
    /// Dropout on attention probabilities, on both residual branches and on the embeddings,
    /// during training only.
    pub attention_dropout: f64,
    pub tie_word_embeddings: bool,
    pub pad_token_id: i64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub img_token_id: i64,
    pub boi_token_id: i64,
    pub eoi_token_id: i64,
    pub eol_token_id: i64,
    pub eof_token_id: i64,
    /// Pixel area of generated images (Emu3-Gen: 720·720).
    pub image_area: i64,
    /// Standard deviation of the normal init of every weight matrix and embedding (norms start
    /// at one), as in transformers.
    pub initializer_range: f64,
}

impl Default for Emu3Config {
    fn default() -> Self {
        Self::emu3_8b()
    }
}

impl Emu3Config {
    /// The released Emu3-8B (Gen and Chat share the architecture).
    pub fn emu3_8b() -> Self {
        Emu3Config {
            vocab_size: 184622,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            hidden_act: "silu".into(),
            max_position_embeddings: 131072,
            rms_norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            rope_scaling: None,
            attention_dropout: 0.1,
            tie_word_embeddings: false,
            pad_token_id: 151643,
            bos_token_id: 151849,
            eos_token_id: 151850,
            img_token_id: 151851,
            boi_token_id: 151852,
            eoi_token_id: 151853,
            eol_token_id: 151846,
            eof_token_id: 151847,
            image_area: 720 * 720,
            initializer_range: 0.02,
        }
    }

    /// The parity fixture's dimensions.
    pub fn tiny() -> Self {
        Emu3Config {
            vocab_size: 400,
            hidden_size: 64,
            intermediate_size: 160,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 512,
            attention_dropout: 0.0,
            pad_token_id: 0,
            bos_token_id: 1,
            eos_token_id: 2,
            eol_token_id: 328,
            img_token_id: 329,
            boi_token_id: 330,
            eoi_token_id: 331,
            eof_token_id: 332,
            image_area: 1024,
            ..Self::emu3_8b()
        }
    }

    /// A laptop-sized model (about 6M parameters without the embeddings).
    pub fn small() -> Self {
        Emu3Config {
            hidden_size: 256,
            intermediate_size: 688,
            num_hidden_layers: 4,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            max_position_embeddings: 2048,
            rope_theta: 10_000.0,
            ..Self::tiny()
        }
    }

    /// A GPU-sized model (about 0.5B parameters), for throughput and MFU measurements.
    pub fn base() -> Self {
        Emu3Config {
            vocab_size: 32768,
            hidden_size: 1024,
            intermediate_size: 2816,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            max_position_embeddings: 4096,
            ..Self::small()
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "emu3-8b" => Self::emu3_8b(),
            "tiny" => Self::tiny(),
            "small" => Self::small(),
            "base" => Self::base(),
            other => {
                bail!("unknown model preset `{other}`; expected one of: emu3-8b, tiny, small, base")
            }
        })
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads a config.json in either layout and validates it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let cfg = Self::from_value(value)
            .with_context(|| format!("{}: not an Emu3 language-model config", path.display()))?;
        cfg.validate().with_context(|| format!("invalid model config in {}", path.display()))?;
        Ok(cfg)
    }

    /// Parses either layout (no validation). The defaults are the 8B model's, so a file that
    /// names none of the shape fields is refused rather than read as an 8B model.
    pub fn from_value(value: Value) -> Result<Self> {
        let Some(text) = value.get("text_config") else {
            require_shape(&value)?;
            return Ok(serde_json::from_value(value)?);
        };
        require_shape(text).context("in `text_config`")?;
        let mut flat = text.clone();
        let obj = flat.as_object_mut().context("`text_config` must be an object")?;
        if let Some(theta) = text.pointer("/rope_parameters/rope_theta") {
            obj.insert("rope_theta".into(), theta.clone());
        }
        if let Some(kind) = text.pointer("/rope_parameters/rope_type").and_then(Value::as_str) {
            ensure!(
                kind == "default",
                "text_config.rope_parameters.rope_type `{kind}` is not supported (only `default`)"
            );
        }
        if let Some(id) = value.get("image_token_id") {
            obj.insert("img_token_id".into(), id.clone());
        }
        let vocab = value.get("vocabulary_map").and_then(Value::as_object);
        for (field, token) in [
            ("img_token_id", "<image>"),
            ("boi_token_id", "<|image start|>"),
            ("eoi_token_id", "<|image end|>"),
            ("eol_token_id", "<|extra_200|>"),
            ("eof_token_id", "<|extra_201|>"),
        ] {
            if let Some(id) = vocab.and_then(|v| v.get(token)) {
                obj.entry(field).or_insert(id.clone());
            } else if !obj.contains_key(field) {
                bail!("cannot tell `{field}`: no `{token}` in vocabulary_map");
            }
        }
        Ok(serde_json::from_value(flat)?)
    }

    pub fn validate(&self) -> Result<()> {
        let pos = |v: i64, f: &str| -> Result<()> {
            ensure!(v > 0, "{f} must be positive, got {v}");
            Ok(())
        };
        pos(self.vocab_size, "vocab_size")?;
        pos(self.hidden_size, "hidden_size")?;
        pos(self.intermediate_size, "intermediate_size")?;
        pos(self.num_hidden_layers, "num_hidden_layers")?;
        pos(self.num_attention_heads, "num_attention_heads")?;
        pos(self.num_key_value_heads, "num_key_value_heads")?;
        pos(self.max_position_embeddings, "max_position_embeddings")?;
        ensure!(
            self.hidden_size % self.num_attention_heads == 0,
            "num_attention_heads ({}) must divide hidden_size ({})",
            self.num_attention_heads,
            self.hidden_size
        );
        ensure!(
            self.num_attention_heads % self.num_key_value_heads == 0,
            "num_key_value_heads ({}) must divide num_attention_heads ({})",
            self.num_key_value_heads,
            self.num_attention_heads
        );
        ensure!(
            self.head_dim() % 2 == 0,
            "the head dimension hidden_size/num_attention_heads = {} must be even for RoPE",
            self.head_dim()
        );
        ensure!(
            self.hidden_act == "silu",
            "hidden_act `{}` is not supported (only `silu`)",
            self.hidden_act
        );
        ensure!(
            self.rope_scaling.as_ref().is_none_or(Value::is_null),
            "rope_scaling is not supported; it must be null"
        );
        ensure!(
            self.rms_norm_eps > 0.0,
            "rms_norm_eps must be positive, got {}",
            self.rms_norm_eps
        );
        ensure!(self.rope_theta > 0.0, "rope_theta must be positive, got {}", self.rope_theta);
        ensure!(
            self.initializer_range > 0.0 && self.initializer_range.is_finite(),
            "initializer_range must be a positive standard deviation, got {}",
            self.initializer_range
        );
        ensure!(
            (0.0..1.0).contains(&self.attention_dropout),
            "attention_dropout must be in [0, 1), got {}",
            self.attention_dropout
        );
        ensure!(
            !self.tie_word_embeddings,
            "tie_word_embeddings = true is not supported (Emu3's lm_head is untied)"
        );
        for (name, id) in [
            ("pad_token_id", self.pad_token_id),
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("img_token_id", self.img_token_id),
            ("boi_token_id", self.boi_token_id),
            ("eoi_token_id", self.eoi_token_id),
            ("eol_token_id", self.eol_token_id),
            ("eof_token_id", self.eof_token_id),
        ] {
            ensure!(
                (0..self.vocab_size).contains(&id),
                "{name} {id} is outside the vocabulary [0, {})",
                self.vocab_size
            );
        }
        Ok(())
    }

    /// Parameters, embeddings and head included.
    pub fn num_parameters(&self) -> i64 {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d;
        2 * v * d + self.num_hidden_layers * layer + d
    }
}

/// The fields without which a config does not describe a language model.
fn require_shape(v: &Value) -> Result<()> {
    let missing: Vec<&str> =
        ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"]
            .into_iter()
            .filter(|k| v.get(*k).is_none())
            .collect();
    if !missing.is_empty() {
        bail!(
            "it names no {} (a vision-tokenizer folder, perhaps?)",
            missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/fixtures/emu3-tiny")
            .join(rel)
    }

    #[test]
    fn both_layouts_give_the_same_config() {
        let mut hf = Emu3Config::from_file(&fixture("config.json")).unwrap();
        let orig = Emu3Config::from_file(&fixture("original/llm/config.json")).unwrap();
        // transformers keeps image_area out of the model config: the released default applies.
        assert_eq!(hf.image_area, 720 * 720);
        hf.image_area = orig.image_area;
        assert_eq!(hf, orig);
        assert_eq!(hf, Emu3Config::tiny());
    }

    #[test]
    fn a_vision_tokenizer_config_is_not_read_as_an_8b_model() {
        let e = format!(
            "{:#}",
            Emu3Config::from_file(&fixture("original/vision_tokenizer/config.json")).unwrap_err()
        );
        assert!(
            e.contains("names no `vocab_size`") && e.contains("not an Emu3 language-model config"),
            "{e}"
        );
    }

    #[test]
    fn emu3_8b_has_8_49b_parameters() {
        let n = Emu3Config::emu3_8b().num_parameters();
        assert_eq!(n, 8_492_011_520, "{n}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(Emu3Config, &str); 6] = [
            (Emu3Config { num_attention_heads: 5, ..Emu3Config::tiny() }, "hidden_size"),
            (Emu3Config { num_key_value_heads: 3, ..Emu3Config::tiny() }, "num_key_value_heads"),
            (Emu3Config { eol_token_id: 400, ..Emu3Config::tiny() }, "eol_token_id"),
            (Emu3Config { hidden_act: "gelu".into(), ..Emu3Config::tiny() }, "hidden_act"),
            (Emu3Config { initializer_range: 0.0, ..Emu3Config::tiny() }, "initializer_range"),
            (
                Emu3Config {
                    rope_scaling: Some(serde_json::json!({"type": "linear"})),
                    ..Emu3Config::tiny()
                },
                "rope_scaling",
            ),
        ];
        for (cfg, field) in cases {
            let e = format!("{:#}", cfg.validate().unwrap_err());
            assert!(e.contains(field), "{e}");
        }
        for p in ["emu3-8b", "tiny", "small", "base"] {
            Emu3Config::preset(p).unwrap().validate().unwrap();
        }
    }
}
