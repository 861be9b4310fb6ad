//! With the `cuda` feature, compiles the CUDA kernels in `kernels/` to PTX (into OUT_DIR, where
//! `include_str!` finds them). nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on the
//! PATH (`benches/build-cuda.sh` installs one from pinned wheels). The PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 75, the oldest CUDA 13 supports); the driver compiles
//! it for the GPU it finds. Without the feature nothing is compiled and nvcc is not needed.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var("NVCC").unwrap_or_else(|_| match env::var("CUDA_HOME") {
        Ok(home) => format!("{home}/bin/nvcc"),
        Err(_) => "nvcc".into(),
    });
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ is part of the source tree")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    kernels.sort();
    for cu in kernels {
        let ptx = out.join(cu.with_extension("ptx").file_name().expect("a file name"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("--gpu-architecture=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&cu)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("nvcc failed on {} ({s})", cu.display()),
            Err(e) => panic!(
                "the cuda feature needs nvcc to compile {} ({nvcc}: {e}); set NVCC or CUDA_HOME, \
                 or build with benches/build-cuda.sh",
                cu.display()
            ),
        }
    }
}
