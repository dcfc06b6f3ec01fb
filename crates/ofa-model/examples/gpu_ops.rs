//! Time of each kind of operation the model runs, at its real shapes, on a GPU: where a forward
//! pass goes, op by op. `GPU_DEVICE=0 gpu_ops [f32|bf16] [batch, 16 by default]`; one JSON line
//! per op.
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};

fn time(dev: &Device, label: &str, flops: f64, bytes: f64, mut f: impl FnMut()) {
    f();
    dev.synchronize().unwrap();
    let n = 10;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    dev.synchronize().unwrap();
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{{\"op\":\"{label}\",\"ms\":{:.3},\"tflops\":{:.1},\"gbps\":{:.0}}}",
        s * 1e3,
        flops / s / 1e12,
        bytes / s / 1e9
    );
}

fn main() -> candle_core::Result<()> {
    let ordinal = std::env::var("GPU_DEVICE").unwrap_or_else(|_| "0".into());
    let dev = ofa_model::gpu::open(ordinal.parse().unwrap()).unwrap();
    let dt = match std::env::args().nth(1).as_deref() {
        Some("bf16") => DType::BF16,
        _ => DType::F32,
    };
    let es = dt.size_in_bytes() as f64;
    let r = |shape: &[usize]| {
        Tensor::randn(0f32, 1., shape, &dev)
            .unwrap()
            .to_dtype(dt)
            .unwrap()
    };
    let b: usize = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let (l, d, h) = (916usize, 1024usize, 16usize);
    let x = r(&[b, l, d]);
    let w = r(&[d, d]);
    let bias = r(&[d]);
    let lin = candle_nn::Linear::new(w.clone(), Some(bias.clone()));
    let mm = 2.0 * (b * l * d * d) as f64;
    time(&dev, "linear 3d (candle_nn)", mm, 0.0, || {
        lin.forward(&x).unwrap();
    });
    let x2 = x.reshape((b * l, d))?;
    time(&dev, "linear as one 2d matmul", mm, 0.0, || {
        x2.matmul(&w.t().unwrap()).unwrap();
    });
    let ours = ofa_model::internal::network::linear::linear(
        d,
        d,
        candle_nn::VarBuilder::from_tensors(
            [
                ("weight".to_owned(), w.clone()),
                ("bias".to_owned(), bias.clone()),
            ]
            .into(),
            dt,
            &dev,
        ),
    )?;
    time(
        &dev,
        "ofa: linear (2d matmul + fused bias)",
        mm,
        0.0,
        || {
            ours.forward(&x).unwrap();
        },
    );
    time(&dev, "linear 2d + bias", mm, 0.0, || {
        x2.matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
    });
    let w4 = r(&[4 * d, d]);
    time(&dev, "fc1 2d 1024->4096", 4.0 * mm, 0.0, || {
        x2.matmul(&w4.t().unwrap()).unwrap();
    });
    let q = r(&[b, h, l, 64]);
    let k = r(&[b, h, l, 64]);
    let att = 2.0 * (b * h * l * l * 64) as f64;
    time(&dev, "scores q.kT", att, 0.0, || {
        q.matmul(&k.t().unwrap()).unwrap();
    });
    let s = r(&[b, h, l, l]);
    let sb = (b * h * l * l) as f64 * es;
    let bb = r(&[1, h, l, l]);
    time(&dev, "scores + bias (broadcast)", 0.0, 3.0 * sb, || {
        s.broadcast_add(&bb).unwrap();
    });
    time(&dev, "softmax_last_dim", 0.0, 2.0 * sb, || {
        candle_nn::ops::softmax_last_dim(&s).unwrap();
    });
    time(&dev, "ofa: scale+bias+softmax fused", 0.0, 2.0 * sb, || {
        ofa_model::internal::cuda::ops::attention_probs(&s, &bb, None, 0.125).unwrap();
    });
    time(&dev, "probs.v", att, 0.0, || {
        s.matmul(&k).unwrap();
    });
    let xb = (b * l * d) as f64 * es;
    time(&dev, "split heads (copy)", 0.0, 2.0 * xb, || {
        x.reshape((b, l, h, 64))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
    });
    let qb = r(&[d]);
    time(&dev, "ofa: split heads + bias fused", 0.0, 2.0 * xb, || {
        ofa_model::internal::cuda::heads::split_heads(&x, Some(&qb), h).unwrap();
    });
    let heads = r(&[b, h, l, 64]);
    let c_attn = r(&[h]);
    time(
        &dev,
        "ofa: merge heads + head scale fused",
        0.0,
        2.0 * xb,
        || {
            ofa_model::internal::cuda::heads::merge_heads(&heads, Some(&c_attn)).unwrap();
        },
    );
    let ln = candle_nn::LayerNorm::new(r(&[d]), r(&[d]), 1e-5);
    time(&dev, "layer_norm", 0.0, 2.0 * xb, || {
        ln.forward(&x).unwrap();
    });
    let big = r(&[b, l, 4 * d]);
    time(&dev, "gelu_erf 4096", 0.0, 8.0 * xb, || {
        big.gelu_erf().unwrap();
    });
    time(&dev, "residual add", 0.0, 3.0 * xb, || {
        (&x + &x).unwrap();
    });
    let (w4v, b4v, pb4) = (r(&[4 * d]), r(&[4 * d]), r(&[4 * d]));
    let ln4 = candle_nn::LayerNorm::new(w4v.clone(), b4v.clone(), 1e-5);
    time(
        &dev,
        "fc1 bias + gelu + layer_norm (3 ops)",
        0.0,
        12.0 * xb,
        || {
            ln4.forward(&big.broadcast_add(&pb4).unwrap().gelu_erf().unwrap())
                .unwrap();
        },
    );
    time(
        &dev,
        "ofa: bias+gelu+layer_norm fused",
        0.0,
        8.0 * xb,
        || {
            ofa_model::internal::cuda::norm::norm_rows(
                &big,
                Some(&pb4),
                true,
                &w4v,
                &b4v,
                1e-5,
                None,
            )
            .unwrap();
        },
    );
    let (wd, bd) = (r(&[d]), r(&[d]));
    time(
        &dev,
        "ofa: layer_norm + residual fused",
        0.0,
        3.0 * xb,
        || {
            ofa_model::internal::cuda::norm::norm_rows(&x, None, false, &wd, &bd, 1e-5, Some(&x))
                .unwrap();
        },
    );
    let img = r(&[b, 64, 120, 120]);
    let k3 = r(&[64, 64, 3, 3]);
    let conv = 2.0 * (b * 64 * 120 * 120 * 64 * 9) as f64;
    time(&dev, "conv2d 3x3 64->64 @120", conv, 0.0, || {
        img.conv2d(&k3, 1, 1, 1, 1).unwrap();
    });
    time(
        &dev,
        "ofa: conv2d 3x3 64->64 @120 (im2col)",
        conv,
        0.0,
        || {
            ofa_model::internal::network::conv::conv2d(&img, &k3, 1, 1).unwrap();
        },
    );
    let img256 = r(&[b, 256, 120, 120]);
    let w1 = r(&[64, 256]);
    let c1 = 2.0 * (b * 256 * 120 * 120 * 64) as f64;
    time(&dev, "conv1x1 256->64 @120 (batched mm)", c1, 0.0, || {
        w1.broadcast_left(b)
            .unwrap()
            .matmul(&img256.reshape((b, 256, 120 * 120)).unwrap())
            .unwrap();
    });
    // The ResNet's third stage (36 of its 47 blocks): 30×30, 1024 ↔ 256 channels.
    let s3 = r(&[b, 1024, 30, 30]);
    let w13 = r(&[256, 1024]);
    let c13 = 2.0 * (b * 1024 * 900 * 256) as f64;
    time(&dev, "conv1x1 1024->256 @30 (batched mm)", c13, 0.0, || {
        w13.broadcast_left(b)
            .unwrap()
            .matmul(&s3.reshape((b, 1024, 900)).unwrap())
            .unwrap();
    });
    // The same products as one GEMM over every pixel of the batch, as a channels-last ResNet
    // would run them (im2col's copy not included for the 3×3).
    let s3_rows = r(&[b * 900, 1024]);
    time(
        &dev,
        "conv1x1 1024->256 @30 as one GEMM (NHWC)",
        c13,
        0.0,
        || {
            s3_rows.matmul(&w13.t().unwrap()).unwrap();
        },
    );
    let cols_rows = r(&[b * 900, 256 * 9]);
    let w33 = r(&[256, 256 * 9]);
    time(
        &dev,
        "conv3x3 256->256 @30 as one GEMM (NHWC)",
        2.0 * (b * 900 * 256 * 256 * 9) as f64,
        0.0,
        || {
            cols_rows.matmul(&w33.t().unwrap()).unwrap();
        },
    );
    let rows120 = r(&[b * 14400, 64 * 9]);
    let w120 = r(&[64, 64 * 9]);
    time(
        &dev,
        "conv3x3 64->64 @120 as one GEMM (NHWC)",
        conv,
        0.0,
        || {
            rows120.matmul(&w120.t().unwrap()).unwrap();
        },
    );
    // What the model's channels-last blocks run: the column copy and then the GEMM.
    let s3_nhwc = r(&[b, 30, 30, 256]);
    let w33_cols = r(&[256 * 9, 256]);
    time(
        &dev,
        "ofa: conv3x3 256->256 @30 channels-last (im2col_nhwc + GEMM)",
        2.0 * (b * 900 * 256 * 256 * 9) as f64,
        0.0,
        || {
            ofa_model::internal::network::resnet_nhwc::im2col_nhwc(&s3_nhwc, 3, 1, 1)
                .unwrap()
                .matmul(&w33_cols)
                .unwrap();
        },
    );
    let s1_nhwc = r(&[b, 120, 120, 64]);
    let w120_cols = r(&[64 * 9, 64]);
    time(
        &dev,
        "ofa: conv3x3 64->64 @120 channels-last (im2col_nhwc + GEMM)",
        conv,
        0.0,
        || {
            ofa_model::internal::network::resnet_nhwc::im2col_nhwc(&s1_nhwc, 3, 1, 1)
                .unwrap()
                .matmul(&w120_cols)
                .unwrap();
        },
    );
    time(
        &dev,
        "ofa: im2col_nhwc 3x3 @120x64 alone",
        0.0,
        10.0 * (b * 14400 * 64) as f64 * es,
        || {
            ofa_model::internal::network::resnet_nhwc::im2col_nhwc(&s1_nhwc, 3, 1, 1).unwrap();
        },
    );
    let s3n = r(&[b, 256, 30, 30]);
    let k33 = r(&[256, 256, 3, 3]);
    let c33 = 2.0 * (b * 256 * 900 * 256 * 9) as f64;
    time(
        &dev,
        "ofa: conv2d 3x3 256->256 @30 (im2col)",
        c33,
        0.0,
        || {
            ofa_model::internal::network::conv::conv2d(&s3n, &k33, 1, 1).unwrap();
        },
    );
    let cb = r(&[256]);
    let ib = (b * 256 * 120 * 120) as f64 * es;
    time(
        &dev,
        "bias+residual+relu (3 ops) @120x256",
        0.0,
        7.0 * ib,
        || {
            img256
                .broadcast_add(&cb.reshape((1, 256, 1, 1)).unwrap())
                .unwrap()
                .add(&img256)
                .unwrap()
                .relu()
                .unwrap();
        },
    );
    time(&dev, "ofa: bias+residual+relu fused", 0.0, 3.0 * ib, || {
        ofa_model::internal::network::conv::bias_act(&img256, &cb, Some(&img256), true).unwrap();
    });
    // A whole bottleneck block (1×1, 3×3, 1×1 with the shortcut, each with its epilogue) as
    // the GPU ran it before (NCHW) and runs it now (channels-last): the third stage's shape (36
    // of the 47 blocks) and the first's.
    for (hw, planes) in [(30usize, 256usize), (120, 64)] {
        let c = 4 * planes;
        let (w1, w2, w3) = (
            r(&[planes, c, 1, 1]),
            r(&[planes, planes, 3, 3]),
            r(&[c, planes, 1, 1]),
        );
        let (b1, b2, b3) = (r(&[planes]), r(&[planes]), r(&[c]));
        let flops = 2.0 * (b * hw * hw * (2 * c * planes + 9 * planes * planes)) as f64;
        let x = r(&[b, c, hw, hw]);
        let one_by_one = |w: &Tensor, x: &Tensor| -> Tensor {
            let (o, i) = (w.dim(0).unwrap(), w.dim(1).unwrap());
            w.reshape((o, i))
                .unwrap()
                .broadcast_left(b)
                .unwrap()
                .matmul(&x.reshape((b, i, hw * hw)).unwrap())
                .unwrap()
                .reshape((b, o, hw, hw))
                .unwrap()
        };
        time(
            &dev,
            &format!("ofa: bottleneck {c}/{planes} @{hw} NCHW (before)"),
            flops,
            0.0,
            || {
                let act = ofa_model::internal::network::conv::bias_act;
                let h = act(&one_by_one(&w1, &x), &b1, None, true).unwrap();
                let h = act(
                    &ofa_model::internal::network::conv::conv2d(&h, &w2, 1, 1).unwrap(),
                    &b2,
                    None,
                    true,
                );
                act(&one_by_one(&w3, &h.unwrap()), &b3, Some(&x), true).unwrap();
            },
        );
        let conv = ofa_model::internal::network::resnet_nhwc::ConvNhwc::new;
        let (c1, c2, c3) = (
            conv(&w1, &b1, 1, 0)?,
            conv(&w2, &b2, 1, 1)?,
            conv(&w3, &b3, 1, 0)?,
        );
        let xn = r(&[b, hw, hw, c]);
        time(
            &dev,
            &format!("ofa: bottleneck {c}/{planes} @{hw} channels-last (now)"),
            flops,
            0.0,
            || {
                let h = c1.forward(&xn, None, true).unwrap();
                let h = c2.forward(&h, None, true).unwrap();
                c3.forward(&h, Some(&xn), true).unwrap();
            },
        );
    }
    let stem = r(&[b, 3, 480, 480]);
    let k7 = r(&[64, 3, 7, 7]);
    time(
        &dev,
        "stem conv 7x7/2",
        2.0 * (b * 64 * 240 * 240 * 3 * 49) as f64,
        0.0,
        || {
            stem.conv2d(&k7, 3, 2, 1, 1).unwrap();
        },
    );
    time(
        &dev,
        "ofa: stem conv 7x7/2 (im2col)",
        2.0 * (b * 64 * 240 * 240 * 3 * 49) as f64,
        0.0,
        || {
            ofa_model::internal::network::conv::conv2d(&stem, &k7, 2, 3).unwrap();
        },
    );
    let p = r(&[b, 64, 242, 242]);
    time(&dev, "max_pool2d 3/2", 0.0, 0.0, || {
        p.max_pool2d_with_stride(3, 2).unwrap();
    });
    Ok(())
}
