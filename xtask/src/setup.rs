//! `cargo xtask setup`: a CPU libtorch 2.11.0 built from PyPI wheels, plus gloo's headers.
//!
//! libtorch's own download site is unreachable here, but PyPI is not: the `torch==2.11.0`
//! manylinux wheel carries `torch/lib` and `torch/include`, which is all libtorch is. Its
//! libtorch_cpu.so also needs libcudart.so.13 and libcupti.so.13 (even on CPU), which the
//! `cuda-toolkit[cudart,cupti]` wheels carry. The CUDA-only libraries are left out.
//!
//! A user's own libtorch wins: `LIBTORCH` pointing elsewhere, or `LIBTORCH_USE_PYTORCH=1` with a
//! PyTorch 2.11 in python3 (the way to build for CUDA).

use crate::util::{self, cmd, repo_root, show};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const TORCH_VERSION: &str = "2.11.0";
const CUDA_TOOLKIT: &str = "cuda-toolkit[cudart,cupti]==13.0.2";
/// CUDA-only libraries of the wheel: large, and useless without a GPU build.
const DROPPED: &[&str] = &[
    "libtorch_cuda",
    "libc10_cuda.so",
    "libtorch_nvshmem.so",
    "libcaffe2_nvrtc.so",
    "libtorch_python.so",
];
/// What a usable CPU libtorch folder must hold.
const REQUIRED: &[&str] = &[
    "lib/libtorch_cpu.so",
    "lib/libtorch.so",
    "lib/libc10.so",
    "lib/libgomp.so.1",
    "lib/libcudart.so.13",
    "lib/libcupti.so.13",
    "include/torch/csrc/api/include/torch/torch.h",
    "include/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp",
    "build-version",
];
const MARKER: &str = "emu3-setup.json";
const GLOO_HEADER: &str = "/usr/include/gloo/allreduce.h";

#[derive(clap::Args)]
pub struct Args {
    /// Unpack again even if a verified libtorch is already there.
    #[arg(long)]
    force: bool,
}

/// Where the libtorch that cargo will build against comes from.
#[derive(Debug)]
pub enum Libtorch {
    /// `LIBTORCH_USE_PYTORCH=1`: torch-sys asks python3's torch.
    Pytorch { version: String, cuda: Option<String> },
    /// `LIBTORCH` set by the user to their own folder.
    User(PathBuf),
    /// Ours, in `.cache/libtorch`.
    Bundled(PathBuf),
}

/// One unpacked file, recorded so a later run can verify the folder without the wheels.
#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    torch: String,
    files: Vec<Entry>,
}

pub fn default_dir() -> PathBuf {
    repo_root().join(".cache/libtorch")
}

pub fn run(args: &Args) -> Result<()> {
    let lt = ensure_libtorch(args.force)?;
    match &lt {
        Libtorch::Pytorch { version, cuda } => eprintln!(
            "setup: using python3's PyTorch {version} (CUDA {}) via LIBTORCH_USE_PYTORCH",
            cuda.as_deref().unwrap_or("none")
        ),
        Libtorch::User(p) => eprintln!("setup: using your libtorch at {}", p.display()),
        Libtorch::Bundled(p) => eprintln!("setup: cargo builds against {}", p.display()),
    }
    ensure_gloo()?;
    Ok(())
}

/// Makes sure a libtorch is available, installing ours when the user has none. Quiet when
/// nothing needs doing, so `test` and `train` can call it every time.
pub fn ensure() -> Result<Libtorch> {
    let lt = ensure_libtorch(false)?;
    ensure_gloo()?;
    Ok(lt)
}

fn ensure_libtorch(force: bool) -> Result<Libtorch> {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return python_torch();
    }
    let default = default_dir();
    if let Some(dir) = std::env::var_os("LIBTORCH").map(PathBuf::from) {
        // cargo's [env] sets LIBTORCH to our own folder; anything else is the user's.
        if !same_path(&dir, &default) {
            for req in ["lib/libtorch_cpu.so", "include/torch/csrc/api/include/torch/torch.h"] {
                ensure!(
                    dir.join(req).exists(),
                    "LIBTORCH={} has no {req}; point LIBTORCH at an unpacked libtorch {TORCH_VERSION} \
                     (the folder holding lib/ and include/), or unset it to use ours",
                    dir.display()
                );
            }
            return Ok(Libtorch::User(dir));
        }
    }
    if !force {
        match verify(&default) {
            Ok(n) => {
                eprintln!(
                    "setup: libtorch {TORCH_VERSION} (CPU) already in {} ({n} files verified); nothing to do",
                    default.display()
                );
                return Ok(Libtorch::Bundled(default));
            }
            Err(why) if default.exists() => eprintln!("setup: reinstalling libtorch: {why:#}"),
            Err(_) => {}
        }
    }
    install(&default)?;
    Ok(Libtorch::Bundled(default))
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn python_torch() -> Result<Libtorch> {
    let out = cmd("python3")
        .args(["-c", "import torch; print(torch.__version__); print(torch.version.cuda)"])
        .output()
        .context("LIBTORCH_USE_PYTORCH is set but python3 could not be run")?;
    ensure!(
        out.status.success(),
        "LIBTORCH_USE_PYTORCH is set but `python3 -c 'import torch'` failed:\n{}\nhint: install \
         PyTorch {TORCH_VERSION} in that python3, or unset LIBTORCH_USE_PYTORCH to use the CPU libtorch",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().to_string();
    let cuda = lines.next().filter(|c| *c != "None").map(str::to_string);
    ensure!(
        version.split('+').next() == Some(TORCH_VERSION),
        "python3 has PyTorch {version}, but tch 0.24 needs exactly {TORCH_VERSION}"
    );
    Ok(Libtorch::Pytorch { version, cuda })
}

/// Checks the marker's list against the folder; returns the number of files checked.
fn verify(dir: &Path) -> Result<usize> {
    let marker_path = dir.join(MARKER);
    let text = fs::read_to_string(&marker_path)
        .with_context(|| format!("{} is missing (setup never finished)", marker_path.display()))?;
    let marker: Marker = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a setup marker", marker_path.display()))?;
    ensure!(marker.torch == TORCH_VERSION, "it holds torch {}, not {TORCH_VERSION}", marker.torch);
    for e in &marker.files {
        let p = dir.join(&e.path);
        let size = fs::metadata(&p).with_context(|| format!("{} is missing", p.display()))?.len();
        ensure!(size == e.size, "{} has {size} bytes, expected {}", p.display(), e.size);
    }
    for req in REQUIRED {
        ensure!(dir.join(req).exists(), "{} is missing", dir.join(req).display());
    }
    Ok(marker.files.len())
}

fn install(dest: &Path) -> Result<()> {
    let wheels = repo_root().join(".cache/wheels");
    fs::create_dir_all(&wheels)?;
    eprintln!(
        "setup: [1/4] downloading torch=={TORCH_VERSION} (manylinux x86_64, ~530 MB) from PyPI"
    );
    let mut c = cmd("python3");
    c.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
    ])
    .args(["--platform", "manylinux_2_28_x86_64", "--disable-pip-version-check"])
    .arg(format!("torch=={TORCH_VERSION}"))
    .arg("-d")
    .arg(&wheels);
    util::run(&mut c).map_err(|e| registry_error(e, &c))?;
    eprintln!("setup: [2/4] downloading {CUDA_TOOLKIT} (libcudart, libcupti)");
    let mut c = cmd("python3");
    c.args([
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        CUDA_TOOLKIT,
    ])
    .arg("-d")
    .arg(&wheels);
    util::run(&mut c).map_err(|e| registry_error(e, &c))?;

    let torch_whl = find_wheel(&wheels, &format!("torch-{TORCH_VERSION}-"))?;
    let tmp = dest.with_extension("partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    eprintln!("setup: [3/4] unpacking {} into {}", torch_whl.display(), dest.display());
    let mut files = unpack(&torch_whl, &tmp, |name| {
        let rel = name.strip_prefix("torch/")?;
        let keep = if let Some(lib) = rel.strip_prefix("lib/") {
            !lib.contains('/') && !DROPPED.iter().any(|d| lib.starts_with(d))
        } else {
            rel.starts_with("include/")
        };
        keep.then(|| rel.to_string())
    })?;
    for (prefix, lib) in
        [("nvidia_cuda_runtime-", "libcudart.so.13"), ("nvidia_cuda_cupti-", "libcupti.so.13")]
    {
        let whl = find_wheel(&wheels, prefix)?;
        let want = format!("nvidia/cu13/lib/{lib}");
        files.extend(unpack(&whl, &tmp, |name| (name == want).then(|| format!("lib/{lib}")))?);
    }
    fs::write(tmp.join("build-version"), format!("{TORCH_VERSION}\n"))?;
    files.push(Entry { path: "build-version".into(), size: TORCH_VERSION.len() as u64 + 1 });
    let marker = Marker { torch: TORCH_VERSION.into(), files };
    fs::write(tmp.join(MARKER), serde_json::to_string_pretty(&marker)?)?;

    eprintln!("setup: [4/4] verifying");
    let n = verify(&tmp)?;
    if dest.exists() {
        fs::remove_dir_all(dest).with_context(|| format!("removing the old {}", dest.display()))?;
    }
    fs::rename(&tmp, dest)?;
    eprintln!("setup: libtorch {TORCH_VERSION} (CPU) ready in {} ({n} files)", dest.display());
    Ok(())
}

fn find_wheel(dir: &Path, prefix: &str) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".whl"))
        })
        .with_context(|| format!("no {prefix}*.whl in {} after pip download", dir.display()))
}

/// Extracts the entries that `keep` maps to a relative destination; every size is checked.
fn unpack(whl: &Path, dest: &Path, keep: impl Fn(&str) -> Option<String>) -> Result<Vec<Entry>> {
    let file = fs::File::open(whl).with_context(|| format!("opening {}", whl.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel (zip)", whl.display()))?;
    let mut out = Vec::new();
    let total = zip.len();
    for i in 0..total {
        let mut entry = zip.by_index(i)?;
        if entry.is_dir() {
            continue;
        }
        let Some(rel) = keep(entry.name()) else { continue };
        ensure!(!rel.split('/').any(|s| s == ".."), "{}: unsafe path {rel}", whl.display());
        let path = dest.join(&rel);
        fs::create_dir_all(path.parent().expect("a file has a parent"))?;
        let mut f =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // ZipFile checks the CRC when read to its end, so a corrupt wheel fails here.
        let n = io::copy(&mut entry, &mut f)
            .with_context(|| format!("unpacking {rel} from {}", whl.display()))?;
        ensure!(n == entry.size(), "{rel}: wrote {n} bytes of {}", entry.size());
        out.push(Entry { path: rel, size: n });
        if out.len() % 2000 == 0 {
            eprintln!("setup:   {} files ({}/{total} entries read)", out.len(), i + 1);
        }
    }
    ensure!(!out.is_empty(), "{} held none of the expected files", whl.display());
    Ok(out)
}

fn registry_error(e: anyhow::Error, c: &std::process::Command) -> anyhow::Error {
    e.context(format!(
        "could not download from PyPI. Manual steps, from the repository root:\n  \
         {}\n  then run `cargo xtask setup` again (it unpacks what is in .cache/wheels).\n\
         Or use a libtorch {TORCH_VERSION} you already have: export LIBTORCH=/path/to/libtorch, or \
         LIBTORCH_USE_PYTORCH=1 with PyTorch {TORCH_VERSION} installed in python3.",
        show(c)
    ))
}

/// gloo's own headers, which the c10d shim in emu-train compiles against.
fn ensure_gloo() -> Result<()> {
    if Path::new(GLOO_HEADER).exists() {
        return Ok(());
    }
    eprintln!("setup: installing Debian's libgloo-dev (gloo headers for the c10d shim)");
    let root = cmd("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut c = if root { cmd("apt-get") } else { cmd("sudo") };
        if !root {
            c.args(["-n", "apt-get"]);
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        util::run(&mut c)
    };
    if apt(&["install", "-y", "-q", "libgloo-dev"]).is_err() {
        apt(&["update", "-q"]).ok();
        if let Err(e) = apt(&["install", "-y", "-q", "libgloo-dev"]) {
            bail!(
                "{e:#}\nhint: install gloo's headers by hand: `sudo apt-get install libgloo-dev` \
                 (they must end up in /usr/include/gloo)"
            );
        }
    }
    ensure!(
        Path::new(GLOO_HEADER).exists(),
        "libgloo-dev is installed but {GLOO_HEADER} is missing"
    );
    Ok(())
}
