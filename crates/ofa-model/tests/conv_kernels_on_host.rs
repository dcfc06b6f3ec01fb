//! The ResNet's convolution kernels of `kernels/ofa.cu` (im2col, NCHW and channels-last), run
//! on the host (see `host_kernels`): their columns times the weights must give candle's
//! convolution, in f32, bf16 and f16, on grids smaller than the work and off alignment.

mod host_kernels;

use candle_core::{Device, Tensor};
use host_kernels::*;

#[test]
fn im2col_gives_candles_convolution() {
    // (B, C, H, W, k, stride, pad): the ResNet's 3×3 and stem 7×7, a strided 1×1.
    for (b, c, h, w, k, s, p) in [
        (2, 3, 9, 10, 3, 1, 1),
        (1, 2, 15, 13, 7, 2, 3),
        (2, 4, 8, 8, 1, 2, 0),
    ] {
        for (dtype, name) in DTYPES {
            let x = values(&[b, c, h, w], 2.0, 12, dtype);
            let wt = values(&[5, c, k, k], 1.0, 13, dtype);
            let want = x.conv2d(&wt, p, s, 1, 1).unwrap();
            let (oh, ow) = (want.dim(2).unwrap(), want.dim(3).unwrap());
            let params = [b, c, h, w, k, s, p].map(|v| v.to_string());
            let cols = run("im2col", name, false, (2, 32), &params, &[&x]);
            let cols = Tensor::from_vec(cols, (b, c * k * k, oh * ow), &Device::Cpu).unwrap();
            // im2col only moves values: the product with the weights is candle's convolution.
            let got = wt
                .reshape((5, c * k * k))
                .unwrap()
                .broadcast_left(b)
                .unwrap()
                .matmul(&cols)
                .unwrap()
                .reshape((b, 5, oh, ow))
                .unwrap();
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{name} {b}x{c}x{h}x{w} k{k} s{s} p{p}: {diff}");
        }
    }
}

#[test]
fn channels_last_im2col_gives_candles_convolution() {
    // (B, H, W, C, k, stride, pad): the blocks' 3×3 of stride 1 and 2, the strided 1×1 of a
    // downsample, channels not a multiple of four (the scalar copy), more channels than a warp
    // copies in one sweep (132 > 4·32).
    for (b, h, w, c, k, s, p) in [
        (2, 9, 10, 8, 3, 1, 1),
        (1, 10, 9, 6, 3, 2, 1),
        (2, 8, 7, 12, 1, 2, 0),
        (1, 5, 4, 132, 3, 1, 1),
    ] {
        for (dtype, name) in DTYPES {
            let x = values(&[b, h, w, c], 2.0, 14, dtype);
            let wt = values(&[5, c, k, k], 1.0, 15, dtype);
            let want_cols =
                ofa_model::internal::network::resnet_nhwc::im2col_nhwc_generic(&x, k, s, p)
                    .unwrap();
            let want = x
                .permute((0, 3, 1, 2))
                .unwrap()
                .conv2d(&wt, p, s, 1, 1)
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            let (oh, ow) = (want.dim(1).unwrap(), want.dim(2).unwrap());
            let params = [b, h, w, c, k, s, p].map(|v| v.to_string());
            for shift in [false, true] {
                let label = format!("{name} {b}x{h}x{w}x{c} k{k} s{s} p{p} shifted {shift}");
                // Two blocks of two warps: fewer warps than segments.
                let cols = run("im2col_nhwc", name, shift, (2, 64), &params, &[&x]);
                // Values only move: exactly the generic columns.
                let exact = want_cols.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(cols.len(), exact.len(), "{label}: length");
                if let Some(i) = (0..cols.len()).find(|&i| cols[i] != exact[i]) {
                    let (row, col) = (i / (k * k * c), i % (k * k * c));
                    panic!(
                        "{label}: column {col} of row {row} is {}, not {}",
                        cols[i], exact[i]
                    );
                }
                let cols = Tensor::from_vec(cols, (b * oh * ow, k * k * c), &Device::Cpu).unwrap();
                let wm = wt
                    .permute((2, 3, 1, 0))
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .reshape((k * k * c, 5))
                    .unwrap();
                let got = cols.matmul(&wm).unwrap().reshape((b, oh, ow, 5)).unwrap();
                let diff = max_abs_diff(&got, &want);
                assert!(diff < 1e-3, "{label}: {diff}");
            }
        }
    }
}
