//! Multi-head attention in one CPU kernel: for each (item, head, block of query rows) the
//! scores `q·kᵀ`, the bias and mask, the softmax and `probs·v` run back to back on one core,
//! reading the heads straight out of the `[B, L, D]` projections and writing the output straight
//! into `[B, Lq, D]`. Nothing of size `[H, Lq, Lk]` is ever written, the score block stays in
//! the core's cache, and the heads run in parallel (candle ran the per-head products one after
//! another, each split over the cores, at a fifth of gemm's rate).

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu::disjoint::OutPtr;
use crate::cpu::softmax::{bias_row, softmax_row, AttnBias};

/// Query rows per task: a 256×916 score block and its probabilities (1.9 MB) stay in L2; larger
/// blocks than that gained nothing, smaller ones cost up to 40 % (measured with `mmbench`).
const ROWS: usize = 256;

struct FusedAttention<'a> {
    bias: &'a AttnBias<'a>,
    key_mask: Option<Vec<f32>>,
    head_scale: &'a [f32],
}

thread_local! {
    /// Per-thread score and probability blocks, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl CustomOp3 for FusedAttention<'_> {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = crate::network::conv::f32_slice(qs, ql)?;
        let k = crate::network::conv::f32_slice(ks, kl)?;
        let v = crate::network::conv::f32_slice(vs, vl)?;
        let (b, lq, d) = ql.shape().dims3()?;
        let (bk, lk, dk) = kl.shape().dims3()?;
        let bias = self.bias;
        let heads = bias.heads;
        if (bk, dk) != (b, d)
            || vl.shape() != kl.shape()
            || (bias.lq, bias.lk) != (lq, lk)
            || bias.abs.len() != heads * lq * lk
            || d % heads != 0
            || self.head_scale.len() != heads
        {
            candle_core::bail!(
                "fused attention: q {:?}, k {:?}, v {:?} and a bias of {heads}×{}×{} do not fit",
                ql.shape(),
                kl.shape(),
                vl.shape(),
                bias.lq,
                bias.lk
            );
        }
        bias.check_blocks()?;
        let dh = d / heads;
        let blocks = lq.div_ceil(ROWS);
        // Each head's keys transposed once, `[B, H, dh, Lk]`: gemm then reads them in place
        // instead of packing them again for every block of queries.
        let mut kt = vec![0f32; b * lk * d];
        kt.par_chunks_mut(dh * lk).enumerate().for_each(|(bh, t)| {
            let (item, h) = (bh / heads, bh % heads);
            for (j, key) in k[item * lk * d..(item + 1) * lk * d].chunks(d).enumerate() {
                for (c, &val) in key[h * dh..(h + 1) * dh].iter().enumerate() {
                    t[c * lk + j] = val;
                }
            }
        });
        let mut out = vec![0f32; b * lq * d];
        let out_ptr = OutPtr::new(&mut out);
        (0..b * heads * blocks).into_par_iter().for_each(|task| {
            let (item, h, blk) = (
                task / (heads * blocks),
                task / blocks % heads,
                task % blocks,
            );
            let r0 = blk * ROWS;
            let rows = ROWS.min(lq - r0);
            let mask = self
                .key_mask
                .as_ref()
                .map(|m| &m[item * lk..(item + 1) * lk]);
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < 2 * rows * lk {
                    s.resize(2 * rows * lk, 0.0);
                }
                let (scores, probs) = s.split_at_mut(rows * lk);
                let probs = &mut probs[..rows * lk];
                let q0 = &q[(item * lq + r0) * d + h * dh..];
                let kv0 = (item * lk) * d + h * dh;
                // SAFETY: the strides describe in-bounds views of q, k, v and the scratch
                // block (checked shapes above); the output block belongs to this task only.
                unsafe {
                    gemm::gemm(
                        rows,
                        lk,
                        dh,
                        scores.as_mut_ptr(),
                        1,
                        lk as isize,
                        false,
                        q0.as_ptr(),
                        1,
                        d as isize,
                        kt[(item * heads + h) * dh * lk..].as_ptr(),
                        1,
                        lk as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for r in 0..rows {
                    let i = r0 + r;
                    let row = &mut probs[r * lk..(r + 1) * lk];
                    bias_row(bias, h, i, row);
                    let valid = if bias.causal { i + 1 } else { lk };
                    softmax_row(&scores[r * lk..(r + 1) * lk], mask, valid, row);
                }
                // SAFETY: `probs` and `v` are in-bounds views by the shapes checked above, and
                // the rows this task writes in the output belong to it alone (`OutPtr`).
                unsafe {
                    gemm::gemm(
                        rows,
                        dh,
                        lk,
                        out_ptr.at((item * lq + r0) * d + h * dh),
                        1,
                        d as isize,
                        false,
                        probs.as_ptr(),
                        1,
                        lk as isize,
                        v[kv0..].as_ptr(),
                        1,
                        d as isize,
                        0.0,
                        self.head_scale[h],
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
        });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

/// `c_h · softmax(q_h·k_hᵀ + bias_h + mask)·v_h` for every head `h`, heads side by side:
/// `q` `[B, Lq, D]` (already scaled), `k`, `v` `[B, Lk, D]`, `key_mask` additive `[B, Lk]`,
/// `head_scale` NormFormer's `c_attn` `[H]`. Returns `[B, Lq, D]`. f32 CPU tensors only.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &AttnBias<'_>,
    key_mask: Option<&Tensor>,
    head_scale: &[f32],
) -> Result<Tensor> {
    let key_mask = match key_mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let op = FusedAttention {
        bias,
        key_mask,
        head_scale,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// `q_h·k_hᵀ` for every head, `[H, Lq, Lk]` on the host: the absolute position biases, built
/// once per forward pass and read by every layer's kernel. `q` `[1, Lq, D]`, `k` `[1, Lk, D]`.
pub fn head_scores(q: &Tensor, k: &Tensor, heads: usize) -> Result<Vec<f32>> {
    let (_, lq, d) = q.dims3()?;
    let (_, lk, _) = k.dims3()?;
    let (q, k) = (
        q.flatten_all()?.to_vec1::<f32>()?,
        k.flatten_all()?.to_vec1::<f32>()?,
    );
    if q.len() != lq * d || k.len() != lk * d || d % heads != 0 {
        candle_core::bail!("head scores: one item of a whole number of heads only");
    }
    let dh = d / heads;
    let mut out = vec![0f32; heads * lq * lk];
    out.par_chunks_mut(lq * lk).enumerate().for_each(|(h, o)| {
        // SAFETY: row-major views of q, k (one head's columns) and this head's output block.
        unsafe {
            gemm::gemm(
                lq,
                lk,
                dh,
                o.as_mut_ptr(),
                1,
                lk as isize,
                false,
                q[h * dh..].as_ptr(),
                1,
                d as isize,
                k[h * dh..].as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::bias::RelBlock;
    use candle_core::Device;

    /// The same attention with candle's operations and a materialised bias.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &AttnBias<'_>,
        mask: Option<&Tensor>,
        c: &[f32],
    ) -> Tensor {
        let d = Device::Cpu;
        let h = bias.heads;
        let split = |x: &Tensor| crate::network::heads::split_heads(x, h).unwrap();
        let s = split(q).matmul(&split(k).t().unwrap()).unwrap();
        let mut s = s.broadcast_add(&bias.to_tensor(&d).unwrap()).unwrap();
        if let Some(m) = mask {
            let (b, lk) = m.dims2().unwrap();
            s = s.broadcast_add(&m.reshape((b, 1, 1, lk)).unwrap()).unwrap();
        }
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        let c = Tensor::from_slice(c, (1, h, 1, 1), &d).unwrap();
        let o = p.matmul(&split(v)).unwrap().broadcast_mul(&c).unwrap();
        let (b, lq, dm) = q.dims3().unwrap();
        o.transpose(1, 2).unwrap().reshape((b, lq, dm)).unwrap()
    }

    #[test]
    fn matches_candle_ops_with_relative_blocks_masks_and_causality() {
        let d = Device::Cpu;
        let (b, h, dh) = (2, 3, 8);
        let c = [0.5f32, 1.0, -2.0];
        let t1: Vec<f32> = (0..5 * h).map(|v| v as f32 * 0.1).collect();
        let t2: Vec<f32> = (0..4 * h).map(|v| -(v as f32) * 0.2).collect();
        // Square self-attention over more rows than one block, and a short query over many keys.
        for (lq, lk) in [(ROWS + 7, ROWS + 7), (3, 2 * ROWS + 5)] {
            let n = lk.min(lq) / 2;
            let i1: Vec<u32> = (0..n * n).map(|v| (v % 5) as u32).collect();
            let i2: Vec<u32> = (0..4).map(|v| (v % 4) as u32).collect();
            let abs: Vec<f32> = Tensor::randn(0f32, 1.0, h * lq * lk, &d)
                .unwrap()
                .to_vec1()
                .unwrap();
            let q = Tensor::randn(0f32, 1.0, (b, lq, h * dh), &d).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, lk, h * dh), &d).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, lk, h * dh), &d).unwrap();
            let mut m = vec![0f32; b * lk];
            m[lk - 2] = f32::MIN;
            m[lk - 1] = f32::MIN;
            let m = Tensor::from_vec(m, (b, lk), &d).unwrap();
            for causal in [false, true] {
                if causal && lq != lk {
                    continue;
                }
                let bias = AttnBias {
                    abs: &abs,
                    heads: h,
                    lq,
                    lk,
                    blocks: vec![
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
                            size: 2,
                        },
                    ],
                    causal,
                };
                for mask in [None, Some(&m)] {
                    let want = reference(&q, &k, &v, &bias, mask, &c);
                    let got = fused_attention(&q, &k, &v, &bias, mask, &c).unwrap();
                    let diff = crate::max_diff(want, got);
                    assert!(diff < 1e-5, "{lq}×{lk} causal {causal}: {diff}");
                }
            }
        }
    }

    #[test]
    fn head_scores_equal_per_head_matmuls() {
        let d = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 5, 12), &d).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 7, 12), &d).unwrap();
        let split = |x: &Tensor| crate::network::heads::split_heads(x, 3).unwrap();
        let want = split(&q).matmul(&split(&k).t().unwrap()).unwrap();
        let got = Tensor::from_vec(head_scores(&q, &k, 3).unwrap(), (1, 3, 5, 7), &d).unwrap();
        assert!(crate::max_diff(want, got) < 1e-5);
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let d = Device::Cpu;
        let q = Tensor::zeros((1, 4, 6), candle_core::DType::F32, &d).unwrap();
        let abs = vec![0f32; 2 * 4 * 4];
        let bias = AttnBias {
            abs: &abs,
            heads: 2,
            lq: 4,
            lk: 4,
            blocks: vec![],
            causal: false,
        };
        let k = Tensor::zeros((1, 5, 6), candle_core::DType::F32, &d).unwrap();
        let err = fused_attention(&q, &k, &k, &bias, None, &[1.0, 1.0]).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        // A bucket index past its table is refused before anything is gathered.
        let table = [0f32; 2 * 3];
        let index = [0u32, 1, 2, 3];
        let bias = AttnBias {
            blocks: vec![RelBlock {
                table: &table,
                index: &index,
                offset: 1,
                size: 2,
            }],
            ..bias
        };
        let err = fused_attention(&q, &q, &q, &bias, None, &[1.0, 1.0]).unwrap_err();
        assert!(err.to_string().contains("does not fit its table"), "{err}");
    }
}
