//! The `--features cuda` build, on a machine with no GPU: the pinned toolchain
//! (`tools/cuda-toolchain.sh`, NVIDIA's PyPI wheels) compiles and links it, and the binary it
//! makes, run against the link stub instead of a driver, serves the CPU exactly as the CPU build
//! does and, asked for a GPU, fails at once with one clear error: no panic, no hang. What the
//! device check ships besides (the golden test executables, the per-operation timer) compiles
//! too.
//!
//! The toolchain (~1.2 GB) and the build's target directory are kept under
//! `$XDG_CACHE_HOME/ofa-entail` (else `~/.cache/ofa-entail`; `CUDA_TOOLCHAIN_DIR`,
//! `CUDA_TARGET_DIR` override), so only the first run pays for the CUDA kernels (minutes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("ofa-entail")
}

fn dir_from(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join(default))
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `export K=V` lines the toolchain script prints, as environment pairs.
fn toolchain_env(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("bash")
        .arg(repo().join("tools/cuda-toolchain.sh"))
        .arg(dir)
        .output()
        .expect("bash runs tools/cuda-toolchain.sh");
    assert!(
        out.status.success(),
        "tools/cuda-toolchain.sh (needs pip and PyPI): {}",
        tail(&out.stderr, 30)
    );
    let path = std::env::var("PATH").unwrap_or_default();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("$PATH", &path)))
        .collect()
}

/// Runs the CUDA binary with the toolkit's libraries and the driver stub, bounded in time.
fn run(bin: &Path, libs: &str, args: &[&str], gpu: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("LD_LIBRARY_PATH", libs)
        .env_remove("GPU_DEVICE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(g) = gpu {
        cmd.env("GPU_DEVICE", g);
    }
    let mut child = cmd.spawn().expect("the CUDA binary starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{args:?} hung for a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cuda_build_compiles_here_and_fails_cleanly_without_a_driver() {
    let toolchain = dir_from("CUDA_TOOLCHAIN_DIR", "cuda-13.0");
    // A directory of its own under CUDA_TARGET_DIR: the kernels built here are unoptimised
    // (below), and a build script does not rebuild when only nvcc's flags change, so
    // `bench/gpu_pack.sh` must never share it.
    let target = dir_from("CUDA_TARGET_DIR", "cuda-target").join("compile-check");
    let env = toolchain_env(&toolchain);
    let cuda_home = env
        .iter()
        .find(|(k, _)| k == "CUDA_HOME")
        .map(|(_, v)| PathBuf::from(v))
        .expect("the script exports CUDA_HOME");

    // One cargo run for the binary and what bench/gpu_pack.sh ships to a GPU machine besides
    // (the golden test executables, the per-operation timer): run separately, the two
    // packages resolve their dependencies' features differently and candle's CUDA kernels
    // would be compiled twice (minutes each).
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The outer `cargo test` must not steer the inner build.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
            cargo.env_remove(k);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    cargo
        .current_dir(repo())
        .args(["build", "--release", "--locked"])
        .args(["--features", "ofa-entail/cuda,ofa-model/cuda"])
        .args(["-p", "ofa-entail", "--bin", "ofa-entail"])
        .args(["-p", "ofa-model", "--test", "golden", "--test", "generic"])
        .args(["--example", "gpu_ops"])
        .arg("--target-dir")
        .arg(&target)
        .env("CUDAFORGE_THREADS", cpus.to_string())
        // A proof that it compiles and links, not a build to time: unoptimised Rust
        // compiles in half the time (the CUDA kernels are built as always), keeping CI
        // under 30 min.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        // Likewise the device code: no optimisation in NVVM or ptxas (nvcc reads this
        // variable). candle's quantised kernels, unused here but always built, then compile
        // in 4 min instead of 6.
        .env("NVCC_APPEND_FLAGS", "-Xptxas -O0 -Xcicc -O0");
    cargo.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cargo.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --features cuda failed:\n{}",
        tail(&out.stderr, 60)
    );
    let bin = target.join("release/ofa-entail");

    // The toolkit's libraries, and the stub where the driver would be.
    let libs = format!(
        "{}:{}",
        cuda_home.join("lib").display(),
        toolchain.join("stub-runtime").display()
    );
    let tiny = repo().join("fixtures/tiny_ofa_ve");
    let image = repo().join("fixtures/golden/images/grace_hopper.jpg");
    let predict = [
        "predict",
        "--model-dir",
        tiny.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--text",
        "a woman in a military uniform.",
    ];
    let (code, stdout, stderr) = run(&bin, &libs, &predict, None);
    assert_eq!(code, Some(0), "CPU predict with the CUDA build: {stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The reference's probabilities for this pair (fixtures/golden, case grace_hopper_simple).
    let want = [0.6893255, 0.1570621, 0.1536124];
    for (k, w) in want.iter().enumerate() {
        let got = answer["details"][k].as_f64().unwrap();
        assert!((got - w).abs() < 1e-5, "details[{k}] = {got}, want {w}");
    }

    let (code, _, stderr) = run(&bin, &libs, &predict, Some("0"));
    assert_eq!(
        code,
        Some(1),
        "GPU_DEVICE=0 without a driver must exit 1: {stderr}"
    );
    assert!(
        stderr.contains("no usable CUDA driver") && stderr.contains("CUDA_ERROR_NO_DEVICE"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // The service logs why and exits: it never reports ready on a device it cannot use.
    let (code, stdout, stderr) = run(
        &bin,
        &libs,
        &[
            "serve",
            "--model-dir",
            tiny.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        Some("0"),
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("\"device_unavailable\"") && stdout.contains("no usable CUDA driver"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked") && !stdout.contains("\"ready\""));

    // bf16 is a GPU mode: on the CPU it is refused with what to use instead.
    let mut bf16 = predict.to_vec();
    bf16.extend(["--precision", "bf16"]);
    let (code, _, stderr) = run(&bin, &libs, &bf16, None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("on the CPU use f32"), "{stderr}");
}
