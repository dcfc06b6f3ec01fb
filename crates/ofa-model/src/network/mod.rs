//! The network itself: the ResNet backbone (candle's layout, and channels-last where a GPU runs
//! it), the encoder and decoder with their layers, heads and position biases, linear layers
//! in f32 or int8 and the forms their weights are stored in (`dense_form`), and `kernels`,
//! which picks this crate's fused CPU kernels or candle's generic operations. `model` puts
//! them together.

pub mod bottleneck;
pub mod buckets;
pub mod conv;
pub mod conv_bn;
pub mod decoder;
pub mod dense_form;
pub mod encoder;
pub mod epilogue;
pub mod heads;
pub mod kernels;
pub mod layers;
pub mod linear;
pub mod model;
pub mod position_cache;
pub mod resnet;
pub mod resnet_nhwc;
