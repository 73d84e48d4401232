//! `cargo xtask train`: the main job. Builds the `emu` binary (same profile as the tests, so a
//! fresh clone compiles libtorch's bindings once) and runs `emu train`, or N local ranks of it
//! with torchrun's environment and their logs prefixed by rank.

use crate::setup;
use crate::util::{self, cargo, fmt_secs, repo_root};
use anyhow::{Context, Result, bail, ensure};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the run: `smoke` (CI, about a minute), `default` (the main job) or `large`.
    #[arg(long, default_value = "default")]
    pub preset: String,
    /// Run name (folder under runs/); defaults to the preset's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Local ranks to start (data-parallel over torch's c10d, Gloo backend).
    #[arg(long, default_value_t = 1)]
    pub nproc: usize,
    /// Arguments passed through to `emu train` (after `--`).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

/// Builds `emu` and returns its path.
pub fn build_emu() -> Result<std::path::PathBuf> {
    util::run(cargo().args(["build", "--package", "emu-cli", "--bin", "emu"]))?;
    let exe = repo_root().join("target/debug/emu");
    ensure!(exe.exists(), "cargo built no {}", exe.display());
    Ok(exe)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    setup::ensure()?;
    let emu = build_emu()?;
    let name = args.name.clone().unwrap_or_else(|| args.preset.clone());
    let mut base = vec![
        "train".to_string(),
        "--preset".into(),
        args.preset.clone(),
        "--name".into(),
        name.clone(),
    ];
    base.extend(args.rest.iter().cloned());
    if args.nproc <= 1 {
        util::run(Command::new(&emu).args(&base).current_dir(repo_root()))?;
    } else {
        let port = free_port()?.to_string();
        let mut children = Vec::new();
        for rank in 0..args.nproc {
            let mut c = Command::new(&emu);
            c.args(&base)
                .current_dir(repo_root())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", args.nproc.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().with_context(|| format!("starting rank {rank}"))?;
            let prefix = |r: usize| move |line: String| eprintln!("[rank {r}] {line}");
            let out = child.stdout.take().expect("piped");
            let err = child.stderr.take().expect("piped");
            let (p1, p2) = (prefix(rank), prefix(rank));
            std::thread::spawn(move || {
                BufReader::new(out).lines().map_while(Result::ok).for_each(p1)
            });
            std::thread::spawn(move || {
                BufReader::new(err).lines().map_while(Result::ok).for_each(p2)
            });
            children.push(child);
        }
        let mut failed = Vec::new();
        for (rank, mut c) in children.into_iter().enumerate() {
            if !c.wait()?.success() {
                failed.push(rank);
            }
        }
        if !failed.is_empty() {
            bail!("rank(s) {failed:?} failed");
        }
    }
    let report = repo_root().join("runs").join(&name).join("report.md");
    eprintln!(
        "train: done in {}; report: {}",
        fmt_secs(start.elapsed().as_secs_f64()),
        report.display()
    );
    Ok(())
}

/// The `smoke` preset, as `cargo xtask test` runs it, then a check of its report's schema.
pub fn smoke() -> Result<()> {
    // A fresh run each time: a leftover run folder would be resumed, testing nothing.
    let dir = repo_root().join("runs/smoke");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the previous {}", dir.display()))?;
    }
    run(&Args { preset: "smoke".into(), name: Some("smoke".into()), nproc: 1, rest: vec![] })?;
    let path = repo_root().join("runs/smoke/eval/report.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("the smoke run wrote no {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    check_report_schema(&v)
        .with_context(|| format!("{} does not follow the report schema", path.display()))?;
    // The smoke preset trains Emu3's two models; understanding is judged on the chat one.
    let chat = repo_root().join("runs/smoke/chat/model/model.safetensors");
    ensure!(chat.exists(), "the smoke run wrote no chat model at {}", chat.display());
    ensure!(
        v["model"].as_str().is_some_and(|m| m.contains("chat")),
        "the smoke report judged {} rather than the chat model",
        v["model"]
    );
    eprintln!(
        "train: smoke report follows the schema ({} benchmarks)",
        v["benchmarks"].as_array().map_or(0, |b| b.len())
    );
    Ok(())
}

/// The report schema (emu-eval's `bench::report`), checked here without linking it.
pub fn check_report_schema(v: &serde_json::Value) -> Result<()> {
    ensure!(v["schema"] == 1, "schema must be 1, got {}", v["schema"]);
    for key in ["model", "suite"] {
        ensure!(v[key].is_string(), "`{key}` must be a string");
    }
    ensure!(v["seconds"].is_number(), "`seconds` must be a number");
    let benches = v["benchmarks"].as_array().context("`benchmarks` must be an array")?;
    let names: Vec<&str> = benches.iter().filter_map(|b| b["name"].as_str()).collect();
    for want in ["geneval", "vqa", "video", "recon", "ppl"] {
        ensure!(names.contains(&want), "benchmark `{want}` is missing (have {names:?})");
    }
    for b in benches {
        let name = b["name"].as_str().unwrap_or("?");
        ensure!(b["protocol"].as_str().is_some_and(|p| !p.is_empty()), "{name}: no protocol");
        let metrics = b["metrics"]
            .as_object()
            .with_context(|| format!("{name}: `metrics` must be an object"))?;
        ensure!(!metrics.is_empty(), "{name}: no metrics");
        for (k, m) in metrics {
            ensure!(m.as_f64().is_some_and(f64::is_finite), "{name}.{k} must be a finite number");
        }
        ensure!(b["samples"].is_array(), "{name}: `samples` must be an array");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_report_schema;

    #[test]
    fn the_schema_check_accepts_reports_and_names_what_is_wrong() {
        let bench = |n: &str| serde_json::json!({"name": n, "protocol": "p", "metrics": {"x": 0.5}, "samples": [], "details": null, "seconds": 1.0});
        let benches: Vec<serde_json::Value> =
            ["geneval", "vqa", "video", "recon", "ppl"].iter().map(|n| bench(n)).collect();
        let mut v = serde_json::json!({"schema": 1, "model": "m", "suite": "quick", "seconds": 2.0, "benchmarks": benches});
        check_report_schema(&v).unwrap();
        v["benchmarks"][1]["metrics"]["x"] = serde_json::Value::Null;
        assert!(format!("{:#}", check_report_schema(&v).unwrap_err()).contains("vqa.x"));
        v["benchmarks"].as_array_mut().unwrap().pop();
        assert!(format!("{:#}", check_report_schema(&v).unwrap_err()).contains("ppl"));
    }
}
