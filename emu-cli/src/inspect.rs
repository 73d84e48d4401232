//! `emu inspect DIR`: what a model folder is, and what is missing or inconsistent.

use crate::common::{Global, emit};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A model folder (ours, BAAI's, or transformers'), or a vision-tokenizer folder.
    pub dir: PathBuf,
}

pub fn run(g: &Global, a: &InspectArgs) -> Result<()> {
    let r = emu_model::inspect::inspect(&a.dir)?;
    emit(g, &r, || {
        let mut s = format!("{}\n  kind: {}\n", r.path, r.kind);
        for (name, part) in
            [("language model", &r.language_model), ("vision tokenizer", &r.vision_tokenizer)]
        {
            if let Some(p) = part {
                s.push_str(&format!(
                    "  {name}: {} layout, {:.2}M parameters, dtype {}\n",
                    p.layout,
                    p.parameters as f64 / 1e6,
                    p.dtypes.join("/")
                ));
            }
        }
        if let Some(lm) = &r.language_model {
            let c = &lm.config;
            s.push_str(&format!(
                "    hidden {} x {} layers, heads {}/{}, vocab {}, rope θ {}\n",
                c["hidden_size"],
                c["num_hidden_layers"],
                c["num_attention_heads"],
                c["num_key_value_heads"],
                c["vocab_size"],
                c["rope_theta"]
            ));
        }
        if let Some(vq) = &r.vision_tokenizer {
            let c = &vq.config;
            s.push_str(&format!(
                "    codebook {}, ch {} x {}, temporal {}x\n",
                c["codebook_size"], c["ch"], c["ch_mult"], c["temporal_downsample_factor"]
            ));
        }
        s.push_str(&format!("  tokenizer: {}\n", r.tokenizer.as_deref().unwrap_or("none")));
        if r.problems.is_empty() {
            s.push_str("  no problems found\n");
        } else {
            s.push_str("  problems:\n");
            for p in &r.problems {
                s.push_str(&format!("  - {p}\n"));
            }
        }
        s
    })
}
