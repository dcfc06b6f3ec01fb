//! Per-layer attention biases: the shared absolute-position bias plus each layer's learned
//! relative-position tables, written in one pass over the `[H, Lq, Lk]` buffer.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// A relative-position table (`[buckets, H]`, row-major) and the bucket of every (query, key)
/// pair of a square block starting at `offset` on both axes.
pub struct RelBlock<'a> {
    pub table: &'a [f32],
    pub index: &'a [u32],
    pub offset: usize,
    pub size: usize,
}

/// `abs` (`[H, Lq, Lk]` flattened) + each block's relative bias, plus a causal mask when asked.
/// Returns `[1, H, Lq, Lk]`.
pub fn layer_bias(
    abs: &[f32],
    heads: usize,
    lq: usize,
    lk: usize,
    blocks: &[RelBlock<'_>],
    causal: bool,
    device: &Device,
) -> Result<Tensor> {
    let mut out = abs.to_vec();
    out.par_chunks_mut(lq * lk)
        .enumerate()
        .for_each(|(h, head)| {
            for block in blocks {
                for i in 0..block.size {
                    let row = &mut head[(block.offset + i) * lk + block.offset..][..block.size];
                    let idx = &block.index[i * block.size..(i + 1) * block.size];
                    for (v, &b) in row.iter_mut().zip(idx) {
                        *v += block.table[b as usize * heads + h];
                    }
                }
            }
            if causal {
                for i in 0..lq {
                    for v in &mut head[i * lk + i + 1..(i + 1) * lk] {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
        });
    Tensor::from_vec(out, (1, heads, lq, lk), device)
}
