//! Routes: inference (`/predict`, `/predict/batch`), probes, metrics and information.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ofa_engine::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorKind};
use crate::{kserve, secs, AppState};

pub fn router(state: AppState) -> Router {
    let limit = state.config.payload_limit;
    let inference = Router::new()
        .route("/predict", post(predict))
        .route("/predict/batch", post(predict_batch))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_versioned),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard_inference,
        ));
    let mut app = Router::new()
        .merge(inference)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/info", get(info))
        .route("/", get(page))
        .route("/docs", get(docs_page))
        .route("/openapi.json", get(openapi))
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::model_metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready));
    if state.config.fault_route {
        app = app.route("/debug/fault", post(inject_fault));
    }
    app.layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// One JSON log line and the request metrics for every request.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(request_id);
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    state
        .metrics
        .record_request(&route, status, elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let kind = resp.extensions().get::<ErrorKind>().map(|k| k.0);
    if let Some(k) = kind {
        state.metrics.record_rejection(k);
    }
    let header_secs = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<f64>().ok())
    };
    let mut fields: Vec<(&str, Value)> = vec![
        ("request_id", id.clone().into()),
        ("method", method.into()),
        ("route", route.into()),
        ("status", status.into()),
        ("total_time", elapsed.as_secs_f64().into()),
    ];
    if let Some(q) = header_secs("x-queue-time") {
        fields.push(("queue_time", q.into()));
    }
    if let Some(i) = header_secs("x-inference-time") {
        fields.push(("inference_time", i.into()));
    }
    if let Some(k) = kind {
        fields.push(("error_type", k.into()));
    }
    state.log.event("request", &fields);
    resp
}

fn request_id() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}-{n:x}", t as u64 ^ (std::process::id() as u64) << 32)
}

/// API keys and rate limits on inference routes; the in-flight gauge.
async fn guard_inference(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let key = api_key(req.headers());
    if !state.config.api_keys.is_empty()
        && !key
            .as_ref()
            .is_some_and(|k| state.config.api_keys.contains(k))
    {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer KEY or X-API-Key)",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut limit_headers = None;
    if let Some(limiter) = state.limiter() {
        let client = match (&key, state.config.api_keys.is_empty()) {
            (Some(k), false) => format!("key:{k}"),
            _ => format!("ip:{}", peer.ip()),
        };
        let d = limiter.check(&client);
        limit_headers = Some(d);
        if !d.allowed {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit of {} requests exceeded", d.limit),
            )
            .retry_after(d.reset)
            .into_response();
            add_limit_headers(r.headers_mut(), &d);
            return r;
        }
    }
    let now = state.metrics.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _in_flight = InFlight(state.metrics.clone());
    if let Some(max) = state.config.max_concurrency {
        if now as usize > max {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_concurrent",
                format!("more than {max} requests in flight"),
            )
            .retry_after(Duration::from_secs(1))
            .into_response();
        }
    }
    let mut resp = next.run(req).await;
    if let Some(d) = limit_headers {
        add_limit_headers(resp.headers_mut(), &d);
    }
    resp
}

struct InFlight(Arc<ofa_engine::Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn add_limit_headers(h: &mut HeaderMap, d: &crate::limit::Decision) {
    for (name, v) in [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        (
            "x-ratelimit-reset",
            d.reset.as_secs_f64().ceil().to_string(),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    }
}

fn api_key(h: &HeaderMap) -> Option<String> {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| {
        h.get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

/// One pair as JSON clients send it.
#[derive(Deserialize)]
struct JsonPair {
    image: Option<String>,
    #[serde(alias = "hypothesis")]
    text: Option<String>,
    /// ModelScope's own input names the premise `text2`.
    #[serde(alias = "text2")]
    premise: Option<String>,
}

struct Pair {
    image: Vec<u8>,
    text: String,
    premise: Option<String>,
}

impl JsonPair {
    fn into_pair(self, at: &str) -> Result<Pair, ApiError> {
        let image = self.image.ok_or_else(|| {
            ApiError::bad_request("missing_image", format!("{at}missing \"image\" (base64)"))
        })?;
        let text = self.text.ok_or_else(|| {
            ApiError::bad_request("missing_text", format!("{at}missing \"text\""))
        })?;
        let b64 = image
            .split_once(";base64,")
            .map_or(image.as_str(), |(_, d)| d);
        let image = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_base64",
                    format!("{at}\"image\" is not valid base64: {e}"),
                )
            })?;
        Ok(Pair {
            image,
            text,
            premise: self.premise,
        })
    }
}

fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn read_json_body(req: Request, state: &AppState) -> Result<Value, ApiError> {
    let body = Bytes::from_request(req, state).await.map_err(|r| {
        ApiError::new(
            r.status(),
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_body"
            },
            r.body_text(),
        )
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

async fn parse_pair(req: Request, state: &AppState) -> Result<Pair, ApiError> {
    let ct = content_type(&req);
    if ct.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), "invalid_multipart", r.body_text()))?;
        let (mut image, mut text, mut premise) = (None, None, None);
        let too_big = |e: axum::extract::multipart::MultipartError| {
            let status = e.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_multipart"
            };
            ApiError::new(status, kind, e.body_text())
        };
        while let Some(field) = mp.next_field().await.map_err(too_big)? {
            let name = field.name().unwrap_or("").to_owned();
            match name.as_str() {
                "image" | "file" => image = Some(field.bytes().await.map_err(too_big)?.to_vec()),
                "text" | "hypothesis" | "premise" | "text2" => {
                    let bytes = field.bytes().await.map_err(too_big)?;
                    let s = String::from_utf8(bytes.to_vec()).map_err(|_| {
                        ApiError::bad_request(
                            "invalid_utf8",
                            format!("form field {name:?} is not valid UTF-8"),
                        )
                    })?;
                    if name == "premise" || name == "text2" {
                        premise = Some(s);
                    } else {
                        text = Some(s);
                    }
                }
                _ => {}
            }
        }
        Ok(Pair {
            image: image.ok_or_else(|| {
                ApiError::bad_request(
                    "missing_image",
                    "missing form field \"image\" (the image file)",
                )
            })?,
            text: text.ok_or_else(|| {
                ApiError::bad_request("missing_text", "missing form field \"text\"")
            })?,
            premise,
        })
    } else if ct.starts_with("application/json") {
        let v = read_json_body(req, state).await?;
        let p: JsonPair = serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request: {e}")))?;
        p.into_pair("")
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "expected multipart/form-data or application/json, got {:?}",
                ct
            ),
        ))
    }
}

fn engine(state: &AppState) -> Result<Arc<Engine>, ApiError> {
    state.engine().ok_or_else(ApiError::loading)
}

async fn prepare(
    engine: &Arc<Engine>,
    pair: Pair,
) -> Result<ofa_model::pipeline::Prepared, ApiError> {
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.prepare(&pair.image, &pair.text, pair.premise.as_deref()))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("preprocessing failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn timing_headers(h: &mut HeaderMap, queue: Duration, inference: Duration, total: Duration) {
    for (name, d) in [
        ("x-queue-time", queue),
        ("x-inference-time", inference),
        ("x-total-time", total),
    ] {
        if let Ok(v) = HeaderValue::from_str(&secs(d)) {
            h.insert(name, v);
        }
    }
}

async fn predict(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = engine(&state)?;
    let pair = parse_pair(req, &state).await?;
    let prepared = prepare(&engine, pair).await?;
    let outcome = engine.infer(prepared, deadline).await?;
    let mut resp = Json(&outcome.prediction).into_response();
    timing_headers(
        resp.headers_mut(),
        outcome.queue_time,
        outcome.inference_time,
        start.elapsed(),
    );
    Ok(resp)
}

/// Refuses batches over `max_batch_items`.
pub(crate) fn check_batch_len(state: &AppState, n: usize) -> Result<(), ApiError> {
    if n > state.config.max_batch_items {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{n} items, more than the limit of {}",
                state.config.max_batch_items
            ),
        ));
    }
    Ok(())
}

/// Admits every pair before awaiting any, so they batch together; a refusal midway drops the
/// receivers already held, which cancels those items. Answers in order.
pub(crate) async fn run_all(
    engine: &Engine,
    prepared: Vec<ofa_model::pipeline::Prepared>,
    deadline: Instant,
) -> Result<Vec<ofa_engine::Outcome>, ApiError> {
    let mut receivers = Vec::with_capacity(prepared.len());
    for p in prepared {
        receivers.push(engine.submit(p, deadline)?);
    }
    let mut outcomes = Vec::with_capacity(receivers.len());
    for rx in receivers {
        outcomes.push(match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_failure",
                    "the inference thread stopped",
                ))
            }
            Err(_) => return Err(ofa_engine::EngineError::DeadlineExceeded.into()),
        });
    }
    Ok(outcomes)
}

async fn predict_batch(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = engine(&state)?;
    if !content_type(&req).starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "expected application/json: a list of {\"image\", \"text\", \"premise\"}",
        ));
    }
    let v = read_json_body(req, &state).await?;
    let items: Vec<JsonPair> = match v {
        Value::Array(_) => serde_json::from_value(v),
        Value::Object(mut o) if o.contains_key("items") => {
            serde_json::from_value(o.remove("items").unwrap_or_default())
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "expected a JSON list of items",
            ))
        }
    }
    .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid batch: {e}")))?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch has no items",
        ));
    }
    check_batch_len(&state, items.len())?;
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("item {i}: ");
        let pair = item.into_pair(&at)?;
        let p = prepare(&engine, pair).await.map_err(|mut e| {
            e.message = format!("{at}{}", e.message);
            e
        })?;
        prepared.push(p);
    }
    let outcomes = run_all(&engine, prepared, deadline).await?;
    let queue = outcomes
        .iter()
        .map(|o| o.queue_time)
        .max()
        .unwrap_or_default();
    let infer = outcomes
        .iter()
        .map(|o| o.inference_time)
        .max()
        .unwrap_or_default();
    let results: Vec<ofa_model::Prediction> = outcomes.into_iter().map(|o| o.prediction).collect();
    let mut resp = Json(results).into_response();
    timing_headers(resp.headers_mut(), queue, infer, start.elapsed());
    Ok(resp)
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "model_loaded": state.engine().is_some()}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let engine = state.engine();
    let breaker = engine
        .as_ref()
        .map_or("closed", |e| e.breaker().state().as_str());
    let body = json!({
        "ready": ready,
        "latency_95": state.metrics.latency_p95("/predict"),
        "queue_length": engine.as_ref().map_or(0, |e| e.queue_len()),
        "breaker": breaker,
        "draining": state.is_draining(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(e) = state.engine() {
        state.metrics.set_breaker(e.breaker().state());
    }
    state
        .metrics
        .ready
        .store(i64::from(state.is_ready()), Ordering::Relaxed);
    let mut resp = Response::new(Body::from(state.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    let c = &state.config;
    let model = state.engine().map(|e| {
        let p = e.pipeline();
        json!({"config": p.config, "runtime": p.runtime, "answers": p.answers()})
    });
    let engine_cfg = state.engine().map(|e| {
        let ec = e.config();
        json!({
            "max_batch_size": ec.max_batch_size,
            "max_batch_wait_ms": ec.max_batch_wait.as_millis() as u64,
            "max_queue": ec.max_queue,
            "breaker_failures": ec.breaker_failures,
            "breaker_cooldown_s": ec.breaker_cooldown.as_secs_f64(),
            "max_image_pixels": ec.max_image_pixels,
            "max_text_chars": ec.max_text_chars,
        })
    });
    Json(json!({
        "name": "ofa-entail",
        "version": env!("CARGO_PKG_VERSION"),
        "model_id": c.model_id,
        "model_revision": c.model_revision,
        "model": model,
        "limits": {
            "engine": engine_cfg,
            "request_timeout_s": c.request_timeout.as_secs_f64(),
            "payload_limit_bytes": c.payload_limit,
            "max_batch_items": c.max_batch_items,
            "rate_limit": c.rate_limit.map(|r| format!("{}/{}s", r.requests, r.per.as_secs())),
            "api_keys_required": !c.api_keys.is_empty(),
        },
    }))
}

#[derive(Deserialize)]
struct Fault {
    failures: u32,
}

async fn inject_fault(
    State(state): State<AppState>,
    Json(f): Json<Fault>,
) -> Result<Json<Value>, ApiError> {
    let e = engine(&state)?;
    if e.inject_failures(f.failures) {
        Ok(Json(json!({"injected": f.failures})))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "fault injection is off",
        ))
    }
}

async fn infer_versioned(
    state: State<AppState>,
    Path((name, _version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    kserve::infer(state, Path(name), headers, body).await
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DOCS_HTML: &str = include_str!("../assets/docs.html");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(INDEX_HTML)
}

async fn docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(DOCS_HTML)
}

async fn openapi() -> Response {
    let mut resp = Response::new(Body::from(OPENAPI_JSON));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
