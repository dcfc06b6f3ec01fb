//! OFA visual entailment (ModelScope `iic/ofa_visual-entailment_snli-ve_large_en`) in candle.
//!
//! The crate knows nothing of HTTP or threads: it loads a ModelScope model directory, turns an
//! image and a sentence into tensors exactly as the reference pipeline does, and scores the
//! candidate answers with one encoder pass and one decoder pass per batch.

// The rooms: where a change goes. Their modules are public only through `internal`.
mod cpu;
mod cuda;
mod error;
mod load;
mod network;
mod preprocess;
pub mod profile;
mod scoring;

pub use candle_core::{Device, DeviceLocation};
pub use cuda::gpu;
pub use cuda::graphs::GraphSummary;
pub use cuda::layout_tuning::LayoutTuning;
pub use error::{OfaError, Result};
pub use load::config::OfaConfig;
pub use load::engine_layout::WeightSource;
pub use load::model_dir::{ModelDir, WeightsFile};
pub use load::precision::Precision;
pub use load::random;
pub use load::runtime::RuntimeConfig;
pub use load::weights::convert_pytorch_to_safetensors;
pub use network::resnet::ResNetLayout;
pub use ofa_api::DEFAULT_MAX_PIXELS;
pub use preprocess::image::in_libjpeg;
pub use scoring::pipeline::{BatchReport, Entailment, PairInput, Prepared, Scores, StageTimes};

/// The building blocks and kernels behind the public API, reachable for this crate's tests,
/// examples and benchmarks (and the fuzz targets). Not a stable interface: anything here may
/// change with the implementation.
#[doc(hidden)]
pub mod internal {
    pub mod cpu {
        pub use crate::cpu::{
            attention, bias, conv3x3, folded_attention, gelu, int8, linear, norm, softmax,
        };
    }

    pub mod cuda {
        pub use crate::cuda::{gpu, graph_check, graphs, layout_tuning};
        #[cfg(feature = "cuda")]
        pub use crate::cuda::{heads, nhwc, norm, ops, pixels};
    }

    pub mod load {
        pub use crate::load::{
            config, engine_layout, files, mapped, model_dir, precision, random, runtime, weights,
        };
    }

    pub mod network {
        pub use crate::network::{
            bottleneck, buckets, conv, conv_bn, decoder, dense_form, encoder, epilogue, heads,
            kernels, layers, linear, model, position_cache, resnet, resnet_nhwc,
        };
    }

    pub mod scoring {
        pub use crate::scoring::{feature_cache, pipeline};
    }

    pub mod preprocess {
        pub use crate::preprocess::{image, padding, pixel_tensor, resize, text, tokenizer};
    }
}

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
