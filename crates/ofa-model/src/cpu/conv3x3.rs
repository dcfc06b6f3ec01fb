//! 3×3 convolutions (stride 1, padding 1) on the CPU without a column matrix: the output is
//! the sum of nine 1×1 convolutions of the input shifted by each kernel offset. On a zero-padded
//! copy of the input each shift is a plain strided view, so each term is one GEMM
//! (`[O, C] × [C, H·(W+2)]`) accumulating into the output, whose two extra columns per row
//! are dropped at the end. im2col wrote 9× the input (33 MB per image at 120×120×64) and held
//! the ResNet's 3×3 convolutions to 60–160 GFLOP/s.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::network::conv::f32_slice;

/// `[O, C, 3, 3]` → `[9, O, C]`: one `[O, C]` matrix per kernel offset.
pub fn shifted_weights(w: &Tensor) -> Result<Tensor> {
    let (o, c, kh, kw) = w.dims4()?;
    w.reshape((o, c, kh * kw))?.permute((2, 0, 1))?.contiguous()
}

/// The inverse of [`shifted_weights`].
pub fn unshifted_weights(w9: &Tensor) -> Result<Tensor> {
    let (_, o, c) = w9.dims3()?;
    w9.permute((1, 2, 0))?.contiguous()?.reshape((o, c, 3, 3))
}

struct Shifted3x3;

impl CustomOp2 for Shifted3x3 {
    fn name(&self) -> &'static str {
        "conv3x3-shifted"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl)?;
        let w9 = f32_slice(ws, wl)?;
        let (b, c, h, w) = xl.shape().dims4()?;
        let (nine, o, wc) = wl.shape().dims3()?;
        if nine != 9 || wc != c {
            candle_core::bail!(
                "3×3 convolution: weights {:?} do not fit input {:?}",
                wl.shape(),
                xl.shape()
            );
        }
        let wp = w + 2;
        // Each padded plane: (H + 2) rows of W + 2, and 2 spare zeros so the view shifted by
        // (2, 2) stays inside it.
        let plane = (h + 2) * wp + 2;
        let cols = h * wp;
        let mut out = vec![0f32; b * o * h * w];
        let mut padded = vec![0f32; c * plane];
        let mut acc = vec![0f32; o * cols];
        for img in 0..b {
            let src = &x[img * c * h * w..(img + 1) * c * h * w];
            padded
                .par_chunks_mut(plane)
                .zip(src.par_chunks(h * w))
                .for_each(|(dst, s)| {
                    for (y, row) in s.chunks(w).enumerate() {
                        dst[(y + 1) * wp + 1..(y + 1) * wp + 1 + w].copy_from_slice(row);
                    }
                });
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                // SAFETY: W9[t] is `[o, c]` row-major; the shifted view of `padded` is
                // `[c, cols]` with row stride `plane` and ends inside it (see `plane`); `acc`
                // is `[o, cols]`.
                unsafe {
                    gemm::gemm(
                        o,
                        cols,
                        c,
                        acc.as_mut_ptr(),
                        1,
                        cols as isize,
                        t > 0,
                        w9[t * o * c..].as_ptr(),
                        1,
                        c as isize,
                        padded[ky * wp + kx..].as_ptr(),
                        1,
                        plane as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    );
                }
            }
            out[img * o * h * w..(img + 1) * o * h * w]
                .par_chunks_mut(h * w)
                .zip(acc.par_chunks(cols))
                .for_each(|(dst, a)| {
                    for (d, row) in dst.chunks_mut(w).zip(a.chunks(wp)) {
                        d.copy_from_slice(&row[..w]);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, o, h, w))))
    }
}

/// `x` `[B, C, H, W]` ⊛ a 3×3 kernel given as [`shifted_weights`] `[9, O, C]`, stride 1,
/// padding 1 → `[B, O, H, W]`. f32 on the CPU.
pub fn conv3x3(x: &Tensor, w9: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w9.contiguous()?, &Shifted3x3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_convolution_and_the_layouts_round_trip() {
        let d = Device::Cpu;
        for (b, c, o, h, w) in [(2, 3, 5, 7, 9), (1, 16, 8, 1, 4), (1, 4, 4, 12, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &d).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (o, c, 3, 3), &d).unwrap();
            let want = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
            let w9 = shifted_weights(&wt).unwrap();
            let got = conv3x3(&x, &w9).unwrap();
            assert_eq!(want.dims(), got.dims());
            let diff = crate::max_diff(want, got);
            assert!(diff < 1e-4, "{b}×{c}×{h}×{w} → {o}: {diff}");
            assert_eq!(crate::max_diff(unshifted_weights(&w9).unwrap(), wt), 0.0);
        }
    }
}
