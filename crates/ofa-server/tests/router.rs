//! The HTTP layer in process: the router with the real engine and the real model code on the
//! tiny checkpoint, called through `tower`'s `oneshot` (no socket, no process). Bad input gets
//! its specific status and error kind, table-driven, and leaves the service healthy; the routes
//! answer as documented. What needs a real connection (curl's `Expect: 100-continue`, slow
//! clients, SIGTERM) stays in the binary's black-box tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use ofa_access::{ForwardedHeader, KeyStore, Limits, Policy, TrustedProxies};
use ofa_engine::{Drain, Engine, EngineConfig, EngineMetrics};
use ofa_model::{Device, Entailment};
use ofa_server::access::AccessConfig;
use ofa_server::conn::ConnLimits;
use ofa_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("golden/images").join(name)).unwrap()
}

/// The service as `serve` builds it, with these limits, on the tiny model.
fn service(payload_limit: usize, max_image_pixels: u64, max_text_chars: usize) -> AppState {
    service_with(payload_limit, max_image_pixels, max_text_chars, |_| {})
}

/// [`service`], with its access control set by `access` (keys, limits).
fn service_with(
    payload_limit: usize,
    max_image_pixels: u64,
    max_text_chars: usize,
    access: impl FnOnce(&mut AccessConfig),
) -> AppState {
    let mut open = AccessConfig {
        keys: Arc::new(KeyStore::open(None, &[]).unwrap()),
        defaults: Policy::default(),
        consumer_header: None,
        trusted_proxies: TrustedProxies::parse("").unwrap(),
        forwarded_header: ForwardedHeader::parse("x-forwarded-for").unwrap(),
        auth_failures: None,
        cache_per_consumer: true,
        gateway_secret: None,
        limits: Arc::new(Limits::in_memory(1000)),
        key_poll: Duration::from_secs(3600),
    };
    access(&mut open);
    let config = ServerConfig {
        request_timeout: Duration::from_secs(30),
        payload_limit,
        upload_memory: 256 << 20,
        max_text_chars,
        max_batch_items: 32,
        max_rerank_candidates: 64,
        max_concurrency: None,
        access: open,
        drain_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(5),
        connections: ConnLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        },
        model_id: "tiny".into(),
        model_revision: "test".into(),
        tracing: None,
        fault_route: false,
    };
    let metrics = Arc::new(EngineMetrics::default());
    let drain = Arc::new(Drain::default());
    let state = AppState::new(config, metrics.clone(), drain.clone());
    let model = Entailment::load(fixtures().join("tiny_ofa_ve"), &Device::Cpu).unwrap();
    let answers = model.answers().to_vec();
    let engine = Engine::start(
        Arc::new(model),
        EngineConfig {
            max_image_pixels,
            max_text_chars,
            ..EngineConfig::default()
        },
        metrics,
        drain,
    );
    let engine = Arc::new(engine);
    engine
        .warmup(
            &ofa_engine::Pair {
                image: image("tiny_8x8.png").into(),
                text: "a photo.".into(),
                premise: None,
                cache_scope: 0,
            },
            &[1],
        )
        .unwrap();
    state.set_engine(engine, json!({"answers": answers}));
    state
}

/// A request from a client on loopback, as the accept loop hands it to the router.
fn request(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    let mut req = b.body(Body::from(body)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

fn json_request(path: &str, v: &Value) -> Request<Body> {
    request(
        "POST",
        path,
        Some("application/json"),
        v.to_string().into_bytes(),
    )
}

/// A multipart form of named parts, as browsers and curl send it.
fn multipart(parts: &[(&str, &[u8])]) -> Request<Body> {
    let boundary = "ofa-test-boundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = if *name == "image" {
            "; filename=\"x.jpg\""
        } else {
            ""
        };
        body.extend_from_slice(
            format!("content-disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    request(
        "POST",
        "/predict",
        Some(&format!("multipart/form-data; boundary={boundary}")),
        body,
    )
}

async fn call(state: &AppState, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::new(w, h)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

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

/// A writer the log test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_request_is_one_log_line_with_what_every_layer_learned() {
    use tracing_subscriber::layer::SubscriberExt;
    let state = service(2 << 20, 310_000, 100);
    let out = Captured::default();
    let lines = ofa_api::logging::Lines::new(
        ofa_api::logging::LogFormat::Json,
        Box::new(out.clone()),
        None,
    );
    // Events on this thread (the whole request runs on it) go to the capture.
    let _log = tracing::subscriber::set_default(tracing_subscriber::registry().with(lines));
    let mut req = request("POST", "/predict", Some("text/plain"), b"hello".to_vec());
    req.headers_mut()
        .insert("x-request-id", "r-1".parse().unwrap());
    let (status, _) = call(&state, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["event"] == "request")
        .unwrap_or_else(|| panic!("no request line in {text}"));
    assert_eq!(line["request_id"], "r-1", "{line}");
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
async fn keys_are_required_and_each_has_its_own_rate() {
    let state = service_with(2 << 20, 310_000, 100, |a| {
        a.keys = Arc::new(KeyStore::open(None, &["k1".into(), "k2".into()]).unwrap());
        a.defaults = Policy {
            rate: Some("3/minute".parse().unwrap()),
            quota: None,
        };
    });
    let img = image("tiny_8x8.png");
    let predict = |auth: Option<(&'static str, &str)>| {
        let mut req = multipart(&[("image", &img), ("text", b"x")]);
        if let Some((name, value)) = auth {
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        req
    };
    let send = |req| {
        let state = state.clone();
        async move { router(state).oneshot(req).await.unwrap() }
    };
    let r = send(predict(None)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = send(predict(Some(("authorization", "Bearer wrong")))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Health and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            send(request("GET", path, None, vec![])).await.status(),
            StatusCode::OK
        );
    }
    for i in 0..3 {
        let r = send(predict(Some(("authorization", "Bearer k1")))).await;
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let r = send(predict(Some(("authorization", "Bearer k1")))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers().contains_key("retry-after") && r.headers().contains_key("x-ratelimit-limit")
    );
    // Limits are per key: the other key still has its own budget.
    let r = send(predict(Some(("x-api-key", "k2")))).await;
    assert_eq!(r.status(), StatusCode::OK);
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
