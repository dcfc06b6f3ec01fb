//! Rough GEMM / conv throughput of candle's CPU backend on this machine (for PERFORMANCE.md).
use candle_core::{Device, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(label: &str, flops: f64, mut f: F) {
    f();
    let t = Instant::now();
    let n = 3;
    for _ in 0..n {
        f();
    }
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{label:40} {:8.2} ms {:7.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (916, 1024), &d)?;
    let w = Tensor::randn(0f32, 1., (4096, 1024), &d)?;
    time(
        "linear 916x1024 -> 4096",
        2.0 * 916. * 1024. * 4096.,
        || {
            x.matmul(&w.t().unwrap()).unwrap();
        },
    );
    for (k, n) in [(1024, 1024), (1024, 3072), (1024, 4096), (4096, 1024)] {
        let x = Tensor::randn(0f32, 1., (916, k), &d)?;
        let w = Tensor::randn(0f32, 1., (n, k), &d)?;
        let b = vec![0.5f32; n];
        time(
            &format!("ours: linear+bias 916x{k} -> {n}"),
            2.0 * 916. * k as f64 * n as f64,
            || {
                ofa_model::internal::cpu::linear::linear(&x, &w, Some(&b)).unwrap();
            },
        );
    }
    for (rows, k, n) in [(916, 1024, 4096), (916, 4096, 1024), (15, 1024, 4096)] {
        let x: Vec<f32> = Tensor::randn(0f32, 1., rows * k, &d)?.to_vec1()?;
        let w: Vec<f32> = Tensor::randn(0f32, 1., n * k, &d)?.to_vec1()?;
        let q = ofa_model::internal::cpu::int8::quant::Int8Weights::quantize(&w, n, k);
        time(
            &format!("int8: linear {rows}x{k} -> {n}"),
            2.0 * rows as f64 * k as f64 * n as f64,
            || {
                ofa_model::internal::cpu::int8::linear::linear(&x, &q, None).unwrap();
            },
        );
    }
    // candle's own quantised matmul (ggml's Q8_0 blocks), the alternative to our int8 kernel.
    for (rows, k, n) in [(916, 1024, 4096), (15, 1024, 4096)] {
        let x = Tensor::randn(0f32, 1., (rows, k), &d)?;
        let w = Tensor::randn(0f32, 1., (n, k), &d)?;
        let q =
            candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0)?;
        let mm = candle_core::quantized::QMatMul::from_qtensor(q)?;
        time(
            &format!("candle Q8_0: linear {rows}x{k} -> {n}"),
            2.0 * rows as f64 * k as f64 * n as f64,
            || {
                candle_core::Module::forward(&mm, &x).unwrap();
            },
        );
    }
    let few = Tensor::randn(0f32, 1., (15, 1024), &d)?;
    time(
        "gemm: 15 rows x1024 -> 4096",
        2.0 * 15. * 1024. * 4096.,
        || {
            few.matmul(&w.t().unwrap()).unwrap();
        },
    );
    time(
        "ours: 15 rows x1024 -> 4096",
        2.0 * 15. * 1024. * 4096.,
        || {
            ofa_model::internal::cpu::linear::linear(&few, &w, None).unwrap();
        },
    );
    let q = Tensor::randn(0f32, 1., (1, 16, 916, 64), &d)?;
    let k = Tensor::randn(0f32, 1., (1, 16, 916, 64), &d)?;
    time(
        "attn scores 16x916x64x916",
        2.0 * 16. * 916. * 916. * 64.,
        || {
            q.matmul(&k.t().unwrap()).unwrap();
        },
    );
    let s = Tensor::randn(0f32, 1., (1, 16, 916, 916), &d)?;
    time("softmax 16x916x916", 16. * 916. * 916., || {
        candle_nn::ops::softmax_last_dim(&s).unwrap();
    });
    let abs = Tensor::randn(0f32, 1., 16 * 916 * 916, &d)?.to_vec1::<f32>()?;
    let (q3, k3, v3) = (
        Tensor::randn(0f32, 1., (1, 916, 1024), &d)?,
        Tensor::randn(0f32, 1., (1, 916, 1024), &d)?,
        Tensor::randn(0f32, 1., (1, 916, 1024), &d)?,
    );
    let bias = ofa_model::internal::cpu::softmax::AttnBias {
        abs: &abs,
        heads: 16,
        lq: 916,
        lk: 916,
        blocks: vec![],
        causal: false,
    };
    time(
        "fused attention 16 heads 916x916x64",
        4.0 * 16. * 916. * 916. * 64.,
        || {
            ofa_model::internal::cpu::attention::fused_attention(
                &q3, &k3, &v3, &bias, None, &[1.0; 16],
            )
            .unwrap();
        },
    );
    // With the encoder's relative-position blocks (900 image tokens, 16 text tokens).
    let rel_img: Vec<f32> = vec![0.1; 6892 * 16];
    let rel_txt: Vec<f32> = vec![0.1; 511 * 16];
    let img_idx = ofa_model::internal::network::buckets::image_buckets(30, 30, 42);
    let txt_idx = ofa_model::internal::network::buckets::token_buckets(16, 256);
    let rel_bias = ofa_model::internal::cpu::softmax::AttnBias {
        abs: &abs,
        heads: 16,
        lq: 916,
        lk: 916,
        blocks: vec![
            ofa_model::internal::cpu::bias::RelBlock {
                table: &rel_img,
                index: &img_idx,
                offset: 0,
                size: 900,
            },
            ofa_model::internal::cpu::bias::RelBlock {
                table: &rel_txt,
                index: &txt_idx,
                offset: 900,
                size: 16,
            },
        ],
        causal: false,
    };
    time(
        "fused attention, relative blocks",
        4.0 * 16. * 916. * 916. * 64.,
        || {
            ofa_model::internal::cpu::attention::fused_attention(
                &q3, &k3, &v3, &rel_bias, None, &[1.0; 16],
            )
            .unwrap();
        },
    );
    time("broadcast_add 16x916x916", 16. * 916. * 916., || {
        s.broadcast_add(&s).unwrap();
    });
    let h = Tensor::randn(0f32, 1., (916, 4096), &d)?;
    time("gelu_erf 916x4096", 916. * 4096., || {
        h.gelu_erf().unwrap();
    });
    time("ours: gelu_erf 916x4096", 916. * 4096., || {
        ofa_model::internal::cpu::gelu::gelu_erf(&h).unwrap();
    });
    let abs: Vec<f32> = vec![0.5; 16 * 916 * 916];
    let table: Vec<f32> = vec![0.1; 6892 * 16];
    let idx = ofa_model::internal::network::buckets::image_buckets(30, 30, 42);
    let ttab: Vec<f32> = vec![0.1; 511 * 16];
    let tidx = ofa_model::internal::network::buckets::token_buckets(16, 256);
    time("layer_bias 16x916x916", 16. * 916. * 916., || {
        ofa_model::internal::cpu::bias::layer_bias(
            &abs,
            16,
            916,
            916,
            &[
                ofa_model::internal::cpu::bias::RelBlock {
                    table: &table,
                    index: &idx,
                    offset: 0,
                    size: 900,
                },
                ofa_model::internal::cpu::bias::RelBlock {
                    table: &ttab,
                    index: &tidx,
                    offset: 900,
                    size: 16,
                },
            ],
            false,
            &d,
        )
        .unwrap();
    });
    let ln = candle_nn::LayerNorm::new(
        Tensor::ones(1024, candle_core::DType::F32, &d)?,
        Tensor::zeros(1024, candle_core::DType::F32, &d)?,
        1e-5,
    );
    let xx = Tensor::randn(0f32, 1., (1, 916, 1024), &d)?;
    time("layer_norm 916x1024", 916. * 1024., || {
        candle_core::Module::forward(&ln, &xx).unwrap();
    });
    let img = Tensor::randn(0f32, 1., (1, 64, 120, 120), &d)?;
    let kk = Tensor::randn(0f32, 1., (64, 64, 3, 3), &d)?;
    time(
        "conv3x3 64ch 120x120",
        2.0 * 64. * 64. * 9. * 14400.,
        || {
            img.conv2d(&kk, 1, 1, 1, 1).unwrap();
        },
    );
    time(
        "im2col-gemm conv3x3 64ch 120x120",
        2.0 * 64. * 64. * 9. * 14400.,
        || {
            ofa_model::internal::network::conv::conv2d(&img, &kk, 1, 1).unwrap();
        },
    );
    let img = Tensor::randn(0f32, 1., (1, 256, 30, 30), &d)?;
    let kk = Tensor::randn(0f32, 1., (256, 256, 3, 3), &d)?;
    time("conv3x3 256ch 30x30", 2.0 * 256. * 256. * 9. * 900., || {
        img.conv2d(&kk, 1, 1, 1, 1).unwrap();
    });
    time(
        "im2col-gemm conv3x3 256ch 30x30",
        2.0 * 256. * 256. * 9. * 900.,
        || {
            ofa_model::internal::network::conv::conv2d(&img, &kk, 1, 1).unwrap();
        },
    );
    Ok(())
}
