//! The folded cross-attention (`folded_attention`) is what OFA-large's decoder runs on the CPU,
//! but the tiny model has too few dimensions for it to pay; forced on every attention, it must
//! still match the reference's goldens and the unfolded model.

mod common;

use common::*;
use ofa_model::{Entailment, Prepared};

#[test]
fn folded_attention_matches_the_goldens_and_the_unfolded_model() {
    let model = Entailment::load(tiny_dir(), device()).unwrap();
    let prepared: Vec<Prepared> = cases().iter().map(|c| prepare_with(&model, c)).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (plain, _) = model.score_batch(&refs).unwrap();
    ofa_model::internal::network::kernels::force_folded(true);
    let (folded, _) = model.score_batch(&refs).unwrap();
    ofa_model::internal::network::kernels::force_folded(false);
    for ((case, f), p) in cases().iter().zip(&folded).zip(&plain) {
        let want: Vec<f32> = serde_json::from_value(case["scores"]["softmax"].clone()).unwrap();
        for (k, w) in want.iter().enumerate() {
            let d = (f.probs[k] - w).abs();
            assert!(
                d < prob_tolerance(),
                "{}: p[{k}] differs by {d}",
                case["id"]
            );
            let d = (f.log_probs[k] - p.log_probs[k]).abs();
            assert!(d < 1e-5, "{}: log p[{k}] moved by {d}", case["id"]);
        }
    }
    // Sums in another order: some bits move, so the folded path did run.
    assert!(
        folded
            .iter()
            .zip(&plain)
            .any(|(f, p)| f.log_probs != p.log_probs),
        "folding changed nothing"
    );
}
