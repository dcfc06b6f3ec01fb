//! From a request's bytes to the OFA network's inputs, exactly as the reference does it: image
//! decoding with Pillow's semantics and bounds (`image`), its bicubic resize (`resize`, row
//! kernels in `resize_rows`), sentence normalisation and prompts (`text`), and BPE
//! tokenisation (`tokenizer`). No tensors: `ofa-model` turns these into them.

pub mod error;
pub mod image;
pub mod resize;
mod resize_rows;
pub mod text;
pub mod tokenizer;

pub use error::{PreprocessError, Result};
