//! Cross-attention of a few queries over many keys, with the key and value projections folded
//! into the queries. The decoder's ~15 tokens attend to ~916 encoder states per layer; projecting
//! all 916 states to keys and values (2·916·D² multiply-adds) costs ~4× more than
//! - scores `q_h·(H·W_kₕᵀ + b_k)ᵀ = (q_h·W_kₕ)·Hᵀ + q_h·b_kₕ`, where the last term is the same
//!   for every key of a query and so cancels in the softmax, and
//! - outputs `P_h·(H·W_vₕᵀ + b_v) = (P_h·H)·W_vₕᵀ + b_vₕ`, as each row of `P_h` sums to one,
//!
//! which cost 2·(H·M)·D·Lk each. Equal in exact arithmetic; in f32 the sums run in another
//! order, a difference of the order of 1e-7 relative.

use candle_core::{Result, Tensor};

use crate::cpu::softmax::{attention_probs, Bias};
use crate::network::heads::split_heads;

/// Whether folding pays, decided by the model's shape rather than the batch, so a text's scores
/// do not depend, even in the last bits, on the texts batched with it: heads·32 queries well
/// under `D` (OFA-large, not the tiny test model) and many more keys than queries. Only a batch
/// padded past 128 prompt tokens (rare in entailment; folded, it would cost more) is unfolded.
/// Or forced, for tests.
pub fn pays(heads: usize, lq: usize, lk: usize, d: usize) -> bool {
    (2 * heads * 32 <= d && lq <= 128 && lk >= 4 * lq) || crate::network::kernels::folded_forced()
}

/// The key and value projections' parameters: `wk`, `wv` as each head's rows, `[1, H, dh, D]`
/// (`Linear::head_weights`), `v`'s bias (the key bias cancels).
pub struct KeyValueWeights<'a> {
    pub wk: &'a Tensor,
    pub wv: &'a Tensor,
    pub bv: Option<&'a Tensor>,
}

/// `softmax(q_h·k_hᵀ + bias + mask)·v_h` per head, `[B, H, Lq, dh]`, with `k`, `v` the
/// projections of `kv`, never computed. `q`: `[B, Lq, D]`, already scaled; `kv`: `[B, Lk, D]`.
pub fn folded_cross_attention(
    q: &Tensor,
    kv: &Tensor,
    weights: &KeyValueWeights<'_>,
    heads: usize,
    bias: &Bias<'_>,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let KeyValueWeights { wk, wv, bv } = *weights;
    let (b, lq, d) = q.dims3()?;
    let lk = kv.dim(1)?;
    let dh = d / heads;
    // q_h·W_kₕ: [B, H, Lq, dh] × [1, H, dh, D] → [B, H, Lq, D].
    let qk = split_heads(q, heads)?.broadcast_matmul(wk)?;
    let scores = qk
        .reshape((b, heads * lq, d))?
        .matmul(&kv.t()?)?
        .reshape((b, heads, lq, lk))?;
    let probs = attention_probs(&scores, 1.0, bias, mask)?;
    // (P_h·H)·W_vₕᵀ: [B, H, Lq, D] × [1, H, D, dh] → [B, H, Lq, dh].
    let u = probs
        .reshape((b, heads * lq, lk))?
        .matmul(kv)?
        .reshape((b, heads, lq, d))?;
    let o = u.broadcast_matmul(&wv.transpose(2, 3)?)?;
    match bv {
        Some(bv) => o.broadcast_add(&bv.reshape((1, heads, 1, dh))?),
        None => Ok(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::softmax::AttnBias;
    use candle_core::Device;

    #[test]
    fn folds_ofa_large_prompts_whatever_their_length_up_to_128() {
        assert!(pays(16, 1, 916, 1024) && pays(16, 128, 916, 1024));
        assert!(!pays(16, 129, 916, 1024));
        assert!(
            !pays(4, 3, 900, 64),
            "the tiny model never folds unless forced"
        );
    }

    #[test]
    fn equals_attention_over_projected_keys_and_values() {
        let d = Device::Cpu;
        let (b, heads, dh, lq, lk) = (2, 4, 8, 3, 40);
        let dm = heads * dh;
        let r = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &d).unwrap();
        let (q, kv) = (r(&[b, lq, dm]), r(&[b, lk, dm]));
        let (wk, wv) = (r(&[dm, dm]), r(&[dm, dm]));
        let (bk, bv) = (r(&[dm]), r(&[dm]));
        let abs: Vec<f32> = r(&[heads * lq * lk]).to_vec1().unwrap();
        let bias = Bias::Fused(AttnBias {
            abs: &abs,
            heads,
            lq,
            lk,
            blocks: vec![],
            causal: false,
        });
        let mut m = vec![0f32; b * lk];
        m[b * lk - 1] = f32::MIN;
        let m = Tensor::from_vec(m, (b, lk), &d).unwrap();

        let project = |w: &Tensor, bias: &Tensor| {
            let y = kv.broadcast_matmul(&w.t().unwrap()).unwrap();
            split_heads(&y.broadcast_add(bias).unwrap(), heads).unwrap()
        };
        let (k, v) = (project(&wk, &bk), project(&wv, &bv));
        let scores = split_heads(&q, heads)
            .unwrap()
            .matmul(&k.t().unwrap())
            .unwrap();
        let want = attention_probs(&scores, 1.0, &bias, Some(&m))
            .unwrap()
            .matmul(&v)
            .unwrap();
        // Each head's rows, from `[out, in]` and, as a strided view, from `[in, out]`.
        let stored = |w: &Tensor| w.reshape((1, heads, dh, dm)).unwrap();
        let transposed = |w: &Tensor| {
            let wt = w.t().unwrap().contiguous().unwrap();
            let rows = wt.reshape((dm, heads, dh)).unwrap().permute((1, 2, 0));
            rows.unwrap().unsqueeze(0).unwrap()
        };
        let layouts: [&dyn Fn(&Tensor) -> Tensor; 2] = [&stored, &transposed];
        for rows in layouts {
            let weights = KeyValueWeights {
                wk: &rows(&wk),
                wv: &rows(&wv),
                bv: Some(&bv),
            };
            let got = folded_cross_attention(&q, &kv, &weights, heads, &bias, Some(&m)).unwrap();
            let diff = crate::max_diff(want.clone(), got);
            assert!(diff < 1e-4, "{diff}");
        }
    }
}
