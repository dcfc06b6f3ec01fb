//! Images by URL and data URI in JSON bodies: fetched from a real HTTP server on loopback
//! (admitted by `IMAGE_URL_ALLOW`), scored exactly as the same bytes sent inline, each distinct
//! URL fetched once per request; a URL the policy refuses is never connected to, and a dead
//! one fails its request, or on `/rerank` only its candidate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{json, Value};

use crate::common::*;

/// An image server on loopback: `/NAME` answers the fixture image, and every request is
/// counted by path.
pub struct ImageServer {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl ImageServer {
    pub async fn start() -> ImageServer {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/{name}",
                get(
                    |State(hits): State<Arc<Mutex<HashMap<String, usize>>>>,
                     Path(name): Path<String>| async move {
                        *hits.lock().unwrap().entry(name.clone()).or_default() += 1;
                        match std::fs::read(fixtures().join("golden/images").join(&name)) {
                            Ok(bytes) => (StatusCode::OK, bytes),
                            Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
                        }
                    },
                ),
            )
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ImageServer { addr, hits }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    pub fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// A service whose `IMAGE_URL_ALLOW` admits this server (and `also`).
    pub fn service(&self, also: &[&str]) -> ofa_server::AppState {
        let mut allow = vec![self.addr.to_string()];
        allow.extend(also.iter().map(|s| s.to_string()));
        build(
            Options {
                image_urls: Some(url_fetcher(&allow.join(","))),
                ..Options::default()
            },
            open_access(),
        )
    }
}

/// A loopback address nothing listens on.
pub fn dead_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_url_or_data_uri_scores_as_the_same_bytes_inline() {
    let images = ImageServer::start().await;
    let state = images.service(&[]);
    let bytes = image("grace_hopper.jpg");
    let text = "a woman in a military uniform.";
    let (status, inline) = call_json(
        &state,
        json_request("/predict", &json!({"image": b64(&bytes), "text": text})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{inline}");
    let fetches = metric(&state, "ofa_image_url_fetch_seconds_count").await;
    let resp = send(
        &state,
        json_request(
            "/predict",
            &json!({"image": images.url("grace_hopper.jpg"), "text": text}),
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-fetch-time"));
    let by_url: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(by_url, inline, "the same bytes, the same answer");
    assert_eq!(images.hits("grace_hopper.jpg"), 1);
    assert_eq!(
        metric(&state, "ofa_image_url_fetch_seconds_count").await - fetches,
        1.0
    );
    let data_uri = format!("data:image/jpeg;base64,{}", b64(&bytes));
    let (status, by_uri) = call_json(
        &state,
        json_request("/predict", &json!({"image": data_uri, "text": text})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_uri}");
    assert_eq!(by_uri, inline);

    // KServe's BYTES image elements may be URLs too.
    let infer = json!({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2], "data": [images.url("grace_hopper.jpg"), b64(&bytes)]},
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": [text, text]},
    ]});
    let (status, v) = call_json(&state, json_request("/v2/models/ofa-entail/infer", &infer)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let probs = v["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(probs[..3], probs[3..], "by URL and inline alike: {v}");
    assert_eq!(
        images.hits("grace_hopper.jpg"),
        2,
        "a second request fetches again"
    );

    // A batch naming one URL three times fetches it once; a missing image names its item.
    let url = images.url("chelsea.png");
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"image": url, "text": format!("a cat {i}.")}))
        .collect();
    let (status, v) = call_json(&state, json_request("/predict/batch", &json!(items))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(images.hits("chelsea.png"), 1, "one fetch per distinct URL");
    let items = json!([
        {"image": url, "text": "a cat."},
        {"image": images.url("nope.png"), "text": "a cat."},
    ]);
    let (status, v) = call_json(&state, json_request("/predict/batch", &items)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error_type"], "image_url_failed");
    assert!(v["error"].as_str().unwrap().starts_with("item 1: "), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_url_is_never_connected_to_and_a_dead_one_fails_alone() {
    let images = ImageServer::start().await;
    // The default policy: public addresses only, so loopback is refused before connecting.
    let state = build(Options::default(), open_access());
    let (status, v) = call_json(
        &state,
        json_request(
            "/predict",
            &json!({"image": images.url("grace_hopper.jpg"), "text": "x"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error_type"], "image_url_forbidden");
    assert_eq!(
        images.hits("grace_hopper.jpg"),
        0,
        "nothing was connected to"
    );
    let (status, v) = call_json(
        &state,
        json_request(
            "/predict",
            &json!({"image": "ftp://example.com/a.jpg", "text": "x"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error_type"], "invalid_base64", "not a URL we fetch: {v}");

    // Allowed, on rerank: the dead URL's candidate fails alone, the repeated one is fetched
    // once, the others are ranked.
    let dead = dead_addr();
    let dead_url = format!("http://{dead}/gone.jpg");
    let state = images.service(&[&dead]);
    let body = json!({
        "text": "a woman in a military uniform.",
        "images": [
            images.url("grace_hopper.jpg"),
            dead_url,
            images.url("chelsea.png"),
            images.url("grace_hopper.jpg"),
        ],
    });
    let (status, v) = call_json(&state, json_request("/rerank", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r["error_type"].is_string())
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["index"], 1);
    assert_eq!(failed[0]["error_type"], "image_fetch_failed");
    assert_eq!(images.hits("grace_hopper.jpg"), 1);
    let scores: HashMap<u64, f64> = results
        .iter()
        .filter_map(|r| Some((r["index"].as_u64()?, r["score"].as_f64()?)))
        .collect();
    assert_eq!(scores[&0], scores[&3], "one image, one score");
    assert_eq!(
        metric(
            &state,
            "ofa_rejections_total{reason=\"image_fetch_failed\"}"
        )
        .await,
        1.0
    );
    // Every candidate dead: the request itself fails with that error.
    let body = json!({"image": format!("http://{dead}/gone.jpg"), "texts": ["a", "b"]});
    let (status, v) = call_json(&state, json_request("/rerank", &body)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error_type"], "image_fetch_failed");
}
