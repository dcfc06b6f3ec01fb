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
        return crate::cuda::ops::channel_op(o, 1, c, None, true, false);
    }
    o.broadcast_mul(&c.reshape((1, heads, 1, 1))?)
}

/// `[B, L, H·dh]` plus `bias` `[H·dh]` → `[B, H, L, dh]`: on a GPU one pass, elsewhere the add
/// then the copy.
pub fn split_heads_biased(x: &Tensor, bias: Option<&Tensor>, heads: usize) -> Result<Tensor> {
    // The kernel moves four elements of a head at a time.
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && (x.dim(2)? / heads).is_multiple_of(4) {
        return crate::cuda::heads::split_heads(x, bias, heads);
    }
    match bias {
        Some(b) => split_heads(&x.broadcast_add(b)?, heads),
        None => split_heads(x, heads),
    }
}

/// `o` `[B, H, L, dh]` times the per-head scale `c` `[H]`, back to `[B, L, H·dh]`: on a GPU
/// one pass, elsewhere the product then the copy.
pub fn merge_heads(o: &Tensor, c: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if o.device().is_cuda() && o.dim(3)?.is_multiple_of(4) {
        return crate::cuda::heads::merge_heads(o, Some(c));
    }
    let (b, h, l, dh) = o.dims4()?;
    scale_heads(o, c, h)?
        .transpose(1, 2)?
        .reshape((b, l, h * dh))
}
