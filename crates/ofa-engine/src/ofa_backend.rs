//! The real backend: the OFA pipeline behind the engine's [`Backend`] trait. Behind the
//! `model` feature, so the engine and its tests build without the model's tensor library.

use std::sync::Arc;

use ofa_api::{BackendError, BatchReport, Prepared, Scores};
use ofa_model::Entailment;

use crate::Backend;

impl Backend for Entailment {
    fn preprocess_cost(&self, image: &[u8], max_image_pixels: u64) -> Result<u64, BackendError> {
        Ok(Entailment::preprocess_cost(self, image, max_image_pixels)?)
    }

    fn prepare_image(
        &self,
        image: &[u8],
        max_image_pixels: u64,
    ) -> Result<Arc<[u8]>, BackendError> {
        Ok(self.preprocess_image(image, max_image_pixels)?.into())
    }

    fn encode_text(&self, text: &str, premise: Option<&str>) -> Result<Vec<u32>, BackendError> {
        Ok(Entailment::encode_text(self, text, premise)?)
    }

    fn score(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), BackendError> {
        Ok(self.score_batch(batch)?)
    }

    fn device_memory(&self) -> Option<(u64, u64)> {
        ofa_model::gpu::memory(self.device())
    }
}
