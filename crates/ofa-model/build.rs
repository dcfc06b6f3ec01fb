//! With the `cuda` feature, compiles `kernels/ofa.cu` to PTX with the toolchain's nvcc (`NVCC`,
//! else `nvcc` on the PATH), for the virtual architecture `compute_$CUDA_COMPUTE_CAP` (80 when
//! unset): the driver compiles it for the GPU it runs on.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/ofa.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ofa.ptx");
    let status = Command::new(&nvcc)
        .args(["-ptx", "-O3"])
        .arg(format!("-arch=compute_{}", cap.trim()))
        .arg("-o")
        .arg(&out)
        .arg("kernels/ofa.cu")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {nvcc} (tools/cuda-toolchain.sh installs it): {e}"));
    assert!(status.success(), "{nvcc} failed on kernels/ofa.cu");
}
