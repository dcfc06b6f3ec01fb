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
