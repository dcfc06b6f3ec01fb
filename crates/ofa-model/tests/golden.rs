//! The whole pipeline against the reference's goldens, case by case (19 cases, tiny model).

mod common;

use candle_core::{IndexOp, Tensor};
use common::*;
use ofa_model::Prepared;

fn prepare(case: &serde_json::Value) -> Prepared {
    prepare_with(tiny(), case)
}

#[test]
fn prompts_and_input_ids_are_identical() {
    let m = tiny();
    for case in cases() {
        let (h, p) = texts(case);
        assert_eq!(
            m.prompt(&h, p.as_deref()),
            case["preprocess"]["prompt_text"].as_str().unwrap(),
            "{}",
            case["id"]
        );
        let want: Vec<u32> =
            serde_json::from_value(case["preprocess"]["input_ids"].clone()).unwrap();
        assert_eq!(
            m.encode_text(&h, p.as_deref()).unwrap(),
            want,
            "{}",
            case["id"]
        );
    }
}

#[test]
fn decoded_and_resized_images_are_identical() {
    for case in cases() {
        let bytes = image_bytes(case);
        let rgb = ofa_model::internal::preprocess::image::decode_rgb(&bytes, u64::MAX).unwrap();
        let size = case["image"]["decoded_rgb_size_wh"].clone();
        assert_eq!(
            serde_json::json!([rgb.width(), rgb.height()]),
            size,
            "{}",
            case["id"]
        );
        assert_eq!(
            sha256_hex(rgb.as_raw()),
            case["image"]["decoded_rgb_u8_sha256"].as_str().unwrap(),
            "decoded RGB of {}",
            case["id"]
        );
        let resized = tiny().preprocess_image(&bytes, u64::MAX).unwrap();
        assert_eq!(
            sha256_hex(&resized),
            case["image"]["patch_image_u8_hwc_sha256"].as_str().unwrap(),
            "480x480 image of {}",
            case["id"]
        );
    }
}

#[test]
fn jpeg_decoding_matches_libjpeg_turbo_pixels() {
    // Compared element-wise too, so a regression shows how far off it is, not just a hash.
    for case in cases() {
        let g = case_tensors(case);
        let Some(want) = g.get("decoded_rgb_u8_hwc") else {
            continue;
        };
        let rgb = ofa_model::internal::preprocess::image::decode_rgb(&image_bytes(case), u64::MAX)
            .unwrap();
        let want: Vec<u8> = want.flatten_all().unwrap().to_vec1().unwrap();
        let diff = rgb
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{}: {diff} bytes differ", case["id"]);
    }
}

#[test]
fn resnet_encoder_decoder_and_scores_match() {
    let m = tiny();
    for case in cases() {
        let id = case["id"].as_str().unwrap();
        let g = case_tensors(case);
        let prepared = prepare(case);
        let images = m.image_tensor(&[&prepared]).unwrap();
        let feats = m.model().image_features(&images).unwrap();
        assert_eq!(feats.dims(), &[1, 1024, 30, 30]);
        let d = max_abs_diff(&feats.i((0, 0..8)).unwrap(), &g["resnet_out_first8ch"]);
        assert!(d < tensor_tolerance(), "{id}: ResNet differs by {d}");

        let ids = Tensor::new(prepared.source.as_slice(), device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let enc = m.model().encode(&ids, &feats).unwrap();
        let d = max_abs_diff(&enc.hidden, &g["encoder_last_hidden_state"]);
        assert!(d < tensor_tolerance(), "{id}: encoder differs by {d}");

        // Causal attention: the prompt rows of the reference's (prompt + answer) run are ours.
        let prompt = &prepared.source[..prepared.source.len() - 1];
        let pt = Tensor::new(prompt, device()).unwrap().unsqueeze(0).unwrap();
        let hidden = m.model().decode(&pt, &enc).unwrap();
        let want = g["dec_yes_final_hidden"]
            .narrow(0, 0, prompt.len())
            .unwrap();
        let d = max_abs_diff(&hidden.i(0).unwrap(), &want);
        assert!(d < tensor_tolerance(), "{id}: decoder differs by {d}");

        // Raw logits of ' no' (117), ' maybe' (2085), ' yes' (4420) at the scoring position.
        let logits = m
            .model()
            .answer_logits(&hidden, &[prompt.len() - 1], &[117, 2085, 4420])
            .unwrap();
        let want = g["dec_yes_logits_allowed"].i((0, 0..3)).unwrap();
        let d = max_abs_diff(&logits.i(0).unwrap(), &want);
        assert!(d < tensor_tolerance(), "{id}: answer logits differ by {d}");

        let (scores, _) = m.score_batch(&[&prepared]).unwrap();
        let s = &scores[0];
        assert_eq!(s.answers, ["no", "yes", "maybe"]);
        let want_p: Vec<f32> = serde_json::from_value(case["scores"]["softmax"].clone()).unwrap();
        let want_lp: Vec<f32> =
            serde_json::from_value(case["scores"]["sum_logprob"].clone()).unwrap();
        for k in 0..3 {
            assert!(
                (s.probs[k] - want_p[k]).abs() < prob_tolerance(),
                "{id}: p[{k}] {} vs {}",
                s.probs[k],
                want_p[k]
            );
            assert!(
                (s.log_probs[k] - want_lp[k]).abs() < prob_tolerance(),
                "{id}: logp[{k}]"
            );
        }
        if case["scores"]["argmax_margin_prob"].as_f64().unwrap() > 1e-3 {
            assert_eq!(
                s.argmax as u64,
                case["scores"]["argmax"].as_u64().unwrap(),
                "{id}: label"
            );
        }
        let label = case["pipeline_output"]["labels"].as_str().unwrap();
        assert_eq!(s.answers[s.argmax], label, "{id}");
        let conf = case["pipeline_output"]["scores"].as_f64().unwrap() as f32;
        assert!(
            (s.probs[s.argmax] - conf).abs() < prob_tolerance(),
            "{id}: confidence"
        );
    }
}

#[test]
fn batched_forward_equals_one_at_a_time() {
    let m = tiny();
    // Mixed text lengths (3 to 258 ids), a premise, an empty text: padding must not leak.
    let picked = [
        "grace_hopper_simple",
        "long_text_truncation",
        "empty_text",
        "coffee_premise_hypothesis",
        "chinese_text",
        "tiny_8x8",
    ];
    let batch: Vec<Prepared> = picked
        .iter()
        .map(|id| prepare(cases().iter().find(|c| c["id"] == *id).unwrap()))
        .collect();
    let lens: std::collections::BTreeSet<usize> = batch.iter().map(|p| p.source.len()).collect();
    assert!(lens.len() >= 4, "the batch must mix text lengths: {lens:?}");
    let refs: Vec<&Prepared> = batch.iter().collect();
    let (together, _) = m.score_batch(&refs).unwrap();
    for (p, t) in batch.iter().zip(&together) {
        let (alone, _) = m.score_batch(&[p]).unwrap();
        for k in 0..3 {
            let d = (alone[0].probs[k] - t.probs[k]).abs();
            assert!(d < prob_tolerance(), "batched differs by {d}");
        }
        assert_eq!(alone[0].argmax, t.argmax);
    }
}

/// Texts padded to a multiple of 16 ids (what a GPU with CUDA graphs runs, so that it records
/// a few shapes rather than one per text length) give the reference's answers, alone and in
/// one batch of every case.
#[test]
fn texts_padded_to_a_bucket_give_the_reference_answers() {
    let m = ofa_model::Entailment::load(tiny_dir(), device())
        .unwrap()
        .with_text_bucket(16);
    let prepared: Vec<Prepared> = cases().iter().map(|c| prepare_with(&m, c)).collect();
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let (batched, _) = m.score_batch(&refs).unwrap();
    // Alone: texts of 3 to 258 ids, with and without a premise (CI's time: not all 19).
    let alone = [
        "grace_hopper_simple",
        "long_text_truncation",
        "empty_text",
        "coffee_premise_hypothesis",
    ];
    for ((case, p), together) in cases().iter().zip(&refs).zip(&batched) {
        let want: Vec<f32> = serde_json::from_value(case["scores"]["softmax"].clone()).unwrap();
        let mut got = vec![together.clone()];
        if alone.iter().any(|id| case["id"] == *id) {
            got.extend(m.score_batch(&[p]).unwrap().0);
        }
        for s in &got {
            for (k, (got, want)) in s.probs.iter().zip(&want).enumerate() {
                let d = (got - want).abs();
                assert!(d < prob_tolerance(), "{}: p[{k}] off by {d}", case["id"]);
            }
        }
    }
}

/// On a GPU, each recorded stage is checked against its plain run before it replaces it: a
/// replay that differs is a recording bug, one that is merely not faster runs plain. Off a GPU
/// (or with graphs off) nothing is recorded and the summary says so.
#[test]
fn cuda_graphs_replay_what_the_plain_runs_give() {
    // A model of its own: the summary then holds this test's shapes only.
    let m = ofa_model::Entailment::load(tiny_dir(), device())
        .unwrap()
        .with_cuda_graphs(test_cuda_graphs());
    let batch: Vec<Prepared> = cases()
        .iter()
        .take(2)
        .map(|c| prepare_with(&m, c))
        .collect();
    let refs: Vec<&Prepared> = batch.iter().collect();
    for _ in 0..2 {
        m.score_batch(&refs).unwrap();
        m.score_batch(&refs[..1]).unwrap();
    }
    let g = m.model().cuda_graphs();
    eprintln!("CUDA graphs: {g:?}");
    if device().is_cpu() || g.max_batch == 0 {
        assert_eq!((g.recorded, g.checks.len(), g.plain.len()), (0, 0, 0));
        return;
    }
    // Two batch sizes, three stages each.
    assert_eq!(g.recorded + g.plain.len(), 6, "{g:?}");
    let failed: Vec<&String> = g
        .plain
        .iter()
        .filter(|why| !why.contains("its replay took"))
        .collect();
    assert!(failed.is_empty(), "recordings not kept: {failed:?}");
}

#[test]
fn bucket_tables_match_reference_buffers() {
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden().join("buckets.json")).unwrap()).unwrap();
    let table: Vec<u8> = ofa_model::internal::network::buckets::token_buckets(1024, 256)
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect();
    let got = sha256_hex(&table);
    let text = want.to_string();
    assert!(
        text.contains(&got),
        "token_rp_bucket sha256 {got} not in buckets.json"
    );
}

#[test]
fn both_weight_formats_load_identical_tensors() {
    use ofa_model::WeightsFile;
    let st = ofa_model::internal::load::weights::load(&WeightsFile::Safetensors(
        tiny_dir().join("model.safetensors"),
    ))
    .unwrap();
    let pt = ofa_model::internal::load::weights::load(&WeightsFile::Pytorch(
        tiny_dir().join("pytorch_model.bin"),
    ))
    .unwrap();
    let mut names: Vec<&String> = st.keys().collect();
    names.sort();
    let mut pnames: Vec<&String> = pt.keys().collect();
    pnames.sort();
    assert_eq!(names, pnames);
    assert!(names.len() > 250);
    for n in names {
        assert_eq!(st[n].dims(), pt[n].dims(), "{n}");
        let a: Vec<f32> = st[n].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = pt[n].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n} differs"
        );
    }
}

/// bf16 and f16 against f32, case by case: the largest probability difference and whether the
/// label changed (allowed only where f32's top-two margin is under 0.02). On the CPU, where
/// they are refused, that the refusal names what to use instead. `OFA_PRECISION_REPORT=FILE`
/// also writes the table as JSON (the GPU check collects it).
#[test]
fn reduced_precisions_against_f32() {
    use ofa_model::{Entailment, Precision};
    let m = tiny();
    if m.device().is_cpu() {
        for p in [Precision::Bf16, Precision::F16] {
            let err = Entailment::load_with(tiny_dir(), m.device(), p)
                .err()
                .expect("half precision is refused on the CPU")
                .to_string();
            assert!(err.contains("on the CPU use f32"), "{err}");
        }
        return;
    }
    let mut rows = Vec::new();
    for p in [Precision::Bf16, Precision::F16] {
        let low = Entailment::load_with(tiny_dir(), m.device(), p).unwrap();
        assert_eq!(low.precision(), p);
        for case in cases() {
            let id = case["id"].as_str().unwrap();
            let prepared = prepare(case);
            let want = &m.score_batch(&[&prepared]).unwrap().0[0];
            let got = &low.score_batch(&[&prepared]).unwrap().0[0];
            let diff = (0..3)
                .map(|k| (want.probs[k] - got.probs[k]).abs())
                .fold(0.0, f32::max);
            let mut sorted = want.probs.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let margin = sorted[0] - sorted[1];
            let changed = want.argmax != got.argmax;
            rows.push(serde_json::json!({
                "precision": p, "case": id, "max_prob_diff": diff,
                "label_changed": changed, "f32_margin": margin,
            }));
            assert!(
                !changed || margin < 0.02,
                "{p} {id}: label changed with an f32 margin of {margin}"
            );
            assert!(diff < 0.05, "{p} {id}: probabilities differ by {diff}");
        }
    }
    let report = serde_json::to_string_pretty(&rows).unwrap();
    println!("{report}");
    if let Ok(path) = std::env::var("OFA_PRECISION_REPORT") {
        std::fs::write(path, report).unwrap();
    }
}
