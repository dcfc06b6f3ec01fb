//! `worker`, `submit` and `collect` against a real RabbitMQ node: mixed jobs answered once each
//! with `predict`'s numbers, a non-job and an exhausted transient failure in the dead-letter
//! queue, a model outage that dead-letters nothing, a worker SIGKILLed mid-run, a broker stopped
//! and restarted mid-run, a SIGTERM drain, and the broker's password in no output at all.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::jobs::*;
use common::queue_cli::*;
use common::rabbit::{Rabbit, PASSWORD};
use lapin::types::{AMQPValue, FieldTable};

#[test]
fn mixed_jobs_are_answered_once_and_non_jobs_dead_lettered() {
    let rabbit = Rabbit::start("mixed");
    let (host, flaky) = image_host();
    let dir = scratch("queue-mixed");
    let mut lines = mixed_jobs(&host);
    lines.push("this line is not a job".to_string());
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let sub = submit(&rabbit, &jobs, &["--delivery-limit", "3"]);
    assert!(sub.status.success(), "{}", text(&sub));
    assert!(text(&sub).contains("line 10: not a job"), "{}", text(&sub));
    assert!(text(&sub).contains("published 9 jobs"), "{}", text(&sub));
    // Another producer's message that is not a job at all.
    publish_raw(&rabbit, "ofa.jobs", b"\x00\x01 definitely not JSON");

    let allow = host.trim_start_matches("http://");
    let worker = Worker::start(
        &rabbit,
        &dir,
        &[("DELIVERY_LIMIT", "3"), ("IMAGE_URL_ALLOW", allow)],
    );
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, 8, 60);
    assert!(col.status.success(), "{}", text(&col));

    let got = results_by_id(&out);
    assert_eq!(got.len(), 8, "every job but the exhausted one: {got:?}");
    assert_mixed_answers(&got);
    assert!(got["url"]["timings"]["inference_s"].as_f64().unwrap() > 0.0);

    // The transient failure: delivered DELIVERY_LIMIT times, then dead-lettered.
    let t = Instant::now();
    while worker.jobs("dead_lettered") < 2.0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(flaky.load(Ordering::SeqCst), 3, "fetched once per delivery");
    assert_eq!(worker.jobs("retried"), 2.0);
    assert_eq!(worker.jobs("ok"), 3.0);
    assert_eq!(worker.jobs("error"), 5.0);
    let dead = drain_queue(&rabbit, "ofa.jobs.dead", 2);
    assert_eq!(dead.len(), 2, "the non-job and the exhausted job");
    let reason = |h: &FieldTable| match h.inner().get("x-ofa-dead-letter-reason") {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    let non_job = dead
        .iter()
        .find(|(body, _)| body.starts_with(b"\x00\x01"))
        .expect("the non-job");
    assert!(
        reason(&non_job.1).is_some_and(|r| r.contains("not a job")),
        "{:?}",
        non_job.1
    );
    let exhausted = dead
        .iter()
        .find(|(body, _)| String::from_utf8_lossy(body).contains("\"flaky\""))
        .expect("the flaky job");
    // Dead-lettered by the worker at its last delivery, with the failure as the reason.
    assert!(
        reason(&exhausted.1).is_some_and(|r| r
            .starts_with("failed on delivery 3 of 3 (image_fetch_failed)")
            && r.contains("answered 500")),
        "{:?}",
        exhausted.1
    );

    let (_, metrics) = worker.get("/metrics");
    for family in [
        "ofa_image_fetch_seconds_count",
        "ofa_batch_size_count",
        "ofa_broker_reconnects_total 0",
        "ofa_broker_connected 1",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert_eq!(worker.get("/healthz").0, 200);
    let log = worker.log_text();
    // Warmed up before it took a job, as `serve` is (and so has its breaker's probe pair).
    let warmed = log
        .find("\"event\":\"warmed_up\"")
        .expect("a warmed_up event");
    let connected = log.find("\"event\":\"broker_connected\"").unwrap();
    assert!(warmed < connected, "{log}");
    // The broker's password appears in no output of any command.
    assert!(
        log.contains("\"broker\":\"amqp://ofa-test:***@127.0.0.1"),
        "{log}"
    );
    for output in [log, text(&sub), text(&col)] {
        assert!(!output.contains(PASSWORD), "password leaked: {output}");
    }
}

/// A producer's hostile messages, published raw past `submit`'s checks: a 300-byte id and an
/// id with a line break (each answered with its own error, the worker unharmed), and a message
/// over `MAX_JOB_BYTES` (dead-lettered unread). Every message is settled and the in-flight
/// gauge comes back to zero.
#[test]
fn hostile_messages_are_settled_without_harm() {
    let rabbit = Rabbit::start("hostile");
    let dir = scratch("queue-hostile");
    let long_id = "x".repeat(300);
    let job = |id: &str| {
        serde_json::json!({"id": id, "text": "a small square.", "image_path": "tiny_8x8.png"})
            .to_string()
    };
    // The worker declares the queues; a raw publish to a queue that does not exist is lost.
    let worker = Worker::start(&rabbit, &dir, &[("MAX_JOB_BYTES", "100KB")]);
    publish_raw(&rabbit, "ofa.jobs", job(&long_id).as_bytes());
    publish_raw(&rabbit, "ofa.jobs", job("two\nlines").as_bytes());
    let huge = format!(
        r#"{{"id": "huge", "text": "x", "image": "{}"}}"#,
        "A".repeat(300_000)
    );
    publish_raw(&rabbit, "ofa.jobs", huge.as_bytes());
    publish_raw(&rabbit, "ofa.jobs", job("fine").as_bytes());
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, 3, 60);
    assert!(col.status.success(), "{}", text(&col));
    let got = results_by_id(&out);
    assert_eq!(got[&long_id]["error_type"], "invalid_job_id", "{:?}", got);
    assert_eq!(got["two\nlines"]["error_type"], "invalid_job_id");
    assert_eq!(got["fine"]["status"], "ok");
    let dead = drain_queue(&rabbit, "ofa.jobs.dead", 1);
    assert_eq!(dead.len(), 1);
    assert!(String::from_utf8_lossy(&dead[0].0).contains("\"huge\""));
    let reason = match dead[0].1.inner().get("x-ofa-dead-letter-reason") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("no reason: {other:?}"),
    };
    assert!(reason.contains("MAX_JOB_BYTES"), "{reason}");
    let t = Instant::now();
    while worker.metric("ofa_jobs_in_flight") != 0.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the gauge leaked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(worker.get("/healthz").0, 200);
    let log = worker.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("lines")),
        "an id's line break started no log line: {log}"
    );
}

#[test]
fn a_worker_killed_mid_run_loses_nothing() {
    let rabbit = Rabbit::start("sigkill");
    let dir = scratch("queue-sigkill");
    let n = 120;
    let jobs = many_jobs(&dir, n);
    assert!(submit(&rabbit, &jobs, &[]).status.success());
    let env = [("MAX_BATCH_SIZE", "4")];
    let mut first = Worker::start(&rabbit, &dir, &env);
    first.wait_for_ok(8.0);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(first.get("/healthz").0, 0, "the process is gone");
    let _second = Worker::start(&rabbit, &dir, &env);
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, n, 60);
    assert!(col.status.success(), "{}", text(&col));
    assert_each_once(&out, n);
}

/// The model fails three batches in a row: the breaker opens for a second and refuses the rest
/// of the chunks. Those are the engine's refusals, not the jobs' failures: the worker holds them
/// until its breaker has closed again instead of handing them back to be dead-lettered after a
/// few quick redeliveries. Every job is answered; nothing reaches the dead-letter queue.
#[test]
fn a_model_outage_of_a_few_seconds_dead_letters_nothing() {
    let rabbit = Rabbit::start("outage");
    let dir = scratch("queue-outage");
    let n = 24;
    let env = [
        ("MAX_BATCH_SIZE", "4"),
        ("DELIVERY_LIMIT", "2"),
        ("BREAKER_COOLDOWN", "1"),
        ("FAULT_INJECTION", "true"),
    ];
    let worker = Worker::start(&rabbit, &dir, &env);
    let (status, body) = worker.request("POST", "/debug/fault", r#"{"failures": 3}"#);
    assert_eq!(status, 200, "{body}");
    let jobs = many_jobs(&dir, n);
    let sub = submit(&rabbit, &jobs, &["--delivery-limit", "2"]);
    assert!(sub.status.success(), "{}", text(&sub));
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, n, 60);
    assert!(col.status.success(), "{}", text(&col));
    assert_each_once(&out, n);
    let log = worker.log_text();
    assert!(worker.jobs("retried") >= 1.0, "the failed batches: {log}");
    assert_eq!(worker.jobs("dead_lettered"), 0.0, "{log}");
    assert!(log.contains("model_failure"), "{log}");
    // The outage is in the worker's log: the breaker opened, by the model's error, and closed.
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("breaker_"))
        })
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"breaker_opened"), "{log}");
    assert_eq!(names.last(), Some(&"breaker_closed"), "{log}");
    let error = events[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("injected fault"), "{error}");
}

/// The broker stops (SIGTERM, as Kubernetes or systemd stop it) and starts again mid-run. A
/// SIGKILLed single-node RabbitMQ 3.10 sometimes never elects a leader for the jobs queue again
/// (a broker bug), so the hard kill is not what this test does.
#[test]
fn the_broker_restarting_mid_run_loses_nothing() {
    let mut rabbit = Rabbit::start("restart");
    let dir = scratch("queue-restart");
    let n = 120;
    let jobs = many_jobs(&dir, n);
    assert!(submit(&rabbit, &jobs, &[]).status.success());
    let worker = Worker::start(&rabbit, &dir, &[("MAX_BATCH_SIZE", "4")]);
    worker.wait_for_ok(8.0);
    rabbit.restart();
    let t = Instant::now();
    while worker.metric("ofa_broker_reconnects_total") < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no reconnect: {}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, n, 60);
    assert!(col.status.success(), "{}", text(&col));
    assert_each_once(&out, n);
    let log = worker.log_text();
    assert!(log.contains("broker_connection_lost"), "{log}");
    assert!(!log.contains(PASSWORD));
}

#[test]
fn sigterm_finishes_what_it_holds_and_exits_cleanly() {
    let rabbit = Rabbit::start("sigterm");
    let dir = scratch("queue-sigterm");
    let n = 120;
    let jobs = many_jobs(&dir, n);
    assert!(submit(&rabbit, &jobs, &[]).status.success());
    let env = [("MAX_BATCH_SIZE", "8"), ("SHUTDOWN_TIMEOUT", "20")];
    let mut first = Worker::start(&rabbit, &dir, &env);
    first.wait_for_ok(8.0);
    let t = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(s) = first.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}: {}", first.log_text());
    let log = first.log_text();
    assert!(
        log.contains("worker_draining") && log.contains("\"exit\""),
        "{log}"
    );
    // What it published it acked: a second worker adds the rest and no duplicate.
    let _second = Worker::start(&rabbit, &dir, &env);
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, n, 60);
    assert!(col.status.success(), "{}", text(&col));
    assert!(
        text(&col).contains("0 duplicates dropped"),
        "{}",
        text(&col)
    );
    assert_each_once(&out, n);
}

#[test]
fn submit_and_collect_report_bad_input_and_unmet_expectations() {
    let rabbit = Rabbit::start("cli");
    let dir = scratch("queue-cli");
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(
        &jobs,
        "{\"id\": \"a\", \"text\": \"x\", \"image_path\": \"tiny_8x8.png\"}\n[1, 2]\n{\"id\": \"a\", \"text\": \"y\"}\n",
    )
    .unwrap();
    let strict = submit(&rabbit, &jobs, &["--strict"]);
    assert!(!strict.status.success());
    let msg = text(&strict);
    assert!(
        msg.contains("line 2: not a job") && msg.contains("line 3: duplicate id"),
        "{msg}"
    );
    assert!(msg.contains("nothing published"), "{msg}");
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, 1, 1);
    assert!(
        !col.status.success(),
        "nothing was published, nothing to collect"
    );
    assert!(
        text(&col).contains("expected 1 results, have 0"),
        "{}",
        text(&col)
    );

    let loose = submit(&rabbit, &jobs, &[]);
    assert!(loose.status.success(), "{}", text(&loose));
    assert!(
        text(&loose).contains("published 1 jobs"),
        "{}",
        text(&loose)
    );

    // An id that cannot be published (AMQP's message id holds 255 bytes) is reported by line.
    let long = dir.join("long-id.jsonl");
    std::fs::write(
        &long,
        format!(
            "{{\"id\": \"{}\", \"text\": \"x\", \"image_path\": \"tiny_8x8.png\"}}\n",
            "y".repeat(300)
        ),
    )
    .unwrap();
    let sub = submit(&rabbit, &long, &[]);
    assert!(sub.status.success(), "{}", text(&sub));
    assert!(
        text(&sub).contains("line 1: \"id\" has 300 bytes"),
        "{}",
        text(&sub)
    );
    assert!(text(&sub).contains("published 0 jobs"), "{}", text(&sub));

    // Wrong passwords, one with the characters a naive URL split stops at: a clear error,
    // and no password in it.
    for wrong in ["wrong-pw-Kx7-not-shown", "wr/ong?pw-Kx7@not-shown"] {
        let bad = bin()
            .arg("submit")
            .arg(&jobs)
            .env(
                "AMQP_URL",
                format!("amqp://ofa-test:{wrong}@127.0.0.1:{}/%2f", rabbit.port),
            )
            .output()
            .unwrap();
        assert!(!bad.status.success());
        let msg = text(&bad);
        for part in wrong.split(['/', '?', '@']) {
            assert!(!msg.contains(part), "{part} leaked: {msg}");
        }
        assert!(
            msg.contains("cannot connect to the broker at amqp://ofa-test:***@"),
            "{msg}"
        );
        assert!(!msg.contains(PASSWORD), "{msg}");
    }
}

/// KEDA scales a worker down mid-chunk with `DELIVERY_LIMIT=1`: every image takes a second to
/// fetch, so the worker holds chunks still fetching and jobs it never started. None of them
/// has failed, so none may spend its one delivery: the stopping worker puts them back, a
/// second worker answers them, and the dead-letter queue stays empty.
#[test]
fn a_worker_stopped_mid_chunk_with_a_delivery_limit_of_one_loses_no_job() {
    let rabbit = Rabbit::start("release");
    let dir = scratch("queue-release");
    let catalogue = common::catalogue::Catalogue::start(Duration::from_millis(1000));
    catalogue.put("p.png", common::image("tiny_8x8.png"));
    let n = 24;
    let lines: Vec<String> = (0..n)
        .map(|i| serde_json::json!({"id": format!("job-{i}"), "text": format!("claim {i}."), "image_url": catalogue.url("p.png")}).to_string())
        .collect();
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let env = [
        ("DELIVERY_LIMIT", "1"),
        ("MAX_BATCH_SIZE", "4"),
        ("IMAGE_URL_ALLOW", catalogue.authority()),
        ("SHUTDOWN_TIMEOUT", "20"),
    ];
    let sub = submit(&rabbit, &jobs, &["--delivery-limit", "1"]);
    assert!(sub.status.success(), "{}", text(&sub));
    let mut first = Worker::start(&rabbit, &dir, &env);
    first.wait_for_ok(1.0);
    let status = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        first.child.wait().unwrap().success(),
        "{}",
        first.log_text()
    );
    let log = first.log_text();
    assert!(log.contains("\"job_released\""), "{log}");
    assert!(!log.contains("job_dead_lettered"), "{log}");
    let _second = Worker::start(&rabbit, &dir, &env);
    let out = dir.join("results.jsonl");
    let col = collect(&rabbit, &out, n, 60);
    assert!(col.status.success(), "{}", text(&col));
    assert_each_once(&out, n);
    assert!(drain_queue(&rabbit, "ofa.jobs.dead", 1).is_empty());
}
