//! `/v1/rerank` and `/v2/rerank` in Cohere's and Jina's shape: image URLs as plain strings,
//! scores equal to `/predict`'s `yes`, best first; an image query with text documents; a long
//! list scored in chunks; documents echoed when asked; bad documents isolated, bad requests
//! refused whole.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::images::ImageServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_query_ranks_image_urls_as_predict_scores_them() {
    let images = ImageServer::start().await;
    let state = images.service(&[]);
    let names = ["chelsea.png", "grace_hopper.jpg", "camera.png"];
    let query = "a woman in a military uniform.";
    let documents: Vec<String> = names.iter().map(|n| images.url(n)).collect();
    for route in ["/v1/rerank", "/v2/rerank"] {
        let body = json!({"model": "ofa", "query": query, "documents": documents, "top_n": 2, "return_documents": true});
        let (status, v) = call_json(&state, json_request(route, &body)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["model"], "ofa");
        assert!(
            v["id"].is_string() && v["meta"].is_object() && v["usage"].is_object(),
            "{v}"
        );
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "top_n");
        let mut last = f64::INFINITY;
        for r in results {
            let i = r["index"].as_u64().unwrap() as usize;
            let (_, alone) = call_json(
                &state,
                json_request(
                    "/predict",
                    &json!({"image": b64(&image(names[i])), "text": query}),
                ),
            )
            .await;
            let score = r["relevance_score"].as_f64().unwrap();
            assert!(
                (score - alone["scores"]["yes"].as_f64().unwrap()).abs() < 1e-5,
                "{r} vs {alone}"
            );
            assert!(score <= last, "best first");
            last = score;
            assert_eq!(r["document"], json!({"image": documents[i]}));
        }
    }
    // Without return_documents no document; top_n past the count returns them all.
    let body = json!({"query": query, "documents": documents, "top_n": 10});
    let (_, v) = call_json(&state, json_request("/v1/rerank", &body)).await;
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.get("document").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_query_ranks_300_text_documents_in_chunks() {
    let images = ImageServer::start().await;
    let state = images.service(&[]);
    let texts: Vec<String> = (0..300).map(|i| format!("a photo number {i}.")).collect();
    // Objects and a data URI work as well as plain strings.
    let query = json!({"image": format!("data:image/png;base64,{}", b64(&image("chelsea.png")))});
    let body = json!({"query": query, "documents": texts, "return_documents": true});
    let misses = metric(&state, "ofa_image_cache_misses_total").await;
    let (status, v) = call_json(&state, json_request("/v1/rerank", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        metric(&state, "ofa_image_cache_misses_total").await - misses,
        1.0,
        "the query image runs the ResNet once for the whole request, with no cache configured"
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 300);
    let mut seen: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..300).collect::<Vec<u64>>(), "each document once");
    assert_eq!(
        results[0]["document"]["text"],
        texts[results[0]["index"].as_u64().unwrap() as usize]
    );
    assert_eq!(v["usage"]["total_tokens"], 300);
    // The query image by URL is fetched once, not once a chunk.
    let body = json!({"query": images.url("camera.png"), "documents": texts});
    let (status, v) = call_json(&state, json_request("/v2/rerank", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(images.hits("camera.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_fail_alone_and_bad_requests_whole() {
    let images = ImageServer::start().await;
    let dead = crate::images::dead_addr();
    let state = images.service(&[&dead]);
    let documents = json!([
        images.url("grace_hopper.jpg"),
        format!("http://{dead}/gone.jpg"),
        "data:image/png;base64,bm90IGFuIGltYWdl",
    ]);
    let body = json!({"query": "a woman.", "documents": documents});
    let (status, v) = call_json(&state, json_request("/v1/rerank", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let by_index: HashMap<u64, &Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(v["results"][0]["index"], 0, "the good one first");
    assert_eq!(by_index[&1]["error_type"], "image_fetch_failed");
    assert_eq!(by_index[&1]["relevance_score"], 0.0);
    assert_eq!(by_index[&2]["error_type"], "unsupported_image");

    // A forbidden URL under the default policy: refused without a connection.
    let strict = build(Options::default(), open_access());
    let body = json!({"query": "a woman.", "documents": [images.url("chelsea.png")]});
    let (status, v) = call_json(&strict, json_request("/v1/rerank", &body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error_type"], "image_url_forbidden");
    assert_eq!(images.hits("chelsea.png"), 0);

    let small = build(
        Options {
            max_rerank_documents: 3,
            ..Options::default()
        },
        open_access(),
    );
    for (body, status, kind) in [
        (
            json!({"query": "a", "documents": ["b", "c"]}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": images.url("a.png"), "documents": [images.url("b.png")]}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": "a", "documents": []}),
            400,
            "invalid_rerank_request",
        ),
        (json!({"documents": ["x"]}), 400, "invalid_json"),
        (
            json!({"query": "a", "documents": [{"text": "b", "image": "c"}]}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": "a", "documents": vec![images.url("a.png"); 4]}),
            413,
            "batch_too_large",
        ),
        (
            json!({"query": "a", "documents": [images.url("a.png")], "label": "perhaps"}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": "a", "documents": [images.url("a.png")], "top_n": 0}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": "a", "documents": [images.url("a.png")], "top_n": 4}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"query": "a", "documents": [images.url("a.png")], "top_n": 1e30}),
            400,
            "invalid_rerank_request",
        ),
    ] {
        let (got, v) = call_json(&small, json_request("/v1/rerank", &body)).await;
        assert_eq!(got.as_u16(), status, "{body}: {v}");
        assert_eq!(v["error_type"], kind, "{body}: {v}");
    }
}

/// A long request is scored chunk by chunk, so a `/predict` sent meanwhile is answered long
/// before it ends; one that could only miss its deadline is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_requests_leave_room_for_others_and_hopeless_ones_are_refused_up_front() {
    // Time enough that the long request is never refused up front on a busy machine.
    let state = build(
        Options {
            request_timeout: std::time::Duration::from_secs(300),
            ..Options::default()
        },
        open_access(),
    );
    let texts: Vec<String> = (0..400).map(|i| format!("a photo number {i}.")).collect();
    let query = json!({"image": b64(&image("grace_hopper.jpg"))});
    let long = {
        let state = state.clone();
        let body = json!({"query": query, "documents": texts});
        tokio::spawn(async move { call_json(&state, json_request("/v1/rerank", &body)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let (status, v) = call_json(
        &state,
        json_request(
            "/predict",
            &json!({"image": b64(&image("tiny_8x8.png")), "text": "x"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let short = t.elapsed();
    let short_done = std::time::Instant::now();
    let long_finished_first = long.is_finished();
    let (status, v) = long.await.unwrap();
    assert!(
        !long_finished_first,
        "the short request ({short:?}) waited for the long one, which ended {:?} after it",
        short_done.elapsed()
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 400);

    let hurried = build(
        Options {
            request_timeout: std::time::Duration::from_millis(1500),
            ..Options::default()
        },
        open_access(),
    );
    // One timed batch first, so the engine knows its pace.
    let (status, _) = call_json(
        &hurried,
        json_request(
            "/predict",
            &json!({"image": b64(&image("grace_hopper.jpg")), "text": "x"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let texts: Vec<String> = (0..1000).map(|i| format!("claim {i}.")).collect();
    let started = std::time::Instant::now();
    let resp = send(
        &hurried,
        json_request("/v1/rerank", &json!({"query": query, "documents": texts})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(400),
        "refused at once"
    );
    let v: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(v["error_type"], "queue_full");
    assert!(
        v["error"].as_str().unwrap().contains("1000 candidates"),
        "{v}"
    );
}
