//! Every parity check a fixture folder supports: the VQ and LM checks of the crates that own
//! them, plus the optimizer's (losses before each of 5 AdamW steps, and, where the folder has it,
//! the parameters after them).

use crate::optim::{AdamW, AdamWConfig};
use anyhow::Result;
use emu_model::Emu3ForCausalLM;
use emu_model::parity::{lm_checks, lm_sources};
use emu_tokenizer::checkpoint::Checkpoint;
use emu_tokenizer::parity::{CheckRow, Fixture, compare, vq_checks};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The whole report for one fixture folder.
#[derive(Debug, serde::Serialize)]
pub struct ParityReport {
    pub fixture: String,
    pub rows: Vec<CheckRow>,
    pub passed: bool,
}

/// Runs every check `dir` supports, in every layout it ships.
pub fn run(dir: &Path) -> Result<ParityReport> {
    let fx = Fixture::open(dir)?;
    let mut rows = vq_checks(&fx);
    rows.extend(lm_checks(&fx));
    rows.extend(optimizer_checks(&fx));
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: expected.safetensors holds no tensor any check knows",
        dir.display()
    );
    let passed = rows.iter().all(|r| r.pass);
    Ok(ParityReport { fixture: dir.display().to_string(), rows, passed })
}

/// The 5 AdamW steps of the fixture (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on every
/// parameter), from each layout's weights.
pub fn optimizer_checks(fx: &Fixture) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    if !fx.has("adamw_losses") || !fx.has("input_ids") {
        return rows;
    }
    for (label, dir) in lm_sources(fx) {
        if let Err(e) = adamw_for(fx, &dir, &label, &mut rows) {
            rows.push(CheckRow::failed("optim", &label, "adamw_losses", &e));
        }
    }
    rows
}

fn adamw_for(fx: &Fixture, dir: &Path, layout: &str, rows: &mut Vec<CheckRow>) -> Result<()> {
    let lm = Emu3ForCausalLM::load(dir, Device::Cpu, Kind::Float)?;
    let ids = fx.tensor("input_ids")?;
    let want = fx.tensor("adamw_losses")?;
    let steps = want.size()[0];
    let cfg = AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut params: Vec<(String, Tensor)> = lm.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(params, |_| true, cfg.clone());
    let mut losses = Vec::with_capacity(steps as usize);
    for _ in 0..steps {
        opt.zero_grad();
        let out = lm.forward_train(&ids, &ids, None, None, false, false);
        losses.push(out.loss.double_value(&[]) as f32);
        out.loss.backward();
        opt.step(cfg.lr);
    }
    rows.push(compare(
        "optim",
        layout,
        "adamw_losses",
        &Tensor::from_slice(&losses),
        &want,
        fx.float_abs,
    ));
    let after = fx.dir.join("adamw_5_steps");
    if after.join("model.safetensors").exists() {
        let ckpt = Checkpoint::open(&after)?;
        let mut worst: Option<CheckRow> = None;
        for (name, p) in &opt.params {
            let expected = ckpt.tensor(name, Device::Cpu)?;
            let row = compare(
                "optim",
                layout,
                "params after 5 steps",
                &p.detach(),
                &expected,
                fx.float_abs,
            );
            if worst.as_ref().is_none_or(|w| row.max_abs_diff > w.max_abs_diff || !row.pass) {
                worst = Some(CheckRow { tensor: "params after 5 steps".into(), ..row });
            }
        }
        rows.extend(worst);
    }
    Ok(())
}
