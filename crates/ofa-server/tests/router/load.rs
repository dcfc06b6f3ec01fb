//! Under load: concurrent requests share forward passes; past the queue, 429 with
//! `Retry-After` and nothing accepted is lost; a request that could only time out is refused at
//! once; a deadline gives 504 without running; past `MAX_CONCURRENCY`, 429.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ofa_engine::EngineConfig;
use ofa_server::AppState;
use serde_json::Value;

use crate::common::*;

/// Sends `n` multipart predictions of (`img`, "x") at once; each ends with its status, its
/// `Retry-After`, its error kind and how long it took.
async fn burst(state: &AppState, img: &[u8], n: usize) -> Vec<(u16, bool, String, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (state, img) = (state.clone(), img.to_vec());
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = send(&state, multipart(&[("image", &img), ("text", b"x")])).await;
                let status = resp.status().as_u16();
                let retry = resp.headers().contains_key("retry-after");
                let body = body_bytes(resp).await;
                let kind = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error_type"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                (status, retry, kind, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn engine(max_batch_size: usize, max_queue: usize) -> EngineConfig {
    EngineConfig {
        max_batch_size,
        max_queue,
        ..EngineConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_batched() {
    let state = build(
        Options {
            engine: engine(8, 128),
            ..Options::default()
        },
        open_access(),
    );
    let before = metric(&state, "ofa_batch_size_count").await;
    for (status, _, kind, _) in burst(&state, &image("tiny_8x8.png"), 64).await {
        assert_eq!(status, 200, "{kind}");
    }
    let batches = metric(&state, "ofa_batch_size_count").await - before;
    let singles = metric(&state, "ofa_batch_size_bucket{le=\"1\"}").await - before;
    assert!(
        batches < 64.0 && singles < batches,
        "64 requests ran in {batches} batches, {singles} of size 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_gets_429_with_retry_after_and_nothing_accepted_is_lost() {
    let state = build(
        Options {
            engine: engine(1, 2),
            ..Options::default()
        },
        open_access(),
    );
    let (mut ok, mut refused) = (0, 0);
    for (status, retry, kind, _) in burst(&state, &image("grace_hopper.jpg"), 40).await {
        match status {
            200 => ok += 1,
            429 => {
                assert!(retry, "429 without Retry-After");
                assert_eq!(kind, "queue_full");
                refused += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok + refused, 40);
    assert!(refused > 0 && ok > 0, "ok {ok}, refused {refused}");
    assert_eq!(
        metric(&state, "ofa_rejections_total{reason=\"queue_full\"}").await as i32,
        refused
    );
    assert_eq!(metric(&state, "ofa_queue_depth").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_could_only_time_out_are_refused_at_once() {
    let state = build(
        Options {
            engine: engine(1, 64),
            request_timeout: Duration::from_secs(1),
            ..Options::default()
        },
        open_access(),
    );
    let img = image("grace_hopper.jpg");
    // One request first, so the engine knows how long a forward pass takes.
    let (status, _) = call(&state, multipart(&[("image", &img), ("text", b"x")])).await;
    assert_eq!(status, StatusCode::OK);
    let (mut ok, mut refused_fast, mut timed_out) = (0, 0, 0);
    for (status, _, _, took) in burst(&state, &img, 24).await {
        match status {
            200 => ok += 1,
            429 => {
                assert!(
                    took < Duration::from_millis(900),
                    "a refusal must not wait: {took:?}"
                );
                refused_fast += 1;
            }
            504 => timed_out += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        ok > 0 && refused_fast > 0,
        "ok {ok}, refused {refused_fast}, timed out {timed_out}"
    );
    assert!(
        timed_out < refused_fast,
        "most hopeless requests are refused up front: {timed_out} 504s vs {refused_fast} 429s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_gives_504_and_the_request_never_runs() {
    let state = build(
        Options {
            request_timeout: Duration::from_millis(1),
            ..Options::default()
        },
        open_access(),
    );
    // The warm-up ran one batch; this request must add none.
    let before = metric(&state, "ofa_batch_size_count").await;
    let (status, v) = call_json(
        &state,
        multipart(&[("image", &image("grace_hopper.jpg")), ("text", b"x")]),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error_type"], "deadline_exceeded");
    assert_eq!(
        metric(&state, "ofa_batch_size_count").await,
        before,
        "nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_concurrency_limit_requests_get_429() {
    let state = build(
        Options {
            engine: engine(1, 64),
            max_concurrency: Some(2),
            ..Options::default()
        },
        open_access(),
    );
    let mut limited = 0;
    for (status, retry, kind, _) in burst(&state, &image("grace_hopper.jpg"), 8).await {
        match status {
            200 => {}
            429 if kind == "too_many_concurrent" => {
                assert!(retry, "429 without Retry-After");
                limited += 1
            }
            other => panic!("unexpected {other} {kind}"),
        }
    }
    assert!(limited > 0);
}
