//! Scoring: the end-to-end pipeline (`Entailment`: prepare, batch, forward, answer
//! probabilities) and the image-feature cache it keeps across batches.

pub mod feature_cache;
mod features;
pub mod pipeline;
