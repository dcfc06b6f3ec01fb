//! `bench --profile-ops` on the GPU's code path (generic operations, forced on the CPU): every
//! operation it names is timed once per layer or convolution, filed under its stage, and the
//! answers are unchanged. A test file of its own: profiling is process-wide.

mod common;

use common::*;
use ofa_model::profile::{self, OpTime};
use ofa_model::{Entailment, OfaConfig, Prepared, ResNetLayout};

fn calls(ops: &[OpTime], stage: &str, op: &str) -> u64 {
    ops.iter()
        .find(|o| o.stage == stage && o.op == op)
        .map_or(0, |o| o.calls)
}

#[test]
fn every_layer_and_convolution_is_timed_under_its_stage() {
    ofa_model::internal::network::kernels::force_generic(true);
    let config = OfaConfig::from_file(&tiny_dir().join("config.json")).unwrap();
    let [s1, s2, s3] = config.resnet_layers().unwrap();
    let blocks = (s1 + s2 + s3) as u64;
    let (enc, dec) = (config.encoder_layers as u64, config.decoder_layers as u64);
    let mut model = Entailment::load(tiny_dir(), device()).unwrap();
    let prepared: Vec<Prepared> = cases()[..2]
        .iter()
        .map(|c| prepare_with(&model, c))
        .collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (plain, _) = model.score_batch(&refs).unwrap();

    for layout in [ResNetLayout::ChannelsLast, ResNetLayout::ChannelsFirst] {
        model = model.with_resnet_layout(layout).unwrap();
        profile::enable(true);
        let (timed, _) = model.score_batch(&refs).unwrap();
        let ops = profile::take();
        profile::enable(false);
        for (a, b) in plain.iter().zip(&timed) {
            for k in 0..3 {
                assert!((a.probs[k] - b.probs[k]).abs() < 1e-5, "{layout}");
            }
        }
        for (stage, attentions, layers) in [("encoder", enc, enc), ("decoder", 2 * dec, dec)] {
            for op in [
                "attention q/k/v projections",
                "attention scores q·kᵀ",
                "attention softmax (bias, mask)",
                "attention probs·v",
                "attention merge heads",
                "attention out projection",
            ] {
                assert_eq!(calls(&ops, stage, op), attentions, "{stage} {op}: {ops:?}");
            }
            for op in [
                "ffn fc1",
                "ffn bias, GELU, layer norm",
                "ffn fc2, bias, residual",
            ] {
                assert_eq!(calls(&ops, stage, op), layers, "{stage} {op}: {ops:?}");
            }
            let norms = calls(&ops, stage, "layer norm");
            assert_eq!(
                norms,
                (attentions / layers + 1) * layers,
                "{stage}: {ops:?}"
            );
        }
        // Three convolutions a block, a downsample at each stage's first, and the stem.
        let convs: u64 = ops
            .iter()
            .filter(|o| o.stage == "resnet")
            .filter(|o| o.op.contains("GEMM") || o.op.contains("(channels-first)"))
            .map(|o| o.calls)
            .sum();
        assert_eq!(convs, 3 * blocks + 3, "{layout}: {ops:?}");
        assert_eq!(calls(&ops, "resnet", "conv 7×7 stem"), 1, "{ops:?}");
        let epilogues = calls(&ops, "resnet", "conv bias, shortcut, ReLU");
        assert_eq!(epilogues, 3 * blocks + 3 + 1, "{layout}: {ops:?}");
        let permutes = calls(&ops, "resnet", "to and from channels-last");
        assert_eq!(
            permutes,
            u64::from(layout == ResNetLayout::ChannelsLast) * 2
        );
        assert!(
            ops.iter().all(|o| o.ms >= 0.0 && !o.stage.is_empty()),
            "{ops:?}"
        );
    }
    // Off again: nothing more is recorded.
    model.score_batch(&refs).unwrap();
    assert!(profile::take().is_empty());
}
