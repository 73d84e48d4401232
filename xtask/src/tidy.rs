//! Repository rules, checked as tests (`cargo test -p xtask`), in rust-analyzer's manner.

use crate::util::{cargo, cmd, repo_root};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || ["target", "runs", "testdata"].contains(&name) {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The workspace members, in the order the root Cargo.toml lists them.
fn members() -> Vec<String> {
    let text = fs::read_to_string(repo_root().join("Cargo.toml")).expect("root Cargo.toml");
    let line = text.lines().find(|l| l.starts_with("members")).expect("a members line");
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn manifest(krate: &str) -> String {
    fs::read_to_string(repo_root().join(krate).join("Cargo.toml")).expect("crate manifest")
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&repo_root(), &mut files);
    assert!(files.len() > 10, "found only {} .rs files; is the walk right?", files.len());
    let bad: Vec<_> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).unwrap_or_default().starts_with("//!"))
        .map(|f| f.strip_prefix(repo_root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "these files must open with a `//!` doc (purpose, shape letters): {bad:?}"
    );
}

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&repo_root(), &mut files);
    let long: Vec<_> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).unwrap_or_default().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by component (limit {MAX_LINES} lines): {long:?}");
}

#[test]
fn architecture_names_every_crate() {
    let arch = fs::read_to_string(repo_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for m in members() {
        assert!(arch.contains(&format!("`{m}`")), "ARCHITECTURE.md has no codemap entry for `{m}`");
    }
}

#[test]
fn xtask_never_links_libtorch() {
    let m = manifest("xtask");
    for dep in ["tch", "torch-sys", "emu-"] {
        assert!(
            !m.lines().any(|l| l.trim_start().starts_with(dep)),
            "xtask must not depend on {dep}: it installs libtorch, so it cannot need it"
        );
    }
}

#[test]
fn crates_depend_only_on_earlier_crates() {
    let members = members();
    for (i, krate) in members.iter().enumerate() {
        let m = manifest(krate);
        for later in &members[i..] {
            let dep = format!("{later}.workspace");
            let dep2 = format!("{later} =");
            assert!(
                !m.lines()
                    .any(|l| l.trim_start().starts_with(&dep) || l.trim_start().starts_with(&dep2)),
                "{krate} depends on {later}, which comes after it in the layering"
            );
        }
        assert!(m.contains("[lints]\nworkspace = true"), "{krate} must use the workspace lints");
    }
}

#[test]
fn ci_and_readme_use_the_two_commands() {
    let ci = fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains("cargo xtask test"), ".ci/run must call `cargo xtask test`");
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    for c in ["cargo xtask train", "cargo xtask test"] {
        assert!(readme.contains(c), "README.md's quickstart must show `{c}`");
    }
}

/// Proc macros run only inside the compiler, yet `[profile.dev.package."*"]`'s -O3 outranks
/// `build-override`, so each must be named at -O0 in the root Cargo.toml or a clean build spends
/// minutes optimising them (213 CPU seconds against 23).
#[test]
fn proc_macros_build_unoptimised() {
    let rustc = cmd("rustc").arg("-vV").output().expect("running rustc -vV");
    let version = String::from_utf8_lossy(&rustc.stdout).into_owned();
    let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc's host line");
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--filter-platform", host])
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let in_graph: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let root = fs::read_to_string(repo_root().join("Cargo.toml")).expect("root Cargo.toml");
    let unoptimised =
        |name: &str| root.contains(&format!("[profile.dev.package.{name}]\nopt-level = 0"));
    let mut missing: Vec<&str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| in_graph.contains(id)))
        .filter(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["kind"].as_array().into_iter().flatten().any(|k| k == "proc-macro"))
        })
        .filter_map(|p| p["name"].as_str())
        .filter(|name| !unoptimised(name))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "add `[profile.dev.package.NAME]\\nopt-level = 0` to the root Cargo.toml for: {missing:?}"
    );
}
