//! Model directories other than the fixture: every option is read from the files, and every
//! broken directory fails with an error naming the file (and tensor) at fault.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use ofa_model::WeightsFile;
use ofa_model::{Entailment, OfaError, PairInput};
use serde_json::Value;

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::remove_file(path).unwrap(); // break a hard link before writing
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn tensors() -> HashMap<String, Tensor> {
    ofa_model::internal::load::weights::load(&WeightsFile::Safetensors(
        tiny_dir().join("model.safetensors"),
    ))
    .unwrap()
}

fn write_weights(dir: &Path, t: &HashMap<String, Tensor>) {
    let _ = std::fs::remove_file(dir.join("pytorch_model.bin"));
    let _ = std::fs::remove_file(dir.join("model.safetensors"));
    candle_core::safetensors::save(t, dir.join("model.safetensors")).unwrap();
}

fn grace() -> Vec<u8> {
    std::fs::read(golden().join("images/grace_hopper.jpg")).unwrap()
}

fn probs(m: &Entailment) -> HashMap<String, f32> {
    let img = grace();
    let input = PairInput {
        image: &img,
        hypothesis: "a woman in a military uniform.",
        premise: None,
    };
    let prepared = m.prepare(&input, u64::MAX).unwrap();
    let (s, _) = m.score_batch(&[&prepared]).unwrap();
    s[0].answers
        .iter()
        .cloned()
        .zip(s[0].probs.iter().copied())
        .collect()
}

fn load_err(dir: &Path) -> String {
    match Entailment::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn another_image_size_is_read_from_configuration_json() {
    let dir = scratch("size256");
    edit_json(&dir.path().join("configuration.json"), |v| {
        v["model"]["patch_image_size"] = 256.into()
    });
    let m = Entailment::load(dir.path(), &Device::Cpu).unwrap();
    let px = m.preprocess_image(&grace(), u64::MAX).unwrap();
    assert_eq!(px.len(), 256 * 256 * 3);
    let images = m
        .image_tensor(&[&ofa_model::Prepared {
            source: vec![0, 2],
            pixels: px.into(),
            cache_scope: 0,
        }])
        .unwrap();
    assert_eq!(
        m.model().image_features(&images).unwrap().dims(),
        &[1, 1024, 16, 16]
    );
    let p256 = probs(&m);
    let p480 = probs(tiny());
    assert!((p256.values().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_ne!(p256, p480, "a 16x16 grid must change the scores");
}

#[test]
fn another_answer_order_gives_the_same_answers() {
    let dir = scratch("order");
    std::fs::remove_file(dir.path().join("answer2label.json")).unwrap();
    std::fs::write(
        dir.path().join("answer2label.json"),
        r#"{"maybe": 0, "yes": 1, "no": 2}"#,
    )
    .unwrap();
    let m = Entailment::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(m.answers(), ["maybe", "yes", "no"]);
    let (a, b) = (probs(&m), probs(tiny()));
    for k in ["yes", "no", "maybe"] {
        assert!((a[k] - b[k]).abs() < 1e-6, "{k}");
    }
    // Scores keep the file's candidate order; the wire shape reorders them (the server's job).
    let img = grace();
    let p = m
        .predict(
            &[PairInput {
                image: &img,
                hypothesis: "a woman.",
                premise: None,
            }],
            u64::MAX,
        )
        .unwrap();
    assert_eq!(p[0].answers, ["maybe", "yes", "no"]);
    assert!((p[0].probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn another_resnet_depth_is_read_from_config_json() {
    // resnet50 = [3, 4, 6] bottlenecks: give the extra blocks weights copied from existing ones.
    let dir = scratch("resnet50");
    edit_json(&dir.path().join("config.json"), |v| {
        v["resnet_type"] = "resnet50".into()
    });
    let mut t = tensors();
    let base = "encoder.embed_images.";
    for (stage, from, upto) in [(1, 1, 3), (2, 1, 4), (3, 1, 6)] {
        for block in 2..upto {
            let src = format!("{base}layer{stage}.{from}.");
            let copies: Vec<(String, Tensor)> = t
                .iter()
                .filter(|(k, _)| k.starts_with(&src))
                .map(|(k, v)| {
                    (
                        k.replace(&src, &format!("{base}layer{stage}.{block}.")),
                        v.clone(),
                    )
                })
                .collect();
            t.extend(copies);
        }
    }
    write_weights(dir.path(), &t);
    let m = Entailment::load(dir.path(), &Device::Cpu).unwrap();
    let p = probs(&m);
    assert_ne!(p, probs(tiny()), "the deeper ResNet must run");
    // The resnet18 fixture cannot satisfy resnet50: the first missing block is named.
    let dir2 = scratch("resnet50-missing");
    edit_json(&dir2.path().join("config.json"), |v| {
        v["resnet_type"] = "resnet50".into()
    });
    let e = load_err(dir2.path());
    assert!(
        e.contains("model.safetensors") && e.contains("layer1.2"),
        "{e}"
    );
}

#[test]
fn prefixed_names_and_tied_aliases_load_the_same_model() {
    let dir = scratch("prefix");
    let mut t: HashMap<String, Tensor> = tensors()
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    let emb = t.remove("model.encoder.embed_tokens.weight").unwrap();
    t.insert("model.decoder.output_projection.weight".into(), emb);
    t.insert(
        "model.encoder.token_rp_bucket".into(),
        Tensor::zeros((4, 4), candle_core::DType::I64, &Device::Cpu).unwrap(),
    );
    write_weights(dir.path(), &t);
    let m = Entailment::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(probs(&m), probs(tiny()));
}

#[test]
fn pytorch_checkpoint_alone_gives_identical_predictions() {
    let dir = scratch("bin-only");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let m = Entailment::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(probs(&m), probs(tiny()));
}

#[test]
fn missing_files_are_named() {
    for f in [
        "config.json",
        "configuration.json",
        "vocab.json",
        "merges.txt",
        "answer2label.json",
    ] {
        let dir = scratch(&format!("missing-{f}"));
        std::fs::remove_file(dir.path().join(f)).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains(f) && e.contains("missing"), "{f}: {e}");
    }
    let dir = scratch("no-weights");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors or pytorch_model.bin"), "{e}");
    let e = load_err(Path::new("/nonexistent/ofa"));
    assert!(e.contains("/nonexistent/ofa"), "{e}");
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let dir = scratch("missing-tensor");
    let mut t = tensors();
    t.remove("decoder.layers.1.fc2.weight");
    write_weights(dir.path(), &t);
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("decoder.layers.1.fc2.weight"),
        "{e}"
    );

    let dir = scratch("bad-shape");
    let mut t = tensors();
    t.insert(
        "encoder.pos_q_linear.weight".into(),
        Tensor::zeros((3, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_weights(dir.path(), &t);
    let e = load_err(dir.path());
    assert!(
        e.contains("encoder.pos_q_linear.weight") && e.contains("shape"),
        "{e}"
    );

    let dir = scratch("garbage-weights");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"not a checkpoint at all",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let cases: [(&str, &str, Value, &str); 5] = [
        (
            "configuration.json",
            "gen_type",
            "generation".into(),
            "model.gen_type",
        ),
        (
            "configuration.json",
            "use_ofasys",
            true.into(),
            "model.use_ofasys",
        ),
        (
            "configuration.json",
            "prompt_type",
            "none".into(),
            "model.prompt_type",
        ),
        ("config.json", "use_ofasys", true.into(), "use_ofasys"),
        (
            "config.json",
            "resnet_type",
            "resnet9000".into(),
            "resnet_type",
        ),
    ];
    for (file, key, value, named) in cases {
        let dir = scratch(&format!("unsup-{key}-{file}"));
        edit_json(&dir.path().join(file), |v| {
            if file == "configuration.json" {
                v["model"][key] = value.clone();
            } else {
                v[key] = value.clone();
            }
        });
        let e = load_err(dir.path());
        assert!(
            e.contains(file) && e.contains(named) && e.contains("unsupported"),
            "{key}: {e}"
        );
    }
    let dir = scratch("vocab-size");
    edit_json(&dir.path().join("config.json"), |v| {
        v["vocab_size"] = 50000.into()
    });
    let e = load_err(dir.path());
    assert!(e.contains("vocab_size"), "{e}");
    // An answer the decoder cannot score in one step.
    let dir = scratch("answer-tokens");
    std::fs::write(
        dir.path().join("answer2label.json"),
        r#"{"yes": 0, "no": 2, "not entirely sure": 1}"#,
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("answer2label.json")
            && e.contains("\"not entirely sure\"")
            && e.contains("3 BPE tokens; one-pass scoring needs single-token answers"),
        "{e}"
    );
}

#[test]
fn errors_are_typed() {
    let e = Entailment::load("/nonexistent", &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, OfaError::ModelDirMissing(_)));
    assert!(!e.is_input_error());
}

#[test]
fn convert_round_trips_and_a_stale_conversion_is_not_trusted() {
    let dir = scratch("convert");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let bin_only = probs(&Entailment::load(dir.path(), &Device::Cpu).unwrap());
    let (path, n) = ofa_model::convert_pytorch_to_safetensors(dir.path()).unwrap();
    assert_eq!(path, dir.path().join("model.safetensors"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Same names, dtypes and values as the pickle.
    let original = candle_core::pickle::read_all(dir.path().join("pytorch_model.bin")).unwrap();
    assert_eq!(original.len(), n);
    let converted = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    for (name, t) in &original {
        let c = &converted[name];
        assert_eq!((c.dtype(), c.dims()), (t.dtype(), t.dims()), "{name}");
        let diff = (c.to_dtype(candle_core::DType::F64).unwrap()
            - t.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap_or(0.0);
        assert_eq!(diff, 0.0, "{name}");
    }
    assert_eq!(
        ofa_model::ModelDir::pick_weights(dir.path()).unwrap(),
        WeightsFile::Safetensors(path.clone())
    );
    assert_eq!(
        probs(&Entailment::load(dir.path(), &Device::Cpu).unwrap()),
        bin_only
    );

    // The .bin is replaced by one of the same size (a re-download of a moved revision): its
    // new mtime gives it away.
    let same_size = std::fs::read(dir.path().join("pytorch_model.bin")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), &same_size).unwrap();
    assert_eq!(
        ofa_model::ModelDir::pick_weights(dir.path()).unwrap(),
        WeightsFile::Pytorch(dir.path().join("pytorch_model.bin"))
    );
    ofa_model::convert_pytorch_to_safetensors(dir.path()).unwrap();
    assert_eq!(
        ofa_model::ModelDir::pick_weights(dir.path()).unwrap(),
        WeightsFile::Safetensors(path.clone())
    );

    // The .bin changes size after the conversion: the safetensors file no longer describes it.
    let mut bytes = std::fs::read(dir.path().join("pytorch_model.bin")).unwrap();
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(dir.path().join("pytorch_model.bin"), &bytes).unwrap();
    assert_eq!(
        ofa_model::ModelDir::pick_weights(dir.path()).unwrap(),
        WeightsFile::Pytorch(dir.path().join("pytorch_model.bin"))
    );
}
