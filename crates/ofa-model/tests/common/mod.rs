//! Shared helpers: the repo's fixtures (the tiny OFA model and the reference goldens).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use ofa_model::Entailment;
use serde_json::Value;

/// The repo's `fixtures/`; `OFA_FIXTURES` points elsewhere when a built test runs away from
/// its checkout (the GPU check ships test executables to a machine without Rust).
pub fn fixtures() -> PathBuf {
    match std::env::var_os("OFA_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

/// Where the model runs: the CPU, or the CUDA device `GPU_DEVICE` names (a `--features cuda`
/// build), so the same goldens check the GPU.
pub fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| match std::env::var("GPU_DEVICE") {
        Ok(n) if !n.trim().is_empty() => {
            let ordinal = n.trim().parse().expect("GPU_DEVICE is a CUDA ordinal");
            ofa_model::gpu::open(ordinal).expect("the GPU that GPU_DEVICE names opens")
        }
        _ => Device::Cpu,
    })
}

/// Allowed difference from the reference's probabilities: 1e-5 on the CPU; on a GPU, 1e-4
/// (its kernels sum in another order).
pub fn prob_tolerance() -> f32 {
    if device().is_cpu() {
        1e-5
    } else {
        1e-4
    }
}

/// Allowed difference in intermediate activations (magnitudes up to ~10).
pub fn tensor_tolerance() -> f32 {
    if device().is_cpu() {
        1e-4
    } else {
        1e-3
    }
}

mod tiny_bin;

/// The tiny model, with its `pytorch_model.bin` rebuilt if missing.
pub fn tiny_dir() -> PathBuf {
    let dir = fixtures().join("tiny_ofa_ve");
    static BIN: OnceLock<()> = OnceLock::new();
    BIN.get_or_init(|| tiny_bin::ensure(&dir));
    dir
}

pub fn golden() -> PathBuf {
    fixtures().join("golden")
}

pub fn cases() -> &'static Vec<Value> {
    static CASES: OnceLock<Vec<Value>> = OnceLock::new();
    CASES.get_or_init(|| {
        let v: Value =
            serde_json::from_slice(&std::fs::read(golden().join("cases.json")).unwrap()).unwrap();
        v["cases"].as_array().unwrap().clone()
    })
}

/// The tiny model. On a GPU its ResNet, encoder and decoder replay CUDA graphs for batches up to
/// `OFA_TEST_CUDA_GRAPHS` (8 unless set; 0 turns them off), so the goldens check the recorded
/// path too: each batch size's first run is plain, the later ones replay.
pub fn tiny() -> &'static Entailment {
    static MODEL: OnceLock<Entailment> = OnceLock::new();
    MODEL.get_or_init(|| {
        Entailment::load(tiny_dir(), device())
            .expect("tiny model loads")
            .with_cuda_graphs(test_cuda_graphs())
    })
}

/// `OFA_TEST_CUDA_GRAPHS`, 8 unless set.
pub fn test_cuda_graphs() -> usize {
    std::env::var("OFA_TEST_CUDA_GRAPHS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(8)
}

pub fn case_tensors(case: &Value) -> HashMap<String, Tensor> {
    let id = case["id"].as_str().unwrap();
    candle_core::safetensors::load(
        golden().join("tensors").join(format!("{id}.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

pub fn image_bytes(case: &Value) -> Vec<u8> {
    std::fs::read(golden().join(case["input"]["image"].as_str().unwrap())).unwrap()
}

pub fn texts(case: &Value) -> (String, Option<String>) {
    (
        case["input"]["text"].as_str().unwrap().to_owned(),
        case["input"]["text2"].as_str().map(str::to_owned),
    )
}

/// A golden case's text and image, prepared by `m`.
pub fn prepare_with(m: &Entailment, case: &Value) -> ofa_model::Prepared {
    let (h, p) = texts(case);
    ofa_model::Prepared {
        source: m.encode_text(&h, p.as_deref()).unwrap(),
        pixels: m
            .preprocess_image(&image_bytes(case), u64::MAX)
            .unwrap()
            .into(),
        cache_scope: 0,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A scratch copy of the tiny model directory (weights hard-linked when possible), removed
/// when dropped.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ofa-model-{name}-"))
        .tempdir()
        .unwrap();
    for entry in std::fs::read_dir(tiny_dir()).unwrap() {
        let p = entry.unwrap().path();
        let dst = dir.path().join(p.file_name().unwrap());
        // The weights are linked (tests replace them, never write through); the small files a
        // test may edit are copies, so an edit cannot reach the fixture.
        let large = std::fs::metadata(&p).unwrap().len() > 1 << 20;
        if !large || std::fs::hard_link(&p, &dst).is_err() {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
    dir
}
