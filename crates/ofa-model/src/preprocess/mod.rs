//! From a request's bytes to the network's inputs, exactly as the reference does it: image
//! decoding with Pillow's semantics and bounds (`image`), its bicubic resize (`resize`),
//! sentence normalisation and prompts (`text`) and BPE tokenisation (`tokenizer`), all from the
//! candle-free `ofa-preprocess` crate; then the pixel tensor and right-padding of id lists
//! (`padding`).

pub mod padding;
pub mod pixel_tensor;

// Decoding, resizing, text and tokenising live in their own crate, without candle.
pub use ofa_preprocess::{image, resize, text, tokenizer};
