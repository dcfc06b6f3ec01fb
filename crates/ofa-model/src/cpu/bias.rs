//! Per-layer attention biases: the shared absolute-position bias plus each layer's learned
//! relative-position tables, written in one pass over the `[H, Lq, Lk]` buffer.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// A relative-position table (`[H, buckets]`, row-major: each head's buckets side by side) and
/// the bucket of every (query, key) pair of a square block starting at `offset` on both axes.
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
                let buckets = block.table.len() / heads;
                let table = &block.table[h * buckets..(h + 1) * buckets];
                for i in 0..block.size {
                    let row = &mut head[(block.offset + i) * lk + block.offset..][..block.size];
                    let idx = &block.index[i * block.size..(i + 1) * block.size];
                    for (v, &b) in row.iter_mut().zip(idx) {
                        *v += table[b as usize];
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

/// On a GPU: a relative-position table `[buckets, H]` gathered at `index` (`size²` bucket
/// ids, a u32 tensor) → `[H, size, size]`.
pub fn rel_block_tensor(table: &Tensor, index: &Tensor, size: usize) -> Result<Tensor> {
    let (_, heads) = table.dims2()?;
    table
        .index_select(index, 0)?
        .t()?
        .contiguous()?
        .reshape((heads, size, size))
}

/// Square `[H, s, s]` blocks on the diagonal of an `[H, L, L]` tensor, zeros elsewhere.
pub fn block_diagonal(blocks: &[Tensor]) -> Result<Tensor> {
    let sizes: Vec<usize> = blocks.iter().map(|b| b.dim(1)).collect::<Result<_>>()?;
    let l: usize = sizes.iter().sum();
    let mut rows = Vec::with_capacity(blocks.len());
    let mut before = 0;
    for (block, &s) in blocks.iter().zip(&sizes) {
        let (h, dtype, device) = (block.dim(0)?, block.dtype(), block.device());
        let mut parts = Vec::with_capacity(3);
        if before > 0 {
            parts.push(Tensor::zeros((h, s, before), dtype, device)?);
        }
        parts.push(block.clone());
        let after = l - before - s;
        if after > 0 {
            parts.push(Tensor::zeros((h, s, after), dtype, device)?);
        }
        rows.push(Tensor::cat(&parts, 2)?);
        before += s;
    }
    Tensor::cat(&rows, 1)
}

/// `[m, m]`: 0 on and below the diagonal, -inf above (keys after the query).
pub fn causal_mask(m: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..m * m)
        .map(|k| {
            if k % m > k / m {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(data, (m, m), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_blocks_equal_the_host_bias() {
        let d = Device::Cpu;
        let (h, n, t) = (3, 4, 3);
        let l = n + t;
        let abs: Vec<f32> = (0..h * l * l).map(|v| (v % 13) as f32 * 0.1).collect();
        let t1: Vec<f32> = (0..5 * h).map(|v| v as f32 * 0.3).collect();
        let i1: Vec<u32> = (0..n * n).map(|v| (v % 5) as u32).collect();
        let t2: Vec<f32> = (0..4 * h).map(|v| -(v as f32)).collect();
        let i2: Vec<u32> = (0..t * t).map(|v| (v % 4) as u32).collect();
        let blocks = [
            RelBlock {
                table: &t1,
                index: &i1,
                offset: 0,
                size: n,
            },
            RelBlock {
                table: &t2,
                index: &i2,
                offset: n,
                size: t,
            },
        ];
        let want = layer_bias(&abs, h, l, l, &blocks, false, &d).unwrap();
        // Host tables are head-major; the tensors `[buckets, H]`, as in the checkpoint.
        let table = |v: &[f32], rows| {
            Tensor::from_vec(v.to_vec(), (h, rows), &d)
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let index = |v: &[u32]| Tensor::new(v, &d).unwrap();
        let rel = block_diagonal(&[
            rel_block_tensor(&table(&t1, 5), &index(&i1), n).unwrap(),
            rel_block_tensor(&table(&t2, 4), &index(&i2), t).unwrap(),
        ])
        .unwrap();
        let got = Tensor::from_vec(abs.clone(), (1, h, l, l), &d)
            .unwrap()
            .broadcast_add(&rel)
            .unwrap();
        assert_eq!(crate::max_diff(want, got), 0.0);

        let causal = layer_bias(&abs, h, l, l, &[], true, &d).unwrap();
        let got = Tensor::from_vec(abs, (1, h, l, l), &d)
            .unwrap()
            .broadcast_add(&causal_mask(l, DType::F32, &d).unwrap())
            .unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            causal.flatten_all().unwrap().to_vec1().unwrap(),
            got.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
    }
}
