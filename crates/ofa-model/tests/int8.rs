//! `--precision int8` on the golden cases: how far each case's probabilities move from the
//! reference's f32, and a label may change only where f32's top two were within 0.02.

mod common;

use common::*;
use ofa_model::{Entailment, Precision, Prepared};

#[test]
fn int8_stays_close_and_keeps_every_clear_label() {
    if !device().is_cpu() {
        return; // int8 has CPU kernels only; the GPU run of this suite checks bf16/f16
    }
    let model = Entailment::load_with(tiny_dir(), device(), Precision::Int8).unwrap();
    assert_eq!(model.precision(), Precision::Int8);
    let prepared: Vec<Prepared> = cases().iter().map(|c| prepare_with(&model, c)).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (got, _) = model.score_batch(&refs).unwrap();
    let mut worst = 0f32;
    println!("case                          max |Δp|  f32 margin  label");
    for (case, s) in cases().iter().zip(&got) {
        let want: Vec<f32> = serde_json::from_value(case["scores"]["softmax"].clone()).unwrap();
        let diff = (0..3)
            .map(|k| (s.probs[k] - want[k]).abs())
            .fold(0f32, f32::max);
        let mut sorted = want.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let margin = sorted[0] - sorted[1];
        let want_label = (0..3).max_by(|&a, &b| want[a].total_cmp(&want[b])).unwrap();
        let changed = s.argmax != want_label;
        println!(
            "{:28} {diff:9.5} {margin:11.4}  {}",
            case["id"].as_str().unwrap(),
            if changed { "changed" } else { "same" }
        );
        assert!(
            !changed || margin < 0.02,
            "{}: label changed with an f32 margin of {margin}",
            case["id"]
        );
        worst = worst.max(diff);
    }
    // Per-row activation and per-output weight scales: a few hundredths at most on this model.
    assert!(worst < 0.1, "largest probability difference {worst}");
    assert!(
        worst > 0.0,
        "int8 changed nothing: were the layers quantised?"
    );
}

#[test]
fn both_checkpoint_formats_are_quantised_as_they_are_read() {
    use ofa_model::WeightsFile;
    for file in [
        WeightsFile::Safetensors(tiny_dir().join("model.safetensors")),
        WeightsFile::Pytorch(tiny_dir().join("pytorch_model.bin")),
    ] {
        let t = ofa_model::internal::load::weights::load_with(
            &file,
            ofa_model::internal::network::dense_form::DenseForm::Int8,
        )
        .unwrap();
        let name = "encoder.layers.0.fc1.weight";
        assert!(!t.contains_key(name), "{file:?}: f32 {name} kept");
        assert_eq!(t[&format!("{name}_int8")].dtype(), candle_core::DType::U8);
        assert!(t.contains_key(&format!("{name}_int8_scale")));
        assert_eq!(
            t[&format!("{name}_int8_offset")].dtype(),
            candle_core::DType::I32
        );
        // Everything else stays f32: embeddings, the ResNet, layer norms, biases.
        let f32_model = ofa_model::internal::load::weights::load(&file).unwrap();
        let quantised = f32_model.keys().filter(|n| !t.contains_key(*n)).count();
        // Each replaced by three: packed bytes, scales, offsets.
        assert_eq!(2 * quantised, t.len() - f32_model.len(), "{file:?}");
        assert!(quantised > 0);
    }
}
