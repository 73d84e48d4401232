//! The two checkpoint layouts of the VQ tokenizer and the one rule that maps between them.
//!
//! Our parameter names are BAAI's original ones (`encoder.down.3.attn.0.q.weight`, `[C,C,1,1]`).
//! HuggingFace transformers stores the same tensors under `vqmodel.` (or `model.vqmodel.`) with
//! other segment names: `down_block.down`, `up_block.up`, `middle_block`, `attn_norms.J` /
//! `attn_norm` for the attention norms, and `q_proj`/`k_proj`/`v_proj`/`out_proj` as `[C,C]`
//! linear weights (the loader reshapes those).

use crate::checkpoint::{Checkpoint, Layout};
use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum VqLayout {
    /// BAAI/Emu3-VisionTokenizer: `encoder.*`, `decoder.*`, `quantize.*`, `quant_conv.*`.
    Original,
    /// transformers' Emu3 checkpoints: the VQ under `vqmodel.` (saved) or `model.vqmodel.`.
    Transformers { prefix: &'static str },
}

const ORIGINAL_ROOTS: [&str; 5] =
    ["encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv."];

impl VqLayout {
    /// Detects the layout from the tensor names.
    pub fn detect(ckpt: &Checkpoint) -> Result<Self> {
        for prefix in ["model.vqmodel.", "vqmodel."] {
            if ckpt.names().any(|n| n.starts_with(prefix)) {
                return Ok(VqLayout::Transformers { prefix });
            }
        }
        if ckpt.names().any(|n| ORIGINAL_ROOTS.iter().any(|r| n.starts_with(r))) {
            return Ok(VqLayout::Original);
        }
        let sample: Vec<_> = ckpt.names().take(3).collect();
        bail!(
            "{} holds no VQ tokenizer weights: expected names under `encoder.`/`decoder.` (BAAI layout) \
             or `vqmodel.` (transformers layout), found e.g. {sample:?}",
            ckpt.origin.display()
        )
    }

    /// Our (original-layout) name for a checkpoint name, or None if it is not a VQ tensor.
    pub fn to_model(&self, name: &str) -> Option<String> {
        match self {
            VqLayout::Original => {
                ORIGINAL_ROOTS.iter().any(|r| name.starts_with(r)).then(|| name.to_string())
            }
            VqLayout::Transformers { prefix } => {
                name.strip_prefix(prefix).map(transformers_to_original)
            }
        }
    }
}

impl Layout for VqLayout {
    fn model_name(&self, checkpoint_name: &str) -> Option<String> {
        self.to_model(checkpoint_name)
    }
}

/// `encoder.down_block.down.3.attn_norms.0.weight` -> `encoder.down.3.attn.0.norm.weight`, etc.
pub fn transformers_to_original(name: &str) -> String {
    let segs: Vec<&str> = name.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(segs.len() + 1);
    let mut i = 0;
    while i < segs.len() {
        match segs[i] {
            "down_block" | "up_block" => {}
            "middle_block" => out.push("mid".into()),
            "attn_norm" => out.extend(["attn_1".into(), "norm".into()]),
            "attn_norms" if i + 1 < segs.len() => {
                out.extend(["attn".into(), segs[i + 1].into(), "norm".into()]);
                i += 1;
            }
            "q_proj" => out.push("q".into()),
            "k_proj" => out.push("k".into()),
            "v_proj" => out.push("v".into()),
            "out_proj" => out.push("proj_out".into()),
            s => out.push(s.into()),
        }
        i += 1;
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::transformers_to_original as t;

    #[test]
    fn maps_every_renamed_segment() {
        assert_eq!(
            t("encoder.down_block.down.3.attn_norms.0.weight"),
            "encoder.down.3.attn.0.norm.weight"
        );
        assert_eq!(
            t("encoder.down_block.down.3.attn.0.q_proj.weight"),
            "encoder.down.3.attn.0.q.weight"
        );
        assert_eq!(
            t("decoder.up_block.up.3.attn.1.out_proj.bias"),
            "decoder.up.3.attn.1.proj_out.bias"
        );
        assert_eq!(
            t("decoder.up_block.up.3.attn_norms.1.conv_b.weight"),
            "decoder.up.3.attn.1.norm.conv_b.weight"
        );
        assert_eq!(t("encoder.middle_block.attn_norm.bias"), "encoder.mid.attn_1.norm.bias");
        assert_eq!(t("decoder.middle_block.attn_1.v_proj.weight"), "decoder.mid.attn_1.v.weight");
        assert_eq!(
            t("decoder.middle_block.block_2.norm1.conv_y.bias"),
            "decoder.mid.block_2.norm1.conv_y.bias"
        );
        assert_eq!(t("quantize.embedding.weight"), "quantize.embedding.weight");
        assert_eq!(
            t("encoder.time_conv.0.conv.conv.weight"),
            "encoder.time_conv.0.conv.conv.weight"
        );
    }
}
