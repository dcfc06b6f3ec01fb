//! The GPU: opening a device and reading its memory (`gpu`), the CUDA kernels of
//! `kernels/ofa.cu` as candle operations (`ops`, `norm`, `heads`, `pixels`, `nhwc`; built only
//! with `--features cuda`), the network's stages recorded as CUDA graphs (`graphs`, checked by
//! `graph_check`), and which ResNet layout runs faster where the model runs (`layout_tuning`).

pub mod gpu;
pub mod graph_check;
pub mod graphs;
#[cfg(feature = "cuda")]
pub mod heads;
pub mod layout_tuning;
#[cfg(feature = "cuda")]
pub mod nhwc;
#[cfg(feature = "cuda")]
pub mod norm;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod pixels;
