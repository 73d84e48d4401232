//! `emu doctor`: libtorch, threads, devices, distributed backends and folders found, each
//! problem with its fix.

use crate::common::{Global, emit};
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Folders to look for models and tokenizers in (default: runs/ and the current folder).
    pub dirs: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    libtorch_lib: String,
    libtorch_version: Option<String>,
    threads: i32,
    mkldnn: bool,
    cuda_available: bool,
    cuda_devices: i64,
    distributed: Vec<String>,
    models_found: Vec<String>,
    problems: Vec<String>,
}

pub fn run(g: &Global, a: &DoctorArgs) -> Result<()> {
    let lib = env!("EMU_LIBTORCH_LIB").to_string();
    // Our libtorch records its version in build-version; a Python torch in version.py.
    let version = std::fs::read_to_string(PathBuf::from(&lib).join("../build-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| {
            let py = std::fs::read_to_string(PathBuf::from(&lib).join("../version.py")).ok()?;
            py.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        });
    let mut problems = Vec::new();
    if !PathBuf::from(&lib).join("libtorch_cpu.so").exists() {
        problems.push(format!("libtorch was linked from {lib}, which no longer holds libtorch_cpu.so; fix: run `cargo xtask setup` and rebuild"));
    }
    let cuda = tch::Cuda::is_available();
    if g.device != "cpu" && !cuda {
        problems.push("--device asks for CUDA but none is available; fix: build with LIBTORCH_USE_PYTORCH=1 against a CUDA PyTorch 2.11".into());
    }
    let distributed = emu_train::dist::backends();
    let roots = if a.dirs.is_empty() {
        vec![PathBuf::from("runs"), PathBuf::from(".")]
    } else {
        a.dirs.clone()
    };
    let mut models = Vec::new();
    for root in roots {
        find_models(&root, 3, &mut models);
    }
    let r = Report {
        libtorch_lib: lib,
        libtorch_version: version,
        threads: tch::get_num_threads(),
        mkldnn: tch::utils::has_mkldnn(),
        cuda_available: cuda,
        cuda_devices: tch::Cuda::device_count(),
        distributed,
        models_found: models.iter().map(|p| p.display().to_string()).collect(),
        problems,
    };
    emit(g, &r, || {
        let mut s = format!(
            "libtorch {} at {}\nthreads {} (mkldnn {})\nCUDA: {} ({} devices)\ndistributed backends: {}\n",
            r.libtorch_version.as_deref().unwrap_or("(unknown version)"),
            r.libtorch_lib,
            r.threads,
            r.mkldnn,
            if r.cuda_available { "available" } else { "not available" },
            r.cuda_devices,
            if r.distributed.is_empty() { "none".into() } else { r.distributed.join(", ") }
        );
        s.push_str(&format!(
            "model folders found: {}\n",
            if r.models_found.is_empty() { "none".into() } else { r.models_found.join(", ") }
        ));
        if r.problems.is_empty() {
            s.push_str("no problems found\n");
        }
        for p in &r.problems {
            s.push_str(&format!("problem: {p}\n"));
        }
        s
    })
}

fn find_models(dir: &std::path::Path, depth: usize, out: &mut Vec<PathBuf>) {
    if dir.join("config.json").exists()
        && (dir.join("model.safetensors").exists()
            || dir.join("model.safetensors.index.json").exists())
    {
        out.push(dir.to_path_buf());
    }
    if depth == 0 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        subs.sort();
        for s in subs {
            let name = s.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with('.') && name != "target" {
                find_models(&s, depth - 1, out);
            }
        }
    }
}
