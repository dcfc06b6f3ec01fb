//! `ofa-entail batch`: a JSONL file of mixed jobs (inline, path and URL images, and every kind
//! of bad job) answered once each with the numbers `predict` gives, transient failures retried
//! up to the delivery limit, and a killed run resumed without answering any job twice.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::jobs::*;
use common::*;
use serde_json::{json, Value};

fn batch(jobs: &std::path::Path, out: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    c.arg("batch")
        .arg(jobs)
        .arg("--out")
        .arg(out)
        .arg("--model-dir")
        .arg(fixtures().join("tiny_ofa_ve"))
        .env("IMAGE_ROOT", fixtures().join("golden/images"))
        .env("DELIVERY_LIMIT", "2")
        .env("IMAGE_URL_TIMEOUT", "5");
    c
}

#[test]
fn mixed_jobs_are_each_answered_once_as_predict_would() {
    let (host, flaky) = image_host();
    let dir = scratch("mixed");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let woman = "a woman in a military uniform.";
    let lines = [
        json!({"id": "inline", "text": woman, "image": b64(&image("grace_hopper.jpg")), "meta": {"sku": "JKT-1", "n": [1, 2]}}).to_string(),
        json!({"id": "path", "text": "a cat.", "image_path": "chelsea.png"}).to_string(),
        json!({"id": "url", "text": woman, "image_url": format!("{host}/grace.jpg")}).to_string(),
        json!({"id": "corrupt", "text": "x", "image": b64(b"not an image")}).to_string(),
        json!({"id": "no-text", "image_path": "tiny_8x8.png"}).to_string(),
        json!({"id": "two-sources", "text": "x", "image": b64(b"x"), "image_path": "tiny_8x8.png"}).to_string(),
        json!({"id": "gone", "text": "x", "image_url": format!("{host}/missing.png")}).to_string(),
        json!({"id": "escape", "text": "x", "image_path": "../../tiny_ofa_ve/config.json"}).to_string(),
        json!({"id": "flaky", "text": "x", "image_url": format!("{host}/flaky.png")}).to_string(),
        "this line is not a job".to_string(),
        json!({"text": "no id"}).to_string(),
    ];
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let out = dir.join("results.jsonl");
    let run = batch(&jobs, &out).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("line 10: not a job") && stderr.contains("line 11: not a job"),
        "{stderr}"
    );

    let got: HashMap<String, Value> = results(&out)
        .into_iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v))
        .collect();
    assert_eq!(got.len(), 9, "one result per job: {got:?}");
    assert_eq!(results(&out).len(), 9, "and no id twice");
    for (id, image_name, text) in [
        ("inline", "grace_hopper.jpg", woman),
        ("path", "chelsea.png", "a cat."),
        ("url", "grace_hopper.jpg", woman),
    ] {
        let r = &got[id];
        let want = predict(image_name, text);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["label"], want["label"], "{id}");
        for k in 0..3 {
            let d =
                (r["details"][k].as_f64().unwrap() - want["details"][k].as_f64().unwrap()).abs();
            assert!(d < 1e-5, "{id}: {r} vs {want}");
        }
        assert!(r["model_id"].is_string() && r["timings"]["total_s"].is_number());
    }
    assert_eq!(got["inline"]["meta"], json!({"sku": "JKT-1", "n": [1, 2]}));
    assert!(got["path"].get("meta").is_none());
    for (id, kind) in [
        ("corrupt", "unsupported_image"),
        ("no-text", "missing_text"),
        ("two-sources", "invalid_job"),
        ("gone", "image_url_failed"),
        ("escape", "image_path_refused"),
        ("flaky", "image_fetch_failed"),
    ] {
        assert_eq!(got[id]["status"], "error", "{id}");
        assert_eq!(got[id]["error_type"], kind, "{id}: {}", got[id]);
        assert!(got[id]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(
        flaky.load(Ordering::SeqCst),
        2,
        "a transient failure is tried DELIVERY_LIMIT times"
    );

    // Run again: everything is answered already.
    let again = batch(&jobs, &out).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("9 already answered"));
    assert_eq!(results(&out).len(), 9);
}

#[test]
fn a_killed_run_resumes_and_answers_every_job_exactly_once() {
    let dir = scratch("resume");
    let b64 = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let n = 120;
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("job-{i}"), "text": format!("claim {i}: a small square."), "image": b64}).to_string())
        .collect();
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let out = dir.join("results.jsonl");
    let mut child = batch(&jobs, &out).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= 8 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(
        partial < n,
        "the run finished before the kill; make it longer"
    );
    // A write cut short by the kill: the rerun repairs it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .unwrap()
        .write_all(b"{\"id\": \"job-")
        .unwrap();
    let rerun = batch(&jobs, &out).output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let all = results(&out);
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(all.len(), n, "every line a result");
    assert_eq!(ids.len(), n, "every id exactly once");
    assert!(all.iter().all(|v| v["status"] == "ok"));
}
