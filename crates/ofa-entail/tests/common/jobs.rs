//! What the job commands' tests share: an image host on loopback, scratch directories, the
//! results file, and `predict`'s answer to compare with.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{fixtures, image};

/// `ofa-entail batch JOBS --out OUT` on the tiny model; the caller adds its settings.
pub fn batch_command(jobs: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    c.arg("batch")
        .arg(jobs)
        .arg("--out")
        .arg(out)
        .arg("--model-dir")
        .arg(fixtures().join("tiny_ofa_ve"));
    c
}

/// A loopback image host: `/grace.jpg` (200), `/flaky.png` (500, counted), anything else 404.
pub fn image_host() -> (String, Arc<AtomicUsize>) {
    let (base, flaky, _) = image_host_counting();
    (base, flaky)
}

/// [`image_host`], with its port, also counting every connection it accepts.
pub fn image_host_counting() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let flaky = Arc::new(AtomicUsize::new(0));
    let count = flaky.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            accepted.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let (status, body) = match path.as_str() {
                "/grace.jpg" => ("200 OK", image("grace_hopper.jpg")),
                "/flaky.png" => {
                    count.fetch_add(1, Ordering::SeqCst);
                    ("500 Internal Server Error", b"try later".to_vec())
                }
                _ => ("404 Not Found", b"no".to_vec()),
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (base, flaky, connections)
}

/// A test's scratch directory (jobs, results, worker logs): removed when the test passes, kept
/// when it fails, for its logs.
pub struct Scratch(Option<tempfile::TempDir>);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        self.0.as_ref().expect("held until dropped").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("kept the failed test's files in {}", dir.keep().display());
        }
    }
}

pub fn scratch(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ofa-jobs-{name}-"))
        .tempdir()
        .unwrap();
    Scratch(Some(dir))
}

pub fn results(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

pub fn predict(image_name: &str, text: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("predict")
        .arg("--model-dir")
        .arg(fixtures().join("tiny_ofa_ve"))
        .arg("--image")
        .arg(fixtures().join("golden/images").join(image_name))
        .args(["--text", text])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

pub const WOMAN: &str = "a woman in a military uniform.";

/// Nine jobs, one of each kind: inline, path and URL images that score, every kind of input
/// error, and `flaky` (its URL answers 500: a transient failure).
pub fn mixed_jobs(host: &str) -> Vec<String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    vec![
        json!({"id": "inline", "text": WOMAN, "image": b64(&image("grace_hopper.jpg")), "meta": {"sku": "JKT-1", "n": [1, 2]}}).to_string(),
        json!({"id": "path", "text": "a cat.", "image_path": "chelsea.png"}).to_string(),
        json!({"id": "url", "text": WOMAN, "image_url": format!("{host}/grace.jpg")}).to_string(),
        json!({"id": "corrupt", "text": "x", "image": b64(b"not an image")}).to_string(),
        json!({"id": "no-text", "image_path": "tiny_8x8.png"}).to_string(),
        json!({"id": "two-sources", "text": "x", "image": b64(b"x"), "image_path": "tiny_8x8.png"}).to_string(),
        json!({"id": "gone", "text": "x", "image_url": format!("{host}/missing.png")}).to_string(),
        json!({"id": "escape", "text": "x", "image_path": "../../tiny_ofa_ve/config.json"}).to_string(),
        json!({"id": "flaky", "text": "x", "image_url": format!("{host}/flaky.png")}).to_string(),
    ]
}

/// The results file by id, each id at most once.
pub fn results_by_id(out: &Path) -> HashMap<String, Value> {
    let all = results(out);
    let got: HashMap<String, Value> = all
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v.clone()))
        .collect();
    assert_eq!(got.len(), all.len(), "no id twice");
    got
}

/// The answers to [`mixed_jobs`] but `flaky`: `predict`'s numbers for the three that score,
/// `meta` echoed, and the right error type for each bad input.
pub fn assert_mixed_answers(got: &HashMap<String, Value>) {
    for (id, image_name, text) in [
        ("inline", "grace_hopper.jpg", WOMAN),
        ("path", "chelsea.png", "a cat."),
        ("url", "grace_hopper.jpg", WOMAN),
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
        for field in [
            "result",
            "confidence",
            "scores",
            "model_id",
            "model_revision",
        ] {
            assert!(r.get(field).is_some(), "{id} lacks {field}: {r}");
        }
        assert!(r["timings"]["total_s"].is_number());
    }
    assert_eq!(got["inline"]["meta"], json!({"sku": "JKT-1", "n": [1, 2]}));
    assert!(got["path"].get("meta").is_none());
    for (id, kind) in [
        ("corrupt", "unsupported_image"),
        ("no-text", "missing_text"),
        ("two-sources", "invalid_job"),
        ("gone", "image_url_failed"),
        ("escape", "image_path_refused"),
    ] {
        assert_eq!(got[id]["status"], "error", "{id}");
        assert_eq!(got[id]["error_type"], kind, "{id}: {}", got[id]);
        assert!(got[id]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

/// `n` jobs on the same small image, ids `job-0` … in `dir/jobs.jsonl`.
pub fn many_jobs(dir: &Path, n: usize) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("job-{i}"), "text": format!("claim {i}: a small square."), "image": b64}).to_string())
        .collect();
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    jobs
}
