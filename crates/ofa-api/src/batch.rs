//! What goes into a batched scoring call and what it reports besides its scores.

use std::sync::Arc;

/// A preprocessed pair: source token ids (with BOS/EOS) and the resized uint8 RGB image (HWC).
/// Pairs of one image share its pixels: a batch runs the ResNet once per distinct buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub source: Vec<u32>,
    pub pixels: Arc<[u8]>,
    /// Cached image features are shared only within one scope (one consumer, say).
    pub cache_scope: u64,
}

/// What one batched call did besides scoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchReport {
    pub times: StageTimes,
    /// Distinct images in the batch.
    pub images: usize,
    /// Of those, how many came from the feature cache (the rest ran the ResNet).
    pub cache_hits: usize,
    /// Bytes the feature cache holds after the batch.
    pub cache_bytes: u64,
}

/// Wall time of each stage of one batched call, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageTimes {
    pub preprocess_ms: f64,
    pub resnet_ms: f64,
    pub encoder_ms: f64,
    pub decoder_ms: f64,
}

impl StageTimes {
    pub fn total_ms(&self) -> f64 {
        self.preprocess_ms + self.resnet_ms + self.encoder_ms + self.decoder_ms
    }
}
