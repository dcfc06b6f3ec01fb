//! What the engine needs from a model: turn a pair into model input, and score a batch of them.
//! The OFA pipeline is the real backend; tests use a stand-in, so admission, batching, deadlines
//! and the breaker are tested without model files.

use ofa_model::{Entailment, OfaError, PairInput, Prepared, Scores};

/// One image–sentence pair as a front end received it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub image: Vec<u8>,
    pub text: String,
    pub premise: Option<String>,
}

pub trait Backend: Send + Sync + 'static {
    /// Peak memory, in bytes, [`Backend::prepare`] may take for this pair, judged cheaply (from
    /// the image header); refuses what `prepare` would refuse without decoding.
    fn preprocess_cost(&self, _pair: &Pair, _max_image_pixels: u64) -> Result<u64, OfaError> {
        Ok(0)
    }

    /// Decodes and tokenises one pair (CPU work; the engine runs it on its bounded pool).
    fn prepare(&self, pair: &Pair, max_image_pixels: u64) -> Result<Prepared, OfaError>;

    /// Scores a batch in one forward pass, one [`Scores`] per pair in order.
    fn score(&self, batch: &[&Prepared]) -> Result<Vec<Scores>, OfaError>;
}

impl Backend for Entailment {
    fn preprocess_cost(&self, pair: &Pair, max_image_pixels: u64) -> Result<u64, OfaError> {
        Entailment::preprocess_cost(self, &pair.image, max_image_pixels)
    }

    fn prepare(&self, pair: &Pair, max_image_pixels: u64) -> Result<Prepared, OfaError> {
        let input = PairInput {
            image: &pair.image,
            hypothesis: &pair.text,
            premise: pair.premise.as_deref(),
        };
        Entailment::prepare(self, &input, max_image_pixels)
    }

    fn score(&self, batch: &[&Prepared]) -> Result<Vec<Scores>, OfaError> {
        Ok(self.score_batch(batch)?.0)
    }
}
