//! From a request's bytes to the network's inputs, exactly as the reference does it: image
//! decoding with Pillow's semantics and bounds (`image`), its bicubic resize (`resize`, row
//! kernels in `resize_rows`), the pixel tensor, sentence normalisation and prompts (`text`),
//! BPE tokenisation (`tokenizer`) and right-padding of id lists (`padding`).

pub mod image;
pub mod padding;
pub mod pixel_tensor;
pub mod resize;
mod resize_rows;
pub mod text;
pub mod tokenizer;
