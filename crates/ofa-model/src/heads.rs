//! Moving between `[B, L, D]` activations and per-head `[B, H, L, dh]` views.

use candle_core::{Result, Tensor};

/// `[B, L, H·dh]` → `[B, H, L, dh]`, contiguous.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    x.reshape((b, l, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `o` `[B, H, L, dh]` times the per-head scale `c` `[H]`.
pub fn scale_heads(o: &Tensor, c: &Tensor, heads: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if o.device().is_cuda() {
        return crate::cuda_ops::channel_op(o, 1, c, None, true, false);
    }
    o.broadcast_mul(&c.reshape((1, heads, 1, 1))?)
}
