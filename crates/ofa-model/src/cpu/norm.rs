//! Layer normalisation, on the CPU one row at a time in L1 with the sums kept 16 lanes wide.
//! candle's CPU kernel sums each row in one serial chain (one add per element, each waiting
//! for the last): ~4 ms for the encoder's 916 × 4096 feed-forward norm, ~0.8 ms for a 1024-wide
//! one. Mean first, then the squared deviations, as torch computes it. The feed-forward block's
//! exact GELU can run in the same pass (`forward_gelu`), saving a trip through memory.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
    /// Weight and bias on the host, for the CPU kernel (empty off the CPU).
    host: Option<(Vec<f32>, Vec<f32>)>,
    eps: f32,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let inner = candle_nn::layer_norm(dim, eps, vb)?;
        let host = match (inner.weight().device().is_cpu(), inner.bias()) {
            (true, Some(b)) => Some((
                inner.weight().to_dtype(DType::F32)?.to_vec1()?,
                b.to_dtype(DType::F32)?.to_vec1()?,
            )),
            _ => None,
        };
        Ok(Self {
            inner,
            host,
            eps: eps as f32,
        })
    }

    /// Weight, bias and epsilon, for kernels that fold the norm into a wider pass.
    pub fn parts(&self) -> Option<(&Tensor, &Tensor, f64)> {
        Some((self.inner.weight(), self.inner.bias()?, f64::from(self.eps)))
    }

    fn kernel(&self, x: &Tensor, gelu: bool) -> Option<RowNorm<'_>> {
        let (w, b) = self.host.as_ref()?;
        let fits = crate::network::kernels::fused(x.device())
            && x.dtype() == DType::F32
            && x.dims().last() == Some(&w.len());
        fits.then_some(RowNorm {
            w,
            b,
            eps: self.eps,
            gelu,
        })
    }

    /// `LN(gelu(x))` with the exact GELU, in one pass on the CPU.
    pub fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernel(x, true) {
            Some(op) => x.contiguous()?.apply_op1_no_bwd(&op),
            None => self.inner.forward(&crate::cpu::gelu::gelu_erf(x)?),
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernel(x, false) {
            Some(op) => x.contiguous()?.apply_op1_no_bwd(&op),
            None => self.inner.forward(x),
        }
    }
}

struct RowNorm<'a> {
    w: &'a [f32],
    b: &'a [f32],
    eps: f32,
    gelu: bool,
}

const LANES: usize = 16;

/// Σ f(v) over `x`, in `LANES` independent sums (vectorised; no serial chain).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl RowNorm<'_> {
    fn row(&self, x: &[f32], out: &mut [f32]) {
        let src: &[f32] = if self.gelu {
            crate::cpu::gelu::gelu_slice(x, out);
            out
        } else {
            x
        };
        let n = src.len() as f32;
        let mean = lane_sum(src, |v| v) / n;
        let var = lane_sum(src, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        if self.gelu {
            for ((o, &w), &b) in out.iter_mut().zip(self.w).zip(self.b) {
                *o = (*o - mean) * inv_std * w + b;
            }
        } else {
            for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(self.w).zip(self.b) {
                *o = (v - mean) * inv_std * w + b;
            }
        }
    }
}

impl CustomOp1 for RowNorm<'_> {
    fn name(&self) -> &'static str {
        "layer-norm-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::network::conv::f32_slice(s, l)?;
        let d = self.w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, x)| self.row(x, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Layer norm of each row in f64.
    fn reference(x: &Tensor, w: &[f32], b: &[f32]) -> Tensor {
        let (rows, dim) = x.dims2().unwrap();
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let mut out = Vec::with_capacity(v.len());
        for r in v.chunks(dim) {
            let mean = r.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            let var = r
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / dim as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for ((&v, &w), &b) in r.iter().zip(w).zip(b) {
                out.push(((f64::from(v) - mean) * inv * f64::from(w) + f64::from(b)) as f32);
            }
        }
        Tensor::from_vec(out, (rows, dim), x.device()).unwrap()
    }

    #[test]
    fn matches_an_f64_layer_norm_with_and_without_gelu() {
        let d = Device::Cpu;
        for dim in [7, 16, 1024, 4101] {
            let w = Tensor::randn(1f32, 0.2, dim, &d).unwrap();
            let b = Tensor::randn(0f32, 0.2, dim, &d).unwrap();
            let (wh, bh) = (w.to_vec1().unwrap(), b.to_vec1().unwrap());
            let vb = VarBuilder::from_tensors(
                [("weight".to_string(), w), ("bias".to_string(), b)].into(),
                DType::F32,
                &d,
            );
            let ln = LayerNorm::new(dim, 1e-5, vb).unwrap();
            // Rows with a large common offset, where a one-pass variance loses digits (candle's
            // is off by ~1e-4 here); f32 rounding of the inputs alone allows a few 1e-6.
            let x = (Tensor::randn(0f32, 3.0, (5, dim), &d).unwrap() + 40.0).unwrap();
            let diff = crate::max_diff(reference(&x, &wh, &bh), ln.forward(&x).unwrap());
            assert!(diff < 2e-5, "{dim}: {diff}");
            let want = reference(&x.gelu_erf().unwrap(), &wh, &bh);
            let diff = crate::max_diff(want, ln.forward_gelu(&x).unwrap());
            assert!(diff < 2e-5, "{dim} after GELU: {diff}");
        }
    }
}
