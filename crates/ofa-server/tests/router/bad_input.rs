//! Bad input, table-driven: each case its status and error kind, and the service still healthy.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_4xx_and_never_harms_the_service() {
    let state = service(2 << 20, 310_000, 100);
    let jpeg = image("grace_hopper.jpg");
    let gif_head = image("no_time_for_that_tiny.gif")[..40].to_vec();
    let tiny = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let many: Vec<Value> = (0..33)
        .map(|_| json!({"image": tiny, "text": "x"}))
        .collect();
    let long_text = "word ".repeat(30);
    let cases: Vec<(&str, Request<Body>, u16, &str)> = vec![
        (
            "only a text",
            multipart(&[("text", b"x")]),
            400,
            "missing_image",
        ),
        (
            "only an image",
            multipart(&[("image", &jpeg)]),
            400,
            "missing_text",
        ),
        (
            "a blank text",
            multipart(&[("image", &jpeg), ("text", b"   ")]),
            422,
            "invalid_text",
        ),
        (
            "a text over MAX_TEXT_CHARS",
            multipart(&[("image", &jpeg), ("text", long_text.as_bytes())]),
            422,
            "invalid_text",
        ),
        (
            "half a JPEG",
            multipart(&[("image", &jpeg[..jpeg.len() / 2]), ("text", b"x")]),
            400,
            "invalid_image",
        ),
        (
            "a GIF's first bytes",
            multipart(&[("image", &gif_head), ("text", b"x")]),
            400,
            "invalid_image",
        ),
        (
            "text as an image",
            multipart(&[("image", b"just some text"), ("text", b"x")]),
            415,
            "unsupported_image",
        ),
        (
            "over MAX_IMAGE_PIXELS",
            multipart(&[("image", &png(600, 600)), ("text", b"x")]),
            413,
            "image_too_large",
        ),
        (
            "over PAYLOAD_LIMIT",
            multipart(&[("image", &vec![7u8; 3 << 20]), ("text", b"x")]),
            413,
            "payload_too_large",
        ),
        (
            "plain text",
            request("POST", "/predict", Some("text/plain"), b"hello".to_vec()),
            415,
            "unsupported_content_type",
        ),
        (
            "broken JSON",
            request(
                "POST",
                "/predict",
                Some("application/json"),
                b"{not json".to_vec(),
            ),
            400,
            "invalid_json",
        ),
        (
            "bad base64",
            json_request(
                "/predict",
                &json!({"image": "@@@not base64@@@", "text": "x"}),
            ),
            400,
            "invalid_base64",
        ),
        (
            "a text not UTF-8",
            multipart(&[("image", &jpeg), ("text", &[0xff, 0xfe, 0x41])]),
            400,
            "invalid_utf8",
        ),
        (
            "an empty batch",
            json_request("/predict/batch", &json!([])),
            400,
            "empty_batch",
        ),
        (
            "a batch over MAX_BATCH_ITEMS",
            json_request("/predict/batch", &json!(many)),
            413,
            "batch_too_large",
        ),
        (
            "a batch item without an image",
            json_request(
                "/predict/batch",
                &json!([{"image": tiny, "text": "x"}, {"text": "x"}]),
            ),
            400,
            "missing_image",
        ),
        (
            "no such route",
            request("GET", "/nowhere", None, vec![]),
            404,
            "not_found",
        ),
        (
            "a wrong method",
            request("GET", "/predict", None, vec![]),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, req, status, kind) in cases {
        let (got, body) = call(&state, req).await;
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert_eq!(
            (got.as_u16(), v["error_type"].as_str()),
            (status, Some(kind)),
            "{what}: {v}"
        );
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
        if what == "a batch item without an image" {
            assert!(v["error"].as_str().unwrap().starts_with("item 1:"), "{v}");
        }
    }
    // Still healthy and correct afterwards.
    let (status, body) = call(
        &state,
        multipart(&[
            ("image", &jpeg),
            ("text", b"a woman in a military uniform."),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        ["Yes", "No", "Maybe"].contains(&v["label"].as_str().unwrap()),
        "{v}"
    );
    let (status, _) = call(&state, request("GET", "/readyz", None, vec![])).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = call(&state, request("GET", "/metrics", None, vec![])).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("ofa_rejections_total{reason=\"invalid_image\"} 2"),
        "{metrics}"
    );
}
