//! What the engine needs from a model: prepare an image and a text, and score a batch of
//! prepared pairs. The OFA pipeline is the real backend; tests use a stand-in, so admission,
//! batching, deadlines and the breaker are tested without model files.

use std::sync::Arc;

use bytes::Bytes;
use ofa_api::{BackendError, BatchReport, Prepared, Scores};

/// One image–sentence pair as a front end received it. Pairs of one request that carry the
/// same image are decoded once.
#[derive(Debug, Clone, Default)]
pub struct Pair {
    pub image: Bytes,
    pub text: String,
    pub premise: Option<String>,
    /// Pairs of different scopes never share cached image features (one per consumer, so
    /// one cannot learn from cache hits whether another sent an image); 0 for all alike.
    pub cache_scope: u64,
}

pub trait Backend: Send + Sync + 'static {
    /// Peak memory, in bytes, [`Backend::prepare_image`] may take for this image, judged
    /// cheaply (from its header); refuses what decoding would refuse without decoding.
    fn preprocess_cost(&self, _image: &[u8], _max_image_pixels: u64) -> Result<u64, BackendError> {
        Ok(0)
    }

    /// Decodes and resizes one image (CPU work; the engine runs it on its bounded pool).
    fn prepare_image(&self, image: &[u8], max_image_pixels: u64)
        -> Result<Arc<[u8]>, BackendError>;

    /// Token ids of the prompt for a hypothesis and optional premise.
    fn encode_text(&self, text: &str, premise: Option<&str>) -> Result<Vec<u32>, BackendError>;

    /// Scores a batch in one forward pass, one [`Scores`] per pair in order.
    fn score(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), BackendError>;

    /// `(used, total)` bytes of the accelerator's memory; `None` on the CPU.
    fn device_memory(&self) -> Option<(u64, u64)> {
        None
    }
}
