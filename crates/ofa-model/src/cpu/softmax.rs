//! Attention biases and probabilities: `softmax(scores + (abs + rel) + key_mask)` with the
//! causal mask. On the CPU one row at a time, the per-layer bias (shared absolute part plus the
//! layer's relative tables) gathered on the fly instead of written out (a `[16, 916, 916]` map
//! is 54 MB); elsewhere with candle's operations on a materialised bias.

use candle_core::{Result, Tensor};

use crate::cpu::bias::{layer_bias, RelBlock};

/// An attention bias `[1, H, Lq, Lk]` described rather than stored: the absolute part (shared
/// by every layer), relative-position blocks, and whether keys after the query are masked.
pub struct AttnBias<'a> {
    pub abs: &'a [f32],
    pub heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub blocks: Vec<RelBlock<'a>>,
    pub causal: bool,
}

impl AttnBias<'_> {
    /// Whether every block fits the bias and every bucket index its table (the fused kernel
    /// gathers without bounds checks).
    pub fn check_blocks(&self) -> Result<()> {
        for b in &self.blocks {
            let buckets = b.table.len() / self.heads.max(1);
            let fits = b.offset + b.size <= self.lq.min(self.lk)
                && b.index.len() == b.size * b.size
                && b.table.len() == buckets * self.heads
                && b.index.iter().all(|&i| (i as usize) < buckets);
            if !fits {
                candle_core::bail!(
                    "attention bias: a relative block of {} at {} does not fit its table or the {}×{} bias",
                    b.size,
                    b.offset,
                    self.lq,
                    self.lk
                );
            }
        }
        Ok(())
    }

    /// The bias as a tensor, for backends without the fused kernel.
    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<Tensor> {
        layer_bias(
            self.abs,
            self.heads,
            self.lq,
            self.lk,
            &self.blocks,
            self.causal,
            device,
        )
    }
}

/// exp(x) for x ≤ 0 (Cephes `expf` polynomial, ~1 ulp), vectorisable; exactly 0 below the
/// smallest normal result, like the libm call it replaces.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
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
    // 2^n built from n's bits: adding 1.5·2^23 leaves the integer n in the low mantissa bits,
    // where `n as i32` (a saturating cast) would keep the loop from vectorising.
    let n_bits = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    let scale = f32::from_bits(((n_bits + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// One row: `out = softmax(s + bias)`, where `out` already holds the bias.
#[inline(always)]
fn softmax_row_generic(scores: &[f32], mask: Option<&[f32]>, valid: usize, out: &mut [f32]) {
    match mask {
        Some(m) => {
            for ((o, &s), &k) in out.iter_mut().zip(scores).zip(m) {
                *o = (s + *o) + k;
            }
        }
        None => {
            for (o, &s) in out.iter_mut().zip(scores) {
                *o += s; // commutative: same bits as s + bias
            }
        }
    }
    let (live, masked) = out.split_at_mut(valid);
    masked.fill(0.0);
    // Lane-wise max and sum so the compiler can keep them in vector registers.
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = live.chunks_exact(LANES);
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
    for o in live.iter_mut() {
        *o = exp_nonpositive(*o - max);
    }
    let mut acc = [0f32; LANES];
    let mut chunks = live.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let sum: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    for o in live.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(scores: &[f32], mask: Option<&[f32]>, valid: usize, out: &mut [f32]) {
    softmax_row_generic(scores, mask, valid, out)
}

/// `out = softmax(scores + out + mask)` over the first `valid` entries (0 after them), where
/// `out` holds the bias on entry.
pub(crate) fn softmax_row(scores: &[f32], mask: Option<&[f32]>, valid: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { softmax_row_avx2(scores, mask, valid, out) };
    }
    softmax_row_generic(scores, mask, valid, out)
}

/// Row `i` of head `h` of the bias: the absolute part, then (as the reference adds it into the
/// bias) the relative part of the block the row falls in. The blocks must be
/// [`valid`](AttnBias::check_blocks).
pub(crate) fn bias_row(bias: &AttnBias<'_>, h: usize, i: usize, out: &mut [f32]) {
    let (lq, lk, heads) = (bias.lq, bias.lk, bias.heads);
    out.copy_from_slice(&bias.abs[(h * lq + i) * lk..(h * lq + i + 1) * lk]);
    for block in &bias.blocks {
        if i >= block.offset && i < block.offset + block.size {
            let bi = i - block.offset;
            let idx = &block.index[bi * block.size..(bi + 1) * block.size];
            let buckets = block.table.len() / heads;
            let table = &block.table[h * buckets..(h + 1) * buckets];
            let out = &mut out[block.offset..block.offset + block.size];
            // SAFETY: `check_blocks` found every index inside its table.
            unsafe { gather_add(out, idx, table) };
        }
    }
}

/// `out[j] += table[idx[j]]`, every index in bounds.
#[inline(always)]
unsafe fn gather_add_generic(out: &mut [f32], idx: &[u32], table: &[f32]) {
    for (v, &b) in out.iter_mut().zip(idx) {
        *v += *table.get_unchecked(b as usize);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_add_avx512(out: &mut [f32], idx: &[u32], table: &[f32]) {
    // Compiled with AVX-512 the loop becomes 16-wide `vgatherdps`.
    gather_add_generic(out, idx, table)
}

unsafe fn gather_add(out: &mut [f32], idx: &[u32], table: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return gather_add_avx512(out, idx, table);
    }
    gather_add_generic(out, idx, table)
}

/// An attention bias as the device wants it: described for the fused CPU kernel, or
/// materialised on the GPU (`[1, H, Lq, Lk]`, in the scores' dtype) where candle's kernels add it.
pub enum Bias<'a> {
    Fused(AttnBias<'a>),
    Dense(Tensor),
}

/// Attention probabilities `softmax(scores · scale + bias + key_mask)` with candle's operations
/// (the GPU's path; the CPU runs the whole attention in `attention_cpu`). `scores`
/// `[B, H, Lq, Lk]`, `key_mask` additive `[B, Lk]`.
pub fn attention_probs(
    scores: &Tensor,
    scale: f64,
    bias: &Bias<'_>,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    match bias {
        Bias::Fused(b) => dense_probs(scores, scale, &b.to_tensor(scores.device())?, key_mask),
        Bias::Dense(t) => dense_probs(scores, scale, t, key_mask),
    }
}

fn dense_probs(
    scores: &Tensor,
    scale: f64,
    bias: &Tensor,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if scores.device().is_cuda() {
        return crate::cuda::ops::attention_probs(scores, bias, key_mask, scale);
    }
    let scores = match scale {
        1.0 => scores.clone(),
        s => (scores * s)?,
    };
    let mut x = scores.broadcast_add(&bias.to_dtype(scores.dtype())?)?;
    if let Some(m) = key_mask {
        let (b, lk) = m.dims2()?;
        x = x.broadcast_add(&m.reshape((b, 1, 1, lk))?.to_dtype(x.dtype())?)?;
    }
    candle_nn::ops::softmax_last_dim(&x)
}

#[cfg(test)]
mod tests {
    use super::*;

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
