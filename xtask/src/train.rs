//! `cargo xtask train`: the main job, orchestrated through the `emu` binary.
//!
//! Until the training crate lands this runs what exists and says what is missing.

use crate::setup;
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the run: `smoke` (CI, about a minute), `default`, or `large`.
    #[arg(long, default_value = "default")]
    preset: String,
}

pub fn run(args: &Args) -> Result<()> {
    setup::ensure()?;
    eprintln!(
        "train: preset `{}`: the pipeline (world -> VQ -> tokenize -> BPE -> LM -> eval) is not built yet; \
         only setup ran",
        args.preset
    );
    Ok(())
}

/// The `smoke` preset, as `cargo xtask test` runs it.
pub fn smoke() -> Result<()> {
    run(&Args { preset: "smoke".into() })
}
