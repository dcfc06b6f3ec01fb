//! The engine's own layout of the weights (`convert --precision`): loaded as it is, it scores
//! every golden case bit for bit as the checkpoint transformed at load does, in f32 and int8;
//! a file made from other weights is ignored (and said so), never trusted.

mod common;

use candle_core::Device;
use common::*;
use ofa_model::internal::load::{engine_layout, weights};
use ofa_model::{Entailment, Precision, Prepared, WeightSource};

fn bits(m: &Entailment) -> Vec<Vec<u32>> {
    let prepared: Vec<Prepared> = cases().iter().map(|c| prepare_with(m, c)).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (scores, _) = m.score_batch(&refs).unwrap();
    scores
        .iter()
        .map(|s| s.log_probs.iter().map(|p| p.to_bits()).collect())
        .collect()
}

#[test]
fn a_converted_layout_scores_bit_for_bit_and_a_stale_one_is_ignored() {
    let dir = scratch("engine-layout");
    let cpu = Device::Cpu;
    for precision in [Precision::F32, Precision::Int8] {
        let form = precision.dense_form(&cpu);
        let plain = Entailment::load_with(dir.path(), &cpu, precision).unwrap();
        assert!(
            matches!(plain.weight_source(), WeightSource::Checkpoint(p) if p.ends_with("model.safetensors")),
            "{:?}",
            plain.weight_source()
        );
        let (path, _) = engine_layout::write(dir.path(), form).unwrap();
        let converted = Entailment::load_with(dir.path(), &cpu, precision).unwrap();
        assert_eq!(
            converted.weight_source(),
            &WeightSource::Converted(path.clone()),
            "{precision:?}"
        );
        assert_eq!(bits(&converted), bits(&plain), "{precision:?}");
        // Every dense weight is used where the file maps it, not copied out.
        let (copied, mapped) = weights::load_mapped(&path).unwrap();
        let mut names: Vec<&str> = mapped.names().collect();
        names.sort();
        let dense = |n: &&str| match precision {
            Precision::Int8 => n.ends_with("_int8"),
            _ => n.ends_with("_t"),
        };
        assert!(!names.is_empty() && names.iter().all(dense), "{names:?}");
        assert!(copied.keys().all(|n| !dense(&n.as_str())), "{precision:?}");
        assert!(names.contains(&match precision {
            Precision::Int8 => "decoder.layers.0.fc1.weight_int8",
            _ => "decoder.layers.0.fc1.weight_t",
        }));
        // The ResNet's BatchNorms are folded into its convolutions; int8 blocks quantised.
        let block = "encoder.embed_images.layer1.0";
        let int8 = precision == Precision::Int8;
        assert_eq!(
            names.contains(&&*format!("{block}.conv2.weight_int8")),
            int8
        );
        assert_eq!(
            copied.contains_key(&format!("{block}.conv2.folded_weight")),
            !int8
        );
        assert!(copied.contains_key(&format!("{block}.conv2.folded_bias")));
        assert!(copied.contains_key("encoder.embed_images.conv1.folded_weight"));
        assert!(!copied
            .keys()
            .any(|n| n.contains(".bn") || n.contains("downsample.1")));
    }
    assert_ne!(
        engine_layout::transform_fingerprint(Precision::F32.dense_form(&cpu)).unwrap(),
        engine_layout::transform_fingerprint(Precision::Int8.dense_form(&cpu)).unwrap()
    );

    // The checkpoint replaced (a new file, as a new download is): both layouts are stale.
    let st = dir.path().join("model.safetensors");
    std::fs::remove_file(&st).unwrap();
    std::fs::copy(tiny_dir().join("model.safetensors"), &st).unwrap();
    let reloaded = Entailment::load_with(dir.path(), &cpu, Precision::Int8).unwrap();
    match reloaded.weight_source() {
        WeightSource::CheckpointOverStale { checkpoint, why } => {
            assert_eq!(checkpoint, &st);
            assert!(
                why.contains("engine-cpu-int8.safetensors")
                    && why.contains("made from other weights"),
                "{why}"
            );
        }
        other => panic!("a stale layout was used: {other:?}"),
    }
    // Rebuilt, it is used again.
    engine_layout::write(dir.path(), Precision::Int8.dense_form(&cpu)).unwrap();
    let rebuilt = Entailment::load_with(dir.path(), &cpu, Precision::Int8).unwrap();
    assert!(matches!(
        rebuilt.weight_source(),
        WeightSource::Converted(_)
    ));
    assert_eq!(bits(&rebuilt), bits(&reloaded));
    // The engine layouts are not among the model's source files.
    let sources = ofa_model::ModelDir::source_files(dir.path()).unwrap();
    let names: Vec<String> = sources
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The fixture's model.safetensors is the original (its .bin is made from it).
    assert!(names.contains(&"model.safetensors".to_owned()), "{names:?}");
    assert!(names.contains(&"config.json".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("engine-") || n == "pytorch_model.bin"),
        "{names:?}"
    );
}

/// `random-model` writes the dense weights transposed: int8 quantises what the stored
/// orientation would have given, bit for bit.
#[test]
fn int8_of_a_transposed_checkpoint_weight_is_int8_of_the_stored_one() {
    use ofa_model::internal::network::dense_form::{dense_entries, DenseForm};
    let (n, k) = (40, 72);
    let v: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37) % 101) as f32 / 13.0 - 3.0)
        .collect();
    let stored = candle_core::Tensor::from_vec(v, (n, k), &Device::Cpu).unwrap();
    let wt = stored.t().unwrap().contiguous().unwrap();
    let name = "decoder.layers.1.fc2.weight";
    let a = dense_entries(name.into(), stored, DenseForm::Int8).unwrap();
    let b = dense_entries(format!("{name}_t"), wt, DenseForm::Int8).unwrap();
    assert_eq!(a.len(), 3, "packed weights, scales and offsets");
    let values = |t: &candle_core::Tensor| {
        let t = t.flatten_all().unwrap();
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(values(ta), values(tb), "{na}");
    }
}
