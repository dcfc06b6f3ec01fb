use std::time::Duration;

/// Engine knobs; the service maps its flags and environment variables onto these.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most pairs in one forward pass.
    pub max_batch_size: usize,
    /// How long the inference thread may wait for a batch to fill once it has one request.
    pub max_batch_wait: Duration,
    /// Requests admitted but not yet running; past it, new ones are refused (HTTP 429).
    pub max_queue: usize,
    /// Consecutive failed batches that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before letting one probe through.
    pub breaker_cooldown: Duration,
    /// Decompression-bomb guard.
    pub max_image_pixels: u64,
    /// Longest hypothesis or premise accepted, in characters.
    pub max_text_chars: usize,
    /// Test-only: allows [`crate::Engine::inject_failures`] to make batches fail.
    pub fault_injection: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 8,
            max_batch_wait: Duration::from_millis(0),
            max_queue: 64,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(60),
            max_image_pixels: ofa_model::image::DEFAULT_MAX_PIXELS,
            max_text_chars: 2000,
            fault_injection: false,
        }
    }
}
