//! Build script shared by every crate that links libtorch (`build = "../build-support/rpath.rs"`).
//!
//! torch-sys tells its direct dependents where libtorch's shared libraries are
//! (`DEP_TCH_LIBTORCH_LIB`). We bake that folder into every binary, test and bench of the crate
//! as an rpath, so nothing needs `LD_LIBRARY_PATH`. With a CUDA libtorch we also keep
//! libtorch_cuda.so linked even though no symbol of it is referenced: without it, libtorch
//! registers no CUDA backend and every device reports as CPU-only.

use std::path::Path;

pub fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-changed=../build-support/rpath.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch folder; no rpath is set");
        println!("cargo:rustc-env=EMU_LIBTORCH_LIB=");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-env=EMU_LIBTORCH_LIB={lib}");
    let lib = Path::new(&lib);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-cfg=libtorch_cuda");
    }
    println!("cargo:rustc-check-cfg=cfg(libtorch_cuda)");
}
