//! Build script: the shared libtorch rpath wiring, plus the c10d shim (csrc/c10d_shim.cpp)
//! compiled against libtorch's own headers and Debian's gloo headers. With a CUDA libtorch the
//! shim also gets ProcessGroupNCCL, if the CUDA runtime and NCCL headers can be found.

#[path = "../build-support/rpath.rs"]
mod rpath;

use std::path::{Path, PathBuf};

fn python_nvidia_includes() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) if hasattr(nvidia,'__path__') else '')"])
        .output();
    let Ok(out) = out else { return vec![] };
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("nvidia");
    ["cu13/include", "nccl/include", "cuda_runtime/include"]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.exists())
        .collect()
}

fn has_header(dirs: &[PathBuf], name: &str) -> bool {
    dirs.iter().any(|d| d.join(name).exists())
}

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=EMU_NCCL_INCLUDE");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's folder; run `cargo xtask setup`");
    };
    let include = Path::new(&lib).join("../include");
    assert!(
        include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp").exists(),
        "libtorch at {lib} has no c10d headers (include/torch/csrc/distributed/c10d)"
    );
    assert!(
        Path::new("/usr/include/gloo/allreduce.h").exists(),
        "gloo's headers are missing: run `cargo xtask setup` (it installs Debian's libgloo-dev)"
    );
    let mut b = cc::Build::new();
    b.cpp(true)
        .file("csrc/c10d_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-w")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        let mut dirs = python_nvidia_includes();
        if let Ok(extra) = std::env::var("EMU_NCCL_INCLUDE") {
            dirs.extend(std::env::split_paths(&extra));
        }
        if has_header(&dirs, "nccl.h")
            && has_header(&dirs, "cuda_runtime_api.h")
            && has_header(&dirs, "crt/host_config.h")
            && has_header(&dirs, "nv/target")
        {
            for d in &dirs {
                b.include(d);
            }
            b.define("EMU_WITH_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        } else {
            println!(
                "cargo:warning=CUDA libtorch but no NCCL/CUDA headers (nccl.h, crt/host_config.h, nv/target): \
                 building Gloo only; pip install \"cuda-toolkit[cudart,crt,cccl]==13.0.2\" nvidia-nccl-cu13, \
                 or set EMU_NCCL_INCLUDE"
            );
        }
    }
    b.compile("emu_c10d");
}
