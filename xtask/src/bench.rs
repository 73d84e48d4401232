//! `cargo xtask bench`: criterion benches of every crate, run side by side in one go.

use crate::setup;
use crate::util::{self, cargo};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Only benches whose name contains this.
    filter: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    setup::ensure()?;
    let mut c = cargo();
    c.args(["bench", "--workspace"]);
    if let Some(f) = &args.filter {
        c.args(["--", f]);
    }
    util::run(&mut c)
}
