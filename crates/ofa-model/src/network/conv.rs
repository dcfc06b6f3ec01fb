//! Convolution as one GEMM per batch: im2col straight into the `[C·k·k, OH·OW]` layout, so the
//! product with the `[O, C·k·k]` weights is already NCHW. candle's CPU convolution reaches
//! 40–70 GFLOP/s here against gemm's ~290 (single-threaded im2col, then a layout copy).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
}

impl Im2Col {
    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.padding - self.k) / self.stride + 1
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-nchw"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.k, self.stride, self.padding);
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let plane = oh * ow;
        let mut out = vec![0f32; b * c * k * k * plane];
        // One (image, channel) pair per task: k·k rows of the column matrix.
        out.par_chunks_mut(k * k * plane)
            .enumerate()
            .for_each(|(bc, rows)| {
                let src = &x[bc * h * w..(bc + 1) * h * w];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut rows[(ky * k + kx) * plane..(ky * k + kx + 1) * plane];
                        for oy in 0..oh {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let dst = &mut row[oy * ow..(oy + 1) * ow];
                            if iy < 0 || iy >= h as isize {
                                continue; // stays zero: padding
                            }
                            let src_row = &src[iy as usize * w..(iy as usize + 1) * w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix >= 0 && ix < w as isize {
                                    *d = src_row[ix as usize];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c * k * k, plane))))
    }
}

/// `x` `[B, C, H, W]` ⊛ `weight` `[O, C, k, k]` (no bias, no dilation, one group) →
/// `[B, O, OH, OW]`. Uses candle's convolution off the CPU.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let (o, c, k, _) = weight.dims4()?;
        let (b, _, h, w) = x.dims4()?;
        let out = |n: usize| (n + 2 * padding - k) / stride + 1;
        let cols = crate::cuda::ops::im2col(x, k, stride, padding)?;
        let wm = weight.reshape((o, c * k * k))?;
        return wm
            .broadcast_left(b)?
            .matmul(&cols)?
            .reshape((b, o, out(h), out(w)));
    }
    if !crate::network::kernels::fused(x.device()) {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let (o, c, k, _) = weight.dims4()?;
    let (b, _, h, w) = x.dims4()?;
    let op = Im2Col { k, stride, padding };
    let (oh, ow) = (op.out_size(h), op.out_size(w));
    let wm = weight.reshape((o, c * k * k))?;
    // One image at a time: the column matrix of a 120×120 stage is 33 MB per image, and a
    // batch-wide one would not stay in cache.
    let per_image = (0..b)
        .map(|i| {
            let cols = x.narrow(0, i, 1)?.contiguous()?.apply_op1_no_bwd(&op)?;
            wm.matmul(&cols.squeeze(0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&per_image, 0)?.reshape((b, o, oh, ow))
}

/// `relu(x + bias[c] (+ residual))` over NCHW in one parallel pass, instead of candle's
/// separate broadcast add, add and ReLU passes over the ResNet's largest tensors.
struct BiasAct {
    bias: Vec<f32>,
    relu: bool,
}

impl BiasAct {
    fn apply(&self, x: &[f32], residual: Option<&[f32]>, plane: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        let channels = self.bias.len();
        out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
            let b = self.bias[i % channels];
            let src = &x[i * plane..(i + 1) * plane];
            match residual {
                Some(r) => {
                    let r = &r[i * plane..(i + 1) * plane];
                    for ((o, &v), &s) in o.iter_mut().zip(src).zip(r) {
                        *o = (v + b) + s;
                    }
                }
                None => {
                    for (o, &v) in o.iter_mut().zip(src) {
                        *o = v + b;
                    }
                }
            }
            if self.relu {
                for o in o.iter_mut() {
                    *o = o.max(0.0);
                }
            }
        });
        out
    }
}

/// The elements of a contiguous f32 CPU tensor; the custom CPU kernels accept nothing else.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("custom CPU kernel: contiguous f32 input only"),
    }
}

impl CustomOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l.shape().dims4()?;
        Ok((
            CpuStorage::F32(self.apply(f32_slice(s, l)?, None, h * w)),
            l.shape().clone(),
        ))
    }
}

impl candle_core::CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-residual-act"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l.shape() != rl.shape() {
            candle_core::bail!(
                "bias-act: residual {:?} does not match {:?}",
                rl.shape(),
                l.shape()
            );
        }
        let (_, _, h, w) = l.shape().dims4()?;
        let out = self.apply(f32_slice(s, l)?, Some(f32_slice(r, rl)?), h * w);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x + bias` per channel (axis 1: NCHW, or rows `[N, C]`), then `+ residual` if given, then
/// ReLU if asked.
pub fn bias_act(
    x: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return crate::cuda::ops::channel_op(x, 1, bias, residual, false, relu);
    }
    if !crate::network::kernels::fused(x.device()) || x.rank() != 4 {
        let mut shape = vec![1; x.rank()];
        shape[1] = bias.dim(0)?;
        let mut y = x.broadcast_add(&bias.reshape(shape)?)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = BiasAct {
        bias: bias.to_vec1()?,
        relu,
    };
    let x = x.contiguous()?;
    match residual {
        Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op),
        None => x.apply_op1_no_bwd(&op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bias_act_matches_candle_ops() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &d).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &d).unwrap();
        let b = Tensor::new(&[0.5f32, -1.0, 2.0], &d).unwrap();
        let plain = x.broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap()).unwrap();
        let cases = [
            (None, false, plain.clone()),
            (None, true, plain.relu().unwrap()),
            (Some(&r), true, (plain + &r).unwrap().relu().unwrap()),
        ];
        for (res, relu, want) in cases {
            let got = bias_act(&x, &b, res, relu).unwrap();
            let diff = crate::max_diff(want, got);
            assert_eq!(diff, 0.0, "residual {} relu {relu}", res.is_some());
        }
    }

    #[test]
    fn matches_candle_convolution() {
        let d = Device::Cpu;
        for (k, s, p, hw) in [(3, 1, 1, 9), (3, 2, 1, 10), (7, 2, 3, 15), (1, 1, 0, 4)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, hw, hw + 1), &d).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (5, 3, k, k), &d).unwrap();
            let want = x.conv2d(&wt, p, s, 1, 1).unwrap();
            let got = conv2d(&x, &wt, s, p).unwrap();
            assert_eq!(want.dims(), got.dims());
            let diff = crate::max_diff(want, got);
            assert!(diff < 1e-4, "k{k} s{s} p{p}: {diff}");
        }
    }
}
