//! The GPU's code path on the CPU: candle's generic operations instead of the fused kernels
//! (biases built as tensors, candle's convolution and softmax), in f32 against the reference's
//! goldens, and in bf16/f16 against f32 (the conversions a GPU run makes, checked anywhere).

mod common;

use common::*;
use ofa_model::{Entailment, Precision, Prepared, ResNetLayout, Scores};

/// Each case's probabilities within the tolerance of the reference's.
fn assert_goldens(what: &str, cases: &[serde_json::Value], got: &[Scores]) {
    for (case, s) in cases.iter().zip(got) {
        let want: Vec<f32> = serde_json::from_value(case["scores"]["softmax"].clone()).unwrap();
        for (k, w) in want.iter().enumerate() {
            let d = (s.probs[k] - w).abs();
            assert!(
                d < prob_tolerance(),
                "{what} {}: p[{k}] differs by {d}",
                case["id"]
            );
        }
    }
}

#[test]
fn generic_kernels_match_the_goldens_and_half_precisions_stay_close() {
    ofa_model::internal::network::kernels::force_generic(true);
    let f32_model = Entailment::load(tiny_dir(), device()).unwrap();
    let prepared: Vec<Prepared> = cases()
        .iter()
        .map(|c| prepare_with(&f32_model, c))
        .collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    // One batch of every case: mixed text lengths, so padding and masks are exercised too.
    let (exact, _) = f32_model.score_batch(&refs).unwrap();
    assert_goldens("batched", cases(), &exact);
    // Alone, each case takes a corner of the biases built for the batch's longest text.
    for (case, p) in cases().iter().zip(&refs) {
        let (alone, _) = f32_model.score_batch(&[p]).unwrap();
        assert_goldens("alone", std::slice::from_ref(case), &alone);
    }
    // candle's CPU backend has no bf16 matmul; f16 takes the same conversions.
    let halves: &[Precision] = if device().is_cpu() {
        &[Precision::F16]
    } else {
        &[Precision::Bf16, Precision::F16]
    };
    for &p in halves {
        let low = Entailment::load_with(tiny_dir(), device(), p).unwrap();
        let (got, _) = low.score_batch(&refs).unwrap();
        for ((case, want), got) in cases().iter().zip(&exact).zip(&got) {
            let diff = (0..3)
                .map(|k| (want.probs[k] - got.probs[k]).abs())
                .fold(0.0, f32::max);
            assert!(diff < 0.05, "{p} {}: differs by {diff}", case["id"]);
        }
    }
}

/// `--resnet-layout auto` on the generic path (where the layout is a choice): both layouts
/// timed on the model's own ResNet, the faster kept, and the answers unchanged.
#[test]
fn the_tuned_resnet_layout_is_the_faster_and_matches_the_goldens() {
    ofa_model::internal::network::kernels::force_generic(true);
    let model = Entailment::load(tiny_dir(), device())
        .unwrap()
        .with_tuned_resnet_layout(1)
        .unwrap();
    let t = model.model().resnet_layout_tuning().expect("layouts timed");
    assert_eq!(t.batch_size, 1);
    for ms in [t.channels_last_ms, t.channels_first_ms] {
        assert!(ms.is_finite() && ms > 0.0, "{t:?}");
    }
    let faster = if t.channels_first_ms < t.channels_last_ms {
        ResNetLayout::ChannelsFirst
    } else {
        ResNetLayout::ChannelsLast
    };
    assert_eq!((t.chosen, model.model().resnet_layout()), (faster, faster));
    let some = &cases()[..3];
    let prepared: Vec<Prepared> = some.iter().map(|c| prepare_with(&model, c)).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (got, _) = model.score_batch(&refs).unwrap();
    assert_goldens(&format!("tuned {faster}"), some, &got);
}

/// The ResNet's blocks in either layout on the generic path (a GPU's choice,
/// `--resnet-layout`), converted there and back, still match the goldens.
#[test]
fn both_resnet_layouts_match_the_goldens() {
    ofa_model::internal::network::kernels::force_generic(true);
    let mut model = Entailment::load(tiny_dir(), device()).unwrap();
    assert_eq!(model.model().resnet_layout(), ResNetLayout::ChannelsLast);
    for layout in [ResNetLayout::ChannelsFirst, ResNetLayout::ChannelsLast] {
        model = model.with_resnet_layout(layout).unwrap();
        assert_eq!(model.model().resnet_layout(), layout);
        // A few cases (the test above runs all of them channels-last): CI's time.
        let some = &cases()[..5];
        let prepared: Vec<Prepared> = some.iter().map(|c| prepare_with(&model, c)).collect();
        let refs: Vec<&Prepared> = prepared.iter().collect();
        let (got, _) = model.score_batch(&refs).unwrap();
        assert_goldens(&layout.to_string(), some, &got);
    }
}
