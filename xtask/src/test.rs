//! `cargo xtask test`: everything CI checks, in the order that fails fastest.
//!
//! setup (if needed) -> rustfmt -> clippy -D warnings -> the workspace tests -> the smoke runs
//! (training preset `smoke`, then the `quick` eval suite on its model, whose report schema is
//! checked). Ends with one summary line over every test binary.

use crate::util::{self, cargo, fmt_secs};
use crate::{setup, train};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Skip the smoke training and eval runs (the unit and integration tests still run).
    #[arg(long)]
    no_smoke: bool,
    /// Only run tests whose name contains this (passed to the test binaries).
    filter: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    setup::ensure()?;
    util::run(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;
    util::run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let summary = workspace_tests(args.filter.as_deref())?;
    if !args.no_smoke && args.filter.is_none() {
        train::smoke()?;
    }
    eprintln!("xtask test: all checks passed in {}", fmt_secs(start.elapsed().as_secs_f64()));
    println!(
        "test: {} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.ignored
    );
    Ok(())
}

#[derive(Default)]
struct Summary {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test --workspace`, echoing its output and adding up libtest's result lines.
fn workspace_tests(filter: Option<&str>) -> Result<Summary> {
    let mut c = cargo();
    c.args(["test", "--workspace"]);
    if let Some(f) = filter {
        c.args(["--", f]);
    }
    eprintln!("$ {}", crate::util::show(&c));
    let mut child = c.stdout(Stdio::piped()).spawn().context("could not start cargo test")?;
    let out = child.stdout.take().expect("stdout is piped");
    let mut sum = Summary::default();
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            sum.passed += count(rest, " passed");
            sum.failed += count(rest, " failed");
            sum.ignored += count(rest, " ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!(
            "test: {} passed, {} failed, {} skipped",
            sum.passed,
            sum.failed.max(1),
            sum.ignored
        );
        bail!("cargo test failed ({status})");
    }
    Ok(sum)
}

/// The number before `what` in a libtest line such as `ok. 3 passed; 0 failed; 1 ignored; ...`.
fn count(line: &str, what: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim_end().strip_suffix(what).map(|n| n.trim().trim_start_matches("ok. "))
        })
        .and_then(|n| n.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_libtest_lines() {
        let l = "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.21s";
        assert_eq!(count(l, " passed"), 12);
        assert_eq!(count(l, " failed"), 1);
        assert_eq!(count(l, " ignored"), 3);
        assert_eq!(count("FAILED. 0 passed; 2 failed; 0 ignored", " failed"), 2);
    }
}
