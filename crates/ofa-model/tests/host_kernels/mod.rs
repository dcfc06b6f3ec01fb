//! The host build of `kernels/ofa.cu` (`kernels/host/run.cpp` with `kernels/host/emulation.h`:
//! each CUDA thread an OS thread, barriers and warp shuffles real), run kernel by kernel from
//! the tests, with inputs and tolerances for comparing it with candle's CPU operations.
//! Needs a C++17 compiler (`c++`, or `CXX`).
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, D};

pub const DTYPES: [(DType, &str); 3] = [
    (DType::F32, "f32"),
    (DType::BF16, "bf16"),
    (DType::F16, "f16"),
];

/// The host build of the kernels, compiled once per test run.
pub fn runner() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(concat!("ofa_kernels_on_host_", env!("CARGO_CRATE_NAME")));
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let status = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O2",
                "-pthread",
                "-Wall",
                "-Wno-unknown-pragmas",
            ])
            .arg("-o")
            .arg(&out)
            .arg(dir.join("host/run.cpp"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx}: {e}"));
        assert!(status.success(), "{cxx} failed on kernels/host/run.cpp");
        out
    })
}

/// Runs `kernel` in `dtype` on a grid of `blocks`×`threads`; `inputs` in the order `run.cpp`
/// reads them.
pub fn run(
    kernel: &str,
    dtype: &str,
    shift: bool,
    grid: (u32, u32),
    params: &[String],
    inputs: &[&Tensor],
) -> Vec<f32> {
    let mut child = Command::new(runner())
        .arg(kernel)
        .arg(dtype)
        .arg(if shift { "1" } else { "0" })
        .arg(grid.0.to_string())
        .arg(grid.1.to_string())
        .args(params)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kernel runner starts");
    let mut bytes = Vec::new();
    for t in inputs {
        for v in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    // Written from a thread: the runner may fill its output pipe before reading everything.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().expect("kernel runner finishes");
    writer.join().unwrap().expect("inputs written");
    assert!(
        out.status.success(),
        "{kernel} {dtype}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Deterministic values in `[-scale, scale)`, as f32 already rounded to `dtype` (what the
/// kernel will hold).
pub fn values(shape: &[usize], scale: f32, seed: u64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    rounded(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap(), dtype)
}

pub fn rounded(t: &Tensor, dtype: DType) -> Tensor {
    t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap()
}

/// Largest `|got − want| / (|want| + floor)` (relative, with an absolute floor near zero).
pub fn worst(got: &[f32], want: &Tensor, floor: f32) -> f32 {
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.len(), "output length");
    got.iter()
        .zip(&want)
        .map(|(g, w)| {
            assert!(
                g.is_finite(),
                "non-finite output {g} where {w} was expected"
            );
            (g - w).abs() / (w.abs() + floor)
        })
        .fold(0.0, f32::max)
}

/// What rounding the output to `dtype` may cost, relative (a little over half an ulp), where
/// the f32 arithmetic before it may differ from candle's by `f32_error`.
pub fn tolerance_with(dtype: DType, f32_error: f32) -> f32 {
    match dtype {
        DType::BF16 => 8e-3,
        DType::F16 => 1e-3,
        _ => f32_error,
    }
}

/// The same for arithmetic that rounds like candle's within a few f32 ulps.
pub fn tolerance(dtype: DType) -> f32 {
    tolerance_with(dtype, 2e-5)
}

/// Largest `|got − want|`.
pub fn max_abs_diff(got: &Tensor, want: &Tensor) -> f32 {
    (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
