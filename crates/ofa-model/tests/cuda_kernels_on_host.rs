//! The CUDA kernels of `kernels/ofa.cu`, compiled for the host with `kernels/host/emulation.h`
//! (each CUDA thread an OS thread, barriers and warp shuffles real) and checked against candle's
//! CPU operations in f32, bf16 and f16: so the kernels a GPU build runs are tested on machines
//! without a GPU. Grids are kept smaller than the work to exercise the grid-stride loops, and
//! every case also runs on arrays one element off alignment (the kernels' scalar paths).
//! Needs a C++17 compiler (`c++`, or `CXX`).

mod host_kernels;

use candle_core::{DType, Device, Module, Tensor};
use host_kernels::*;

#[test]
fn attention_softmax_matches_candle() {
    // (B, H, Lq, Lk, bias rows, bias columns): 916 keys as the encoder (4-wide loads), the
    // corner of a bias built for a longer text (strided rows), 7 (scalar), 1100 (past the
    // registers: the three-pass loop).
    for (b, h, lq, lk, blq, blk) in [
        (2, 3, 5, 916, 5, 916),
        (2, 3, 5, 916, 9, 932),
        (2, 2, 3, 7, 3, 7),
        (2, 2, 3, 7, 4, 9),
        (1, 2, 2, 1100, 2, 1100),
    ] {
        for (dtype, name) in DTYPES {
            for (masked, shift) in [(false, false), (true, false), (true, true)] {
                let s = values(&[b, h, lq, lk], 6.0, 1, dtype);
                let full_bias = values(&[1, h, blq, blk], 3.0, 2, dtype);
                let bias = full_bias
                    .narrow(2, 0, lq)
                    .unwrap()
                    .narrow(3, 0, lk)
                    .unwrap();
                // Every third key of the first item padded, as the encoder's text mask does.
                let mut m = vec![0f32; b * lk];
                for k in (0..lk).step_by(3) {
                    m[k] = f32::MIN;
                }
                let mask = rounded(&Tensor::from_vec(m, (b, lk), &Device::Cpu).unwrap(), dtype);
                let scale = 0.125f64;
                let mut x = (&s * scale).unwrap().broadcast_add(&bias).unwrap();
                if masked {
                    x = x
                        .broadcast_add(&mask.reshape((b, 1, 1, lk)).unwrap())
                        .unwrap();
                }
                let want = rounded(&candle_nn::ops::softmax_last_dim(&x).unwrap(), dtype);
                let params = [b, h, lq, lk, usize::from(masked)]
                    .map(|v| v.to_string())
                    .into_iter()
                    .chain([scale.to_string(), blq.to_string(), blk.to_string()])
                    .collect::<Vec<_>>();
                let mut inputs = vec![&s, &full_bias];
                if masked {
                    inputs.push(&mask);
                }
                // Two blocks of two warps for up to 30 rows: each warp takes several.
                let got = run("attn_softmax", name, shift, (2, 64), &params, &inputs);
                let err = worst(&got, &want, 1e-3);
                assert!(
                    err < tolerance(dtype),
                    "{name} {b}x{h}x{lq}x{lk} masked {masked} shifted {shift}: {err}"
                );
            }
        }
    }
}

#[test]
fn attention_softmax_of_a_fully_masked_row_is_zero() {
    let (b, h, lq, lk) = (1, 1, 2, 8);
    let s = values(&[b, h, lq, lk], 1.0, 3, DType::F32);
    let bias = Tensor::full(f32::NEG_INFINITY, (1, h, lq, lk), &Device::Cpu).unwrap();
    let params = ["1", "1", "2", "8", "0", "1", "2", "8"].map(String::from);
    let got = run("attn_softmax", "f32", false, (1, 32), &params, &[&s, &bias]);
    assert_eq!(got, vec![0.0; b * h * lq * lk]);
}

#[test]
fn channel_op_matches_candle() {
    // [N, C, HW] with HW 1 (a linear layer's bias over features) and HW 35 (a convolution).
    for (n, c, hw) in [(3, 64, 1), (2, 5, 35), (1, 3, 3)] {
        let len = n * c * hw;
        for (dtype, name) in DTYPES {
            for (multiply, relu, residual, shift) in [
                (false, false, false, false),
                (false, true, true, false),
                (true, false, false, true),
                (false, true, true, true),
            ] {
                let x = values(&[n, c, hw], 4.0, 4, dtype);
                let p = values(&[c], 2.0, 5, dtype);
                let r = values(&[n, c, hw], 4.0, 6, dtype);
                let pb = p.reshape((1, c, 1)).unwrap();
                let mut want = match multiply {
                    true => x.broadcast_mul(&pb).unwrap(),
                    false => x.broadcast_add(&pb).unwrap(),
                };
                if residual {
                    want = (want + &r).unwrap();
                }
                if relu {
                    want = want.relu().unwrap();
                }
                let want = rounded(&want, dtype);
                let params = [
                    len,
                    c,
                    hw,
                    usize::from(multiply),
                    usize::from(relu),
                    usize::from(residual),
                ]
                .map(|v| v.to_string());
                let mut inputs = vec![&x, &p];
                if residual {
                    inputs.push(&r);
                }
                let got = run("channel_op", name, shift, (2, 32), &params, &inputs);
                let err = worst(&got, &want, 1e-3);
                // In f32 the same additions in the same order: exact.
                let tol = tolerance_with(dtype, 0.0);
                assert!(
                    err <= tol,
                    "{name} {n}x{c}x{hw} mul {multiply} relu {relu} res {residual} shifted {shift}: {err}"
                );
            }
        }
    }
}

#[test]
fn norm_rows_matches_candle_layer_norm() {
    // 1024 (the model's width: registers), 4096 with 128 threads (past the registers: the
    // loop that recomputes), 37 (ragged).
    for (rows, n) in [(3, 1024), (2, 4096), (4, 37)] {
        for (dtype, name) in DTYPES {
            for (gelu, pre_bias, residual, shift) in [
                (true, true, false, false),
                (false, false, true, false),
                (true, true, true, true),
                (false, false, false, true),
            ] {
                let x = values(&[rows, n], 3.0, 7, dtype);
                let pb = values(&[n], 1.0, 8, dtype);
                let w = values(&[n], 1.5, 9, dtype);
                let b = values(&[n], 0.5, 10, dtype);
                let r = values(&[rows, n], 3.0, 11, dtype);
                let eps = 1e-5;
                let mut v = x.clone();
                if pre_bias {
                    v = v.broadcast_add(&pb).unwrap();
                }
                if gelu {
                    v = v.gelu_erf().unwrap();
                }
                let ln = candle_nn::LayerNorm::new(w.clone(), b.clone(), eps);
                let mut want = ln.forward(&v).unwrap();
                if residual {
                    want = (want + &r).unwrap();
                }
                let want = rounded(&want, dtype);
                let flags = [gelu, pre_bias, residual].map(|f| usize::from(f).to_string());
                let params = [rows.to_string(), n.to_string(), eps.to_string()]
                    .into_iter()
                    .chain(flags)
                    .collect::<Vec<_>>();
                let mut inputs = vec![&x];
                if pre_bias {
                    inputs.push(&pb);
                }
                inputs.extend([&w, &b]);
                if residual {
                    inputs.push(&r);
                }
                let got = run("norm_rows", name, shift, (2, 128), &params, &inputs);
                // Outputs near zero after the residual: an absolute floor of 0.05.
                let err = worst(&got, &want, 0.05);
                // Another erf and another summation order than candle's.
                let tol = tolerance_with(dtype, 5e-5);
                assert!(
                    err < tol,
                    "{name} {rows}x{n} gelu {gelu} bias {pre_bias} res {residual} shifted {shift}: {err}"
                );
            }
        }
    }
}

#[test]
fn heads_split_with_the_bias_and_merge_with_the_scale() {
    let (b, l, h, dh) = (2, 7, 3, 8);
    for (dtype, name) in DTYPES {
        for (with_extra, shift) in [(true, false), (false, false), (true, true)] {
            let x = values(&[b, l, h * dh], 3.0, 14, dtype);
            let bias = values(&[h * dh], 1.0, 15, dtype);
            let params = [b, l, h, dh, usize::from(with_extra)].map(|v| v.to_string());
            let mut biased = x.clone();
            if with_extra {
                biased = biased.broadcast_add(&bias).unwrap();
            }
            let want = rounded(
                &biased
                    .reshape((b, l, h, dh))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap(),
                dtype,
            );
            let inputs: Vec<&Tensor> = if with_extra {
                vec![&x, &bias]
            } else {
                vec![&x]
            };
            let got = run("split_heads", name, shift, (2, 32), &params, &inputs);
            let err = worst(&got, &want, 1e-3);
            // Values moved, or multiplied once: exact in f32.
            let tol = tolerance_with(dtype, 0.0);
            assert!(
                err <= tol,
                "split {name} bias {with_extra} shifted {shift}: {err}"
            );

            let o = values(&[b, h, l, dh], 3.0, 16, dtype);
            let scale = values(&[h], 2.0, 17, dtype);
            let mut scaled = o.clone();
            if with_extra {
                scaled = scaled
                    .broadcast_mul(&scale.reshape((1, h, 1, 1)).unwrap())
                    .unwrap();
            }
            let want = rounded(
                &scaled
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, l, h * dh))
                    .unwrap(),
                dtype,
            );
            let inputs: Vec<&Tensor> = if with_extra {
                vec![&o, &scale]
            } else {
                vec![&o]
            };
            let got = run("merge_heads", name, shift, (2, 32), &params, &inputs);
            let err = worst(&got, &want, 1e-3);
            assert!(
                err <= tol,
                "merge {name} scale {with_extra} shifted {shift}: {err}"
            );
        }
    }
}

#[test]
fn normalize_pixels_is_the_cpus_normalisation_bit_for_bit() {
    // Two 17×17 images whose bytes take every value in every channel (a plane that is no
    // multiple of the grid), with both sets of constants the model's configurations use.
    let (b, size) = (2usize, 17usize);
    let plane = size * size;
    let bytes: Vec<u8> = (0..b * plane * 3).map(|i| (i * 7 % 256) as u8).collect();
    let pixels = Tensor::new(
        bytes.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(),
        &Device::Cpu,
    )
    .unwrap();
    for (mean, std) in [
        ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]),
        ([0.5; 3], [0.5; 3]),
    ] {
        // What the CPU builds for the batch: each image normalised, one after another.
        let cpu: Vec<f32> = bytes
            .chunks_exact(plane * 3)
            .flat_map(|img| {
                let mut planes = vec![0f32; plane * 3];
                ofa_model::internal::preprocess::pixel_tensor::normalize_chw_into(
                    img,
                    &mut planes,
                    mean,
                    std,
                );
                planes
            })
            .collect();
        let cpu = Tensor::new(cpu, &Device::Cpu).unwrap();
        let mut params = vec![b.to_string(), plane.to_string()];
        params.extend(mean.iter().chain(&std).map(|v| v.to_string()));
        for (dtype, name) in DTYPES {
            // candle's cast of the CPU's f32 values is what the model received before.
            let want = rounded(&cpu, dtype).to_vec1::<f32>().unwrap();
            for shift in [false, true] {
                let got = run(
                    "normalize_pixels",
                    name,
                    shift,
                    (3, 64),
                    &params,
                    &[&pixels],
                );
                assert_eq!(got, want, "{name} shifted {shift} mean {mean:?}");
            }
        }
    }
}
