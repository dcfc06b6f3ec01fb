//! CPU kernels: the fused operations that replace candle's generic ones on the CPU (attention
//! in one pass, GEMMs onto the bias, 3×3 convolutions without a column matrix, GELU, layer
//! norm, softmax with biases), and int8 in its own room. `network::kernels` picks them or
//! candle's operations; each is tested against candle's result.

pub mod attention;
pub mod bias;
pub mod conv3x3;
pub(crate) mod disjoint;
pub mod folded_attention;
pub mod gelu;
pub mod int8;
pub mod linear;
pub mod norm;
pub mod softmax;
