//! `emu parity DIR`: every check a reference fixture folder supports, as a table or JSON.

use crate::common::{Global, emit};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// A fixture folder: config.json, model.safetensors, expected.safetensors, fixture.json, and
    /// optionally original/vision_tokenizer, original/llm and adamw_5_steps.
    pub dir: PathBuf,
}

pub fn run(g: &Global, a: &ParityArgs) -> Result<()> {
    let report = emu_train::parity::run(&a.dir)?;
    let failed = report.rows.iter().filter(|r| !r.pass).count();
    emit(g, &report, || {
        format!(
            "{}\n{} checks, {} passed, {failed} failed\n",
            emu_tokenizer::parity::table(&report.rows),
            report.rows.len(),
            report.rows.len() - failed
        )
    })?;
    if !report.passed {
        bail!("{failed} parity check(s) failed for {}", a.dir.display());
    }
    Ok(())
}
