use std::time::Duration;

/// Engine knobs. Only the binary reads flags and the environment; it builds this.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most pairs in one forward pass.
    pub max_batch_size: usize,
    /// How long the inference thread may wait for a batch to fill once it has one request.
    pub max_batch_wait: Duration,
    /// Pairs admitted but not yet taken by the inference thread (preprocessing included);
    /// past it, new work is refused.
    pub max_queue: usize,
    /// Consecutive failed batches that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before letting one probe through.
    pub breaker_cooldown: Duration,
    /// Probes failed in a row after which the engine reports itself failing
    /// ([`crate::Engine::failing`]) for an orchestrator to restart the process; 0: never.
    pub breaker_give_up: u32,
    /// Decompression-bomb guard, checked from the image header before decoding.
    pub max_image_pixels: u64,
    /// Longest hypothesis or premise accepted, in characters.
    pub max_text_chars: usize,
    /// Pairs decoded at once; the CPU count.
    pub preprocess_threads: usize,
    /// Bytes all pairs being preprocessed may hold together, by the backend's estimate taken
    /// before decoding: a pair waits for its share, and one needing more than all is refused.
    pub preprocess_memory: u64,
    /// Test-only: allows [`crate::Engine::inject_failures`] to make batches fail.
    pub fault_injection: bool,
}

impl Default for EngineConfig {
    /// The service's defaults: batches of 8 without waiting, a queue of 64, the breaker after
    /// 3 failed batches for a minute (failing after 3 failed probes), images up to the model's pixel bound, texts up to 2000
    /// characters, one decoder thread per CPU within 768 MB.
    fn default() -> Self {
        Self {
            max_batch_size: 8,
            max_batch_wait: Duration::ZERO,
            max_queue: 64,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(60),
            breaker_give_up: 3,
            max_image_pixels: ofa_api::DEFAULT_MAX_PIXELS,
            max_text_chars: 2000,
            preprocess_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            preprocess_memory: 768 << 20,
            fault_injection: false,
        }
    }
}
