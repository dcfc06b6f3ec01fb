//! What follows a transformer layer's matmuls: bias, GELU, layer norm and residual add. On a
//! GPU each group is one pass (`cuda_norm`); elsewhere candle's operations in the same order,
//! so the generic path (tests) checks what the GPU composes. The CPU's fused kernels keep
//! their own path and never come here.

use candle_core::{Module, Result, Tensor};

use crate::cpu::norm::LayerNorm;

/// `residual + LN(x)`.
pub fn add_norm(residual: &Tensor, x: &Tensor, ln: &LayerNorm) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let (true, Some((w, b, eps))) = (x.device().is_cuda(), ln.parts()) {
        return crate::cuda::norm::norm_rows(x, None, false, w, b, eps, Some(residual));
    }
    residual + ln.forward(x)?
}

/// `LN(gelu(x + bias))`, with the exact GELU: a feed-forward block between fc1's matmul and fc2.
pub fn bias_gelu_norm(x: &Tensor, bias: Option<&Tensor>, ln: &LayerNorm) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let (true, Some((w, b, eps))) = (x.device().is_cuda(), ln.parts()) {
        return crate::cuda::norm::norm_rows(x, bias, true, w, b, eps, None);
    }
    match bias {
        Some(b) => ln.forward_gelu(&x.broadcast_add(b)?),
        None => ln.forward_gelu(x),
    }
}
