//! Language-model parity checks against a fixture folder, in every layout the folder ships:
//! logits, the greedy continuation with the KV cache, the training loss, and two gradients.
//!
//! Shapes: B batch, L tokens, P prompt tokens, V vocabulary, D hidden.

use crate::model::Emu3ForCausalLM;
use anyhow::Result;
use emu_tokenizer::parity::{CheckRow, Fixture, compare};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The LM folders of a fixture: (layout label, folder).
pub fn lm_sources(fx: &Fixture) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for (label, dir) in
        [("transformers", fx.dir.clone()), ("original", fx.dir.join("original/llm"))]
    {
        if dir.join("config.json").exists() {
            v.push((label.to_string(), dir));
        }
    }
    v
}

/// Every LM check the fixture supports.
pub fn lm_checks(fx: &Fixture) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    if !fx.has("input_ids") {
        return rows;
    }
    for (label, dir) in lm_sources(fx) {
        match Emu3ForCausalLM::load(&dir, Device::Cpu, Kind::Float) {
            Ok(lm) => {
                if let Err(e) = checks_for(fx, &lm, &label, &mut rows) {
                    rows.push(CheckRow::failed("lm", &label, "(checks)", &e));
                }
            }
            Err(e) => rows.push(CheckRow::failed("lm", &label, "(load)", &e)),
        }
    }
    rows
}

/// Greedy continuation of `prompt` (`[1,P]`) by `n` tokens through the KV cache: `[1,n]`.
pub fn greedy(lm: &Emu3ForCausalLM, prompt: &Tensor, n: i64) -> Tensor {
    tch::no_grad(|| {
        let p = prompt.size()[1];
        let mut cache = lm.new_cache(1, p + n);
        let mut logits = lm.forward_cached(prompt, &prompt.ones_like(), &mut cache);
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let next = logits.argmax(-1, true);
            out.push(next.shallow_clone());
            logits = lm.forward_cached(&next, &next.ones_like(), &mut cache);
        }
        Tensor::cat(&out, 1)
    })
}

fn checks_for(
    fx: &Fixture,
    lm: &Emu3ForCausalLM,
    layout: &str,
    rows: &mut Vec<CheckRow>,
) -> Result<()> {
    let tol = fx.float_abs;
    let ids = fx.tensor("input_ids")?;
    if fx.has("logits") {
        let logits = tch::no_grad(|| lm.forward(&ids, None));
        rows.push(compare("lm", layout, "logits", &logits, &fx.tensor("logits")?, tol));
    }
    if fx.has("greedy_prompt") && fx.has("greedy_ids") {
        let want = fx.tensor("greedy_ids")?;
        let got = greedy(lm, &fx.tensor("greedy_prompt")?, want.size()[1]);
        rows.push(compare("lm", layout, "greedy_ids", &got, &want, tol));
    }
    if fx.has("train_loss") {
        for mut t in lm.vs.trainable_variables() {
            t.zero_grad();
        }
        let out = lm.forward_train(&ids, &ids, None, None, false, false);
        out.loss.backward();
        rows.push(compare(
            "lm",
            layout,
            "train_loss",
            &out.loss.reshape([1]),
            &fx.tensor("train_loss")?,
            tol,
        ));
        if fx.has("grad_lm_head") {
            let g = lm.lm_head.weight.grad();
            rows.push(compare("lm", layout, "grad_lm_head", &g, &fx.tensor("grad_lm_head")?, tol));
        }
        if fx.has("grad_embed_tokens") {
            let g = lm.model.embed_tokens.weight.grad();
            rows.push(compare(
                "lm",
                layout,
                "grad_embed_tokens",
                &g,
                &fx.tensor("grad_embed_tokens")?,
                tol,
            ));
        }
        for mut t in lm.vs.trainable_variables() {
            t.zero_grad();
        }
    }
    Ok(())
}
