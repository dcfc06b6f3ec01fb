//! The `ofa-entail` binary as a user runs it: real process, tiny model fixture.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .args(args)
        .env_remove("MODEL_DIR")
        .output()
        .expect("binary runs")
}

/// The JSON a successful command printed on stdout.
fn json_output(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tiny() -> String {
    fixtures().join("tiny_ofa_ve").display().to_string()
}

fn image(name: &str) -> String {
    fixtures()
        .join("golden/images")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn predict_prints_the_client_json() {
    let t = tiny();
    let coffee = image("coffee.png");
    let args = [
        "predict",
        "--model-dir",
        &t,
        "--image",
        &coffee,
        "--text",
        "the cup is full of coffee.",
        "--premise",
        "A cup of coffee sits on a saucer next to a spoon.",
    ];
    // The ResNet channels-last (a GPU's default) gives the same answer on the CPU.
    let mut channels_last = args.to_vec();
    channels_last.extend(["--resnet-layout", "channels-last"]);
    let last = json_output(&run(&channels_last));
    let out = run(&args);
    let v = json_output(&out);
    // Reference (cases.json, coffee_premise_hypothesis): no 0.23396, yes 0.60297, maybe 0.16307.
    let details: Vec<f64> = serde_json::from_value(v["details"].clone()).unwrap();
    let last: Vec<f64> = serde_json::from_value(last["details"].clone()).unwrap();
    for ((got, last), want) in
        details
            .iter()
            .zip(&last)
            .zip([0.602_967_6, 0.233_957_77, 0.163_074_6])
    {
        assert!((got - want).abs() < 1e-5, "{details:?}");
        assert!((last - want).abs() < 1e-5, "channels-last: {last:?}");
    }
    assert_ne!(
        details, last,
        "the same arithmetic both ways: was the layout applied?"
    );
    assert_eq!(v["result"], 0);
    assert_eq!(v["label"], "Yes");
    assert_eq!(v["confidence"].as_f64().unwrap(), details[0]);
    let keys: Vec<&String> = v["scores"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["yes", "no", "maybe"]);
}

fn assert_fails(args: &[&str], needle: &str) {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(needle), "{err} lacks {needle}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let tmp = tempfile::Builder::new()
        .prefix("ofa-cli-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let jpeg = std::fs::read(fixtures().join("golden/images/grace_hopper.jpg")).unwrap();
    let truncated = dir.join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let t = tiny();
    assert_fails(
        &[
            "predict",
            "--model-dir",
            &t,
            "--image",
            "/no/such.jpg",
            "--text",
            "x",
        ],
        "/no/such.jpg",
    );
    assert_fails(
        &[
            "predict",
            "--model-dir",
            &t,
            "--image",
            truncated.to_str().unwrap(),
            "--text",
            "x",
        ],
        "truncated",
    );
    assert_fails(
        &[
            "predict",
            "--model-dir",
            &t,
            "--image",
            text.to_str().unwrap(),
            "--text",
            "x",
        ],
        "unsupported format",
    );
    assert_fails(
        &[
            "predict",
            "--model-dir",
            "/no/model",
            "--image",
            &image("coffee.png"),
            "--text",
            "x",
        ],
        "/no/model",
    );
    assert_fails(
        &[
            "predict",
            "--model-dir",
            &t,
            "--image",
            &image("coffee.png"),
            "--text",
            "x",
            "--max-image-pixels",
            "1000",
        ],
        "exceeds the limit",
    );

    assert_fails(
        &[
            "predict",
            "--model-dir",
            &t,
            "--image",
            &image("coffee.png"),
            "--text",
            "x",
            "--precision",
            "int8",
            "--resnet-layout",
            "channels-first",
        ],
        "int8 ResNet runs channels-last",
    );

    // A model directory missing its vocabulary.
    let broken = dir.join("model");
    std::fs::create_dir_all(&broken).unwrap();
    for f in [
        "config.json",
        "configuration.json",
        "answer2label.json",
        "merges.txt",
        "model.safetensors",
    ] {
        std::fs::copy(fixtures().join("tiny_ofa_ve").join(f), broken.join(f)).unwrap();
    }
    assert_fails(
        &[
            "predict",
            "--model-dir",
            broken.to_str().unwrap(),
            "--image",
            &image("coffee.png"),
            "--text",
            "x",
        ],
        "vocab.json",
    );
}

#[test]
fn bench_json_reports_every_stage_and_memory() {
    let out = run(&[
        "bench",
        "--model-dir",
        &tiny(),
        "--batch-sizes",
        "1,2",
        "--iterations",
        "1",
        "--json",
    ]);
    let v = json_output(&out);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 10_000_000);
    assert_eq!(v["encoder_tokens"], 900 + 16);
    assert_eq!(
        v["resnet_layout"], "channels-first",
        "the CPU's own kernels"
    );
    // `auto`, the default, times layouts only where they are a choice (not the fused CPU).
    assert!(v["resnet_layout_tuning"].is_null(), "{v}");
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    for (b, want) in batches.iter().zip([1, 2]) {
        assert_eq!(b["batch_size"], want);
        for k in [
            "preprocess_ms",
            "resnet_ms",
            "encoder_ms",
            "decoder_ms",
            "total_ms",
            "per_pair_ms",
        ] {
            assert!(b[k].as_f64().unwrap() > 0.0, "{k}");
        }
    }
}

#[test]
fn bench_profile_ops_splits_each_stage_by_operation() {
    let out = run(&[
        "bench",
        "--model-dir",
        &tiny(),
        "--batch-sizes",
        "2",
        "--iterations",
        "1",
        "--resnet-layout",
        "channels-last",
        "--profile-ops",
        "--json",
    ]);
    let v = json_output(&out);
    assert_eq!(v["resnet_layout"], "channels-last");
    let batch = &v["batches"][0];
    let ops = batch["ops"].as_array().unwrap();
    let find = |stage: &str, op: &str| {
        ops.iter()
            .find(|o| o["stage"] == stage && o["op"] == op)
            .unwrap_or_else(|| panic!("no {stage} {op} in {ops:?}"))
    };
    // The tiny ResNet: six 3×3 convolutions, and two strided 1×1 ones through im2col too.
    assert_eq!(find("resnet", "conv 3×3 GEMM (channels-last)")["calls"], 6);
    assert_eq!(find("resnet", "conv im2col (channels-last)")["calls"], 8);
    for stage in ["resnet", "encoder", "decoder"] {
        let sum: f64 = ops
            .iter()
            .filter(|o| o["stage"] == stage)
            .map(|o| o["ms"].as_f64().unwrap())
            .sum();
        find(stage, "(not timed separately)");
        // The profiled run is one more run, timed apart from the medians.
        assert!(sum > 0.0, "{stage}: {ops:?}");
    }
    let plain = run(&[
        "bench",
        "--model-dir",
        &tiny(),
        "--batch-sizes",
        "1",
        "--iterations",
        "1",
        "--json",
    ]);
    assert!(json_output(&plain)["batches"][0].get("ops").is_none());
}

#[test]
fn env_example_documents_exactly_the_variables_serve_reads() {
    let example = std::fs::read_to_string(fixtures().join("../.env.example")).unwrap();
    let documented: std::collections::BTreeSet<String> = example
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    let help = String::from_utf8(run(&["serve", "--help"]).stdout).unwrap();
    let read: std::collections::BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next().map(str::to_owned))
        .collect();
    assert_eq!(documented, read, ".env.example and `serve --help` disagree");
}

#[test]
fn convert_writes_safetensors_that_predict_then_uses() {
    let dir_guard = tempfile::Builder::new()
        .prefix("ofa-cli-convert-")
        .tempdir()
        .unwrap();
    let dir = dir_guard.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "config.json",
        "configuration.json",
        "answer2label.json",
        "vocab.json",
        "merges.txt",
        "pytorch_model.bin",
    ] {
        std::fs::copy(fixtures().join("tiny_ofa_ve").join(f), dir.join(f)).unwrap();
    }
    let d = dir.to_str().unwrap();
    let before = run(&[
        "predict",
        "--model-dir",
        d,
        "--image",
        &image("coffee.png"),
        "--text",
        "a cup.",
    ]);
    assert!(before.status.success());
    let out = run(&["convert", "--model-dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("model.safetensors").is_file());
    let after = run(&[
        "predict",
        "--model-dir",
        d,
        "--image",
        &image("coffee.png"),
        "--text",
        "a cup.",
    ]);
    assert_eq!(
        before.stdout, after.stdout,
        "same answer from the converted weights"
    );
    let missing = run(&["convert", "--model-dir", "/no/such/model"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pytorch_model.bin"));
}
