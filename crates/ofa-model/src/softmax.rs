//! Fused `softmax(scores + bias + mask)` over the last axis for the CPU backend: one read of
//! the scores and the bias, one write, instead of candle's separate add and softmax passes
//! (a `[16, 916, 916]` attention map is 54 MB; each extra pass costs ~15 ms on 2 cores).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `scores`: `[B, H, Lq, Lk]`; `bias`: `[1, H, Lq, Lk]`; `key_mask`: additive, `[B, Lk]`.
struct BiasedSoftmax {
    key_mask: Option<Vec<f32>>,
}

/// exp(x) for x ≤ 0 (Cephes `expf` polynomial, ~1 ulp), vectorisable; exactly 0 below the
/// smallest normal result, like the libm call it replaces.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.0);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

#[inline(always)]
fn row_generic(scores: &[f32], bias: &[f32], mask: Option<&[f32]>, out: &mut [f32]) {
    match mask {
        Some(m) => {
            for (((o, &s), &b), &k) in out.iter_mut().zip(scores).zip(bias).zip(m) {
                *o = (s + b) + k;
            }
        }
        None => {
            for ((o, &s), &b) in out.iter_mut().zip(scores).zip(bias) {
                *o = s + b;
            }
        }
    }
    // Lane-wise max and sum so the compiler can keep them in vector registers.
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = out.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(lanes.iter())
        .copied()
        .fold(f32::NEG_INFINITY, |a, v| if v > a { v } else { a });
    for o in out.iter_mut() {
        *o = exp_nonpositive(*o - max);
    }
    let mut acc = [0f32; LANES];
    let mut chunks = out.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let sum: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(scores: &[f32], bias: &[f32], mask: Option<&[f32]>, out: &mut [f32]) {
    row_generic(scores, bias, mask, out)
}

fn row(scores: &[f32], bias: &[f32], mask: Option<&[f32]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { row_avx2(scores, bias, mask, out) };
    }
    row_generic(scores, bias, mask, out)
}

impl CustomOp2 for BiasedSoftmax {
    fn name(&self) -> &'static str {
        "biased-softmax"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        sl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(s), CpuStorage::F32(b)) = (s, b) else {
            candle_core::bail!("biased-softmax: f32 only")
        };
        let (Some((s0, s1)), Some((b0, b1))) = (sl.contiguous_offsets(), bl.contiguous_offsets())
        else {
            candle_core::bail!("biased-softmax: contiguous inputs only")
        };
        let (s, b) = (&s[s0..s1], &b[b0..b1]);
        let (batch, heads, lq, lk) = sl.shape().dims4()?;
        if bl.shape().dims4()? != (1, heads, lq, lk) {
            candle_core::bail!(
                "biased-softmax: bias {:?} does not fit scores {:?}",
                bl.shape(),
                sl.shape()
            );
        }
        let per_item = heads * lq * lk;
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(lk).enumerate().for_each(|(r, o)| {
            let item = r * lk / per_item;
            let within = r * lk % per_item;
            let mask = self
                .key_mask
                .as_ref()
                .map(|m| &m[item * lk..(item + 1) * lk]);
            row(&s[r * lk..(r + 1) * lk], &b[within..within + lk], mask, o);
        });
        let _ = batch;
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }
}

/// `softmax(scores + bias + key_mask)` on the last axis. Falls back to candle ops off the CPU.
pub fn biased_softmax(scores: &Tensor, bias: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
    if !scores.device().is_cpu() || bias.dim(0)? != 1 {
        let mut x = scores.broadcast_add(bias)?;
        if let Some(m) = key_mask {
            let (b, lk) = m.dims2()?;
            x = x.broadcast_add(&m.reshape((b, 1, 1, lk))?)?;
        }
        return candle_nn::ops::softmax_last_dim(&x);
    }
    let key_mask = match key_mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    scores
        .contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &BiasedSoftmax { key_mask })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_ops() {
        let d = Device::Cpu;
        let s = (Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &d).unwrap())
            .contiguous()
            .unwrap();
        let b = Tensor::randn(0f32, 1.0, (1, 3, 5, 7), &d).unwrap();
        let m = Tensor::new(&[[0f32, 0., 0., 0., 0., f32::MIN, f32::MIN], [0.; 7]], &d).unwrap();
        let want = candle_nn::ops::softmax_last_dim(
            &s.broadcast_add(&b)
                .unwrap()
                .broadcast_add(&m.reshape((2, 1, 1, 7)).unwrap())
                .unwrap(),
        )
        .unwrap();
        let got = biased_softmax(&s, &b, Some(&m)).unwrap();
        let diff: f32 = (want - &got)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        let masked: f32 = got
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(3, 5, 2)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(masked, 0.0);
    }

    #[test]
    fn exp_is_accurate() {
        for i in 0..10_000 {
            let x = -(i as f32) * 0.0087;
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!(
                (a - b).abs() <= 2.0 * f32::EPSILON * b.max(f32::MIN_POSITIVE),
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
