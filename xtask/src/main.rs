//! `cargo xtask`: the project's automation, one module per task.
//!
//! xtask depends on no emu-* crate and never links libtorch, because installing libtorch is one
//! of its jobs. It drives the other crates through `cargo` and the `emu` binary.

mod bench;
mod setup;
mod test;
#[cfg(test)]
mod tidy;
mod train;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "emu3-rs project automation", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install a CPU libtorch 2.11.0 from PyPI wheels into .cache/libtorch (idempotent).
    Setup(setup::Args),
    /// Everything CI checks: setup, fmt, clippy, the test suite, and the smoke runs.
    Test(test::Args),
    /// Same as `test`; the name CI scripts elsewhere expect.
    Ci(test::Args),
    /// The main job: world -> VQ -> tokenize -> BPE -> LM -> eval -> report, in runs/<name>/.
    Train(train::Args),
    /// Whole-program figures (throughput ratios measured side by side) and criterion benches.
    Bench(bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::run(&args),
        Task::Test(args) | Task::Ci(args) => test::run(&args),
        Task::Train(args) => train::run(&args),
        Task::Bench(args) => bench::run(&args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
