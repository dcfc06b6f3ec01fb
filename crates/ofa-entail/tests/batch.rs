//! `ofa-entail batch`: a JSONL file of mixed jobs (inline, path and URL images, and every kind
//! of bad job) answered once each with the numbers `predict` gives, transient failures retried
//! up to the delivery limit, and a killed run resumed without answering any job twice.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::jobs::*;
use common::*;
use serde_json::json;

fn batch(jobs: &std::path::Path, out: &std::path::Path) -> Command {
    let mut c = batch_command(jobs, out);
    c.env("IMAGE_ROOT", fixtures().join("golden/images"))
        .env("DELIVERY_LIMIT", "2")
        .env("IMAGE_URL_TIMEOUT", "5");
    c
}

#[test]
fn mixed_jobs_are_each_answered_once_as_predict_would() {
    let (host, flaky) = image_host();
    let dir = scratch("mixed");
    let mut lines = mixed_jobs(&host);
    lines.push("this line is not a job".to_string());
    lines.push(json!({"text": "no id"}).to_string());
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let out = dir.join("results.jsonl");
    let allow = host.trim_start_matches("http://");
    let run = batch(&jobs, &out)
        .env("IMAGE_URL_ALLOW", allow)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("line 10: not a job") && stderr.contains("line 11: not a job"),
        "{stderr}"
    );

    let got = results_by_id(&out);
    assert_eq!(got.len(), 9, "one result per job: {got:?}");
    assert_mixed_answers(&got);
    assert_eq!(got["flaky"]["error_type"], "image_fetch_failed");
    assert_eq!(
        flaky.load(Ordering::SeqCst),
        2,
        "a transient failure is tried DELIVERY_LIMIT times"
    );

    // Run again: everything is answered already.
    let again = batch(&jobs, &out)
        .env("IMAGE_URL_ALLOW", allow)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("9 already answered"));
    assert_eq!(results(&out).len(), 9);
}

#[test]
fn a_killed_run_resumes_and_answers_every_job_exactly_once() {
    let dir = scratch("resume");
    let n = 120;
    let jobs = many_jobs(&dir, n);
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

/// The red team's job-side attacks, each answered by a job's own error and nothing more:
/// internal addresses in every spelling (never connected to by default, and only on the allowed
/// port when allowed), a FIFO under `IMAGE_ROOT`, an inline image over `PAYLOAD_LIMIT`, a
/// 300-byte id, and a line over `MAX_JOB_BYTES` (reported by number, the rest still run).
#[test]
fn hostile_jobs_get_their_own_errors_and_reach_nothing() {
    let port_of = |base: &str| base.rsplit(':').next().unwrap().to_owned();
    let (base, _, connections) = image_host_counting();
    let (other_base, _, other_connections) = image_host_counting();
    let (port, other_port) = (port_of(&base), port_of(&other_base));
    let dir = scratch("hostile");
    let root = dir.join("images");
    std::fs::create_dir(&root).unwrap();
    std::fs::copy(
        fixtures().join("golden/images/tiny_8x8.png"),
        root.join("ok.png"),
    )
    .unwrap();
    let fifo = root.join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let spellings = [
        format!("http://127.0.0.1:{port}/grace.jpg"),
        format!("http://2130706433:{port}/grace.jpg"),
        format!("http://0177.0.0.1:{port}/grace.jpg"),
        format!("http://0x7f.1:{port}/grace.jpg"),
        format!("http://127.1:{port}/grace.jpg"),
        format!("http://0:{port}/grace.jpg"),
        format!("http://[::ffff:127.0.0.1]:{port}/grace.jpg"),
        format!("http://localhost:{port}/grace.jpg"),
        format!("http://user:pass@127.0.0.1:{port}/grace.jpg"),
    ];
    let mut lines: Vec<String> = spellings
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"id": format!("spelling-{i}"), "text": WOMAN, "image_url": u}).to_string()
        })
        .collect();
    lines.push(json!({"id": "fifo", "text": "x", "image_path": "pipe.png"}).to_string());
    lines.push(json!({"id": "path-ok", "text": "x", "image_path": "ok.png"}).to_string());
    lines.push(
        json!({"id": "huge-inline", "text": "x", "image": b64(&vec![7u8; 5 << 20])}).to_string(),
    );
    lines.push(json!({"id": "a".repeat(300), "text": "x", "image_path": "ok.png"}).to_string());
    lines.push(json!({"id": "line\nbreak", "text": "x", "image_path": "ok.png"}).to_string());
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();

    let out = dir.join("default.jsonl");
    let t = Instant::now();
    let run = batch(&jobs, &out)
        .env("IMAGE_ROOT", &root)
        .env("PAYLOAD_LIMIT", "100KB")
        .env("MAX_JOB_BYTES", "1MB")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "nothing stalled the run"
    );
    assert!(
        stderr.contains("line 12:") && stderr.contains("MAX_JOB_BYTES"),
        "the 7 MB line is reported by number: {stderr}"
    );
    let got = results_by_id(&out);
    for i in 0..spellings.len() {
        let r = &got[&format!("spelling-{i}")];
        assert_eq!(
            r["error_type"], "image_url_forbidden",
            "{}: {r}",
            spellings[i]
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing connected");
    assert_eq!(
        got["fifo"]["error_type"], "image_path_refused",
        "{}",
        got["fifo"]
    );
    assert_eq!(got["path-ok"]["status"], "ok");
    assert!(
        !got.contains_key("huge-inline"),
        "over MAX_JOB_BYTES: never run"
    );
    let long_id = "a".repeat(300);
    assert_eq!(got[&long_id]["error_type"], "invalid_job_id");
    assert_eq!(got["line\nbreak"]["error_type"], "invalid_job_id");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count(),
        got.len(),
        "a line break in an id cannot start a results line"
    );

    // The inline image fits MAX_JOB_BYTES but not PAYLOAD_LIMIT: refused before decoding.
    let inline = dir.join("inline.jsonl");
    std::fs::write(&inline, lines[11].clone() + "\n").unwrap();
    let out = dir.join("inline-results.jsonl");
    let run = batch(&inline, &out)
        .env("PAYLOAD_LIMIT", "100KB")
        .output()
        .unwrap();
    assert!(run.status.success());
    let got = results_by_id(&out);
    assert_eq!(got["huge-inline"]["error_type"], "payload_too_large");

    // Allowed on purpose: reachable, and only on the allowed port.
    let allowed = dir.join("allowed.jsonl");
    std::fs::write(
        &allowed,
        [
            json!({"id": "allowed", "text": WOMAN, "image_url": format!("http://127.0.0.1:{port}/grace.jpg")}),
            json!({"id": "other-port", "text": WOMAN, "image_url": format!("http://127.0.0.1:{other_port}/grace.jpg")}),
        ]
        .map(|j| j.to_string())
        .join("\n"),
    )
    .unwrap();
    let out = dir.join("allowed-results.jsonl");
    let run = batch(&allowed, &out)
        .env("IMAGE_URL_ALLOW", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(run.status.success());
    let got = results_by_id(&out);
    assert_eq!(got["allowed"]["status"], "ok", "{}", got["allowed"]);
    assert_eq!(got["other-port"]["error_type"], "image_url_forbidden");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(other_connections.load(Ordering::SeqCst), 0);
}
