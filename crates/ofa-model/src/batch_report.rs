//! What a batched scoring call reports besides its scores: stage times and the feature cache.

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
