//! What every answer carries (a request id, one error shape, one log line) and the served
//! contract: the OpenAPI document, its routes, and pages that load nothing external.

use axum::http::StatusCode;
use http_body_util::BodyExt;
use ofa_server::router;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_errors_the_one_json_shape() {
    let state = service(2 << 20, 310_000, 100);
    let mut req = request("GET", "/healthz", None, vec![]);
    req.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = router(state.clone())
        .oneshot(request("GET", "/info", None, vec![]))
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!generated.is_empty());
    let (status, body) = call(&state, request("GET", "/openapi.json", None, vec![])).await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_slice(&body).unwrap();
    let kinds = spec["components"]["schemas"]["Error"]["properties"]["error_type"]["enum"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        kinds,
        ofa_api::ErrorType::on(ofa_api::error_type::Surface::Http).count(),
        "the served contract lists every kind the routes answer with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_log_line_with_what_every_layer_learned() {
    let state = service(2 << 20, 310_000, 100);
    let mut req = request("POST", "/predict", Some("text/plain"), b"hello".to_vec());
    req.headers_mut()
        .insert("x-request-id", "log-line-1".parse().unwrap());
    let (status, _) = call(&state, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let line: Value = log()
        .requests("log-line-1")
        .pop()
        .unwrap_or_else(|| panic!("no request line in {:?}", log().lines()));
    assert_eq!(line["request_id"], "log-line-1", "{line}");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/predict");
    assert_eq!(line["status"], 415);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["error_type"], "unsupported_content_type");
    assert!(
        line["total_time"].as_f64().is_some_and(|t| t >= 0.0),
        "{line}"
    );
    assert!(
        line.get("consumer").is_none(),
        "anonymous: no consumer field"
    );
    assert!(line["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_lists_the_routes_and_the_pages_load_nothing_external() {
    let state = service(2 << 20, 310_000, 100);
    let (status, body) = call(&state, request("GET", "/openapi.json", None, vec![])).await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        "/predict",
        "/predict/batch",
        "/healthz",
        "/readyz",
        "/metrics",
        "/info",
        "/v2/models/{name}/infer",
    ] {
        assert!(paths.contains_key(p), "{p} undocumented");
    }
    // Every documented GET route exists.
    for (path, item) in paths {
        if item.get("get").is_some() {
            let concrete = path.replace("{name}", "ofa-entail");
            let (status, _) = call(&state, request("GET", &concrete, None, vec![])).await;
            assert_eq!(status, StatusCode::OK, "GET {concrete}");
        }
    }
    for page in ["/", "/docs"] {
        let resp = router(state.clone())
            .oneshot(request("GET", page, None, vec![]))
            .await
            .unwrap();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{page}: {ct}");
        let html = resp.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8_lossy(&html).to_lowercase();
        for attr in ["src=\"http", "href=\"http", "src='http", "@import", "cdn"] {
            assert!(
                !html.contains(attr),
                "{page} loads an external asset ({attr})"
            );
        }
    }
}
