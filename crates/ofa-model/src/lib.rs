//! OFA visual entailment (ModelScope `iic/ofa_visual-entailment_snli-ve_large_en`) in candle.
//!
//! The crate knows nothing of HTTP or threads: it loads a ModelScope model directory, turns an
//! image and a sentence into tensors exactly as the reference pipeline does, and scores the
//! candidate answers with one encoder pass and one decoder pass per batch.

pub mod attention_cpu;
pub mod bias;
pub mod bottleneck;
pub mod buckets;
pub mod config;
pub mod conv;
pub mod conv3x3;
#[cfg(feature = "cuda")]
pub mod cuda_heads;
#[cfg(feature = "cuda")]
pub mod cuda_nhwc;
#[cfg(feature = "cuda")]
pub mod cuda_norm;
#[cfg(feature = "cuda")]
pub mod cuda_ops;
#[cfg(feature = "cuda")]
pub mod cuda_pixels;
pub mod decoder;
mod disjoint;
pub mod encoder;
pub mod epilogue;
pub mod error;
pub mod feature_cache;
pub mod files;
pub mod folded_attention;
pub mod gelu;
pub mod gpu;
pub mod graph_check;
pub mod heads;
pub mod image;
pub mod int8;
pub mod int8_quant;
pub mod int8_vnni;
pub mod kernels;
pub mod layers;
pub mod layout_tuning;
pub mod linear;
pub mod linear_cpu;
pub mod model;
pub mod model_dir;
pub mod norm;
pub mod padding;
pub mod pipeline;
pub mod pixel_tensor;
pub mod position_cache;
pub mod precision;
pub mod profile;
pub mod random;
pub mod resize;
mod resize_rows;
pub mod resnet;
pub mod resnet_int8;
pub mod resnet_nhwc;
pub mod runtime;
pub mod softmax;
pub mod stage_graphs;
pub mod text;
pub mod tokenizer;
pub mod weights;

pub use candle_core::{Device, DeviceLocation};
pub use config::OfaConfig;
pub use error::{OfaError, Result};
pub use layout_tuning::LayoutTuning;
pub use model_dir::ModelDir;
pub use pipeline::{BatchReport, Entailment, PairInput, Prepared, Scores, StageTimes};
pub use precision::Precision;
pub use resnet::ResNetLayout;
pub use runtime::RuntimeConfig;

/// Largest absolute difference between two tensors of one shape (the kernels' tests).
#[cfg(test)]
pub(crate) fn max_diff(a: candle_core::Tensor, b: candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
