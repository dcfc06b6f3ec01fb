//! Probes and introspection: `/healthz`, `/readyz`, `/metrics`, `/info`, and the test-only
//! fault switch.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ofa_engine::prom;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorType};
use crate::AppState;

/// Liveness: the process answers, unless its model failed every probe of the circuit breaker
/// for several cool-downs (then 503 with the reason, and the orchestrator restarts it).
pub async fn healthz(State(state): State<AppState>) -> Response {
    let engine = state.engine();
    let loaded = engine.is_some();
    match engine.and_then(|e| e.failing()) {
        None => Json(json!({"status": "ok", "model_loaded": loaded})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failing", "model_loaded": loaded, "reason": reason})),
        )
            .into_response(),
    }
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let engine = state.engine();
    let breaker = engine
        .as_ref()
        .map_or("closed", |e| e.breaker_state().as_str());
    let body = json!({
        "ready": ready,
        "latency_95": state.http_metrics.latency_p95("/predict"),
        "queue_length": engine.as_ref().map_or(0, |e| e.queue_len()),
        "breaker": breaker,
        "draining": state.drain.is_draining(),
        "limits": limits_status(&state),
    });
    (status_for(ready), Json(body)).into_response()
}

/// Where limits are counted; with Redis away the service still serves, under per-pod limits.
fn limits_status(state: &AppState) -> Value {
    let limits = &state.config.access.limits;
    match limits.shared_up() {
        None => json!({"backend": limits.backend(), "shared": false}),
        Some(up) => json!({
            "backend": limits.backend(),
            "shared": up,
            "fallback": (!up).then_some("per-pod limits while the shared store is unreachable"),
        }),
    }
}

pub fn status_for(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut families = state.http_metrics.gather(state.is_ready());
    families.extend(state.engine_metrics.gather());
    if let Some(up) = state.config.access.limits.shared_up() {
        families.push(prom::gauge_now(
            "ofa_limits_shared_up",
            "1 while the shared limits store (Redis) answers; 0: limits are per pod.",
            f64::from(u8::from(up)),
        ));
    }
    families.extend(prom::process_families());
    let mut resp = Response::new(Body::from(prom::encode(families)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prom::CONTENT_TYPE),
    );
    resp
}

pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let c = &state.config;
    let engine_cfg = state.engine().map(|e| {
        let ec = e.config();
        json!({
            "max_batch_size": ec.max_batch_size,
            "max_batch_wait_ms": ec.max_batch_wait.as_millis() as u64,
            "max_queue": ec.max_queue,
            "breaker_failures": ec.breaker_failures,
            "breaker_cooldown_s": ec.breaker_cooldown.as_secs_f64(),
            "breaker_give_up": ec.breaker_give_up,
            "max_image_pixels": ec.max_image_pixels,
            "max_text_chars": ec.max_text_chars,
            "preprocess_threads": ec.preprocess_threads,
        })
    });
    let conn = &c.connections;
    let a = &c.access;
    let gpu_memory = state.engine().and_then(|e| e.device_memory());
    Json(json!({
        "name": "ofa-entail",
        "version": env!("CARGO_PKG_VERSION"),
        "model_id": c.model_id,
        "model_revision": c.model_revision,
        "model": state.model_info(),
        "gpu_memory": gpu_memory.map(|(used, total)| json!({"used_bytes": used, "total_bytes": total})),
        "limits": {
            "engine": engine_cfg,
            "request_timeout_s": c.request_timeout.as_secs_f64(),
            "payload_limit_bytes": c.payload_limit,
            "max_batch_items": c.max_batch_items,
            "max_rerank_candidates": c.max_rerank_candidates,
            "max_concurrency": c.max_concurrency,
            "rate_limit": a.defaults.rate.map(|r| format!("{}/{}s", r.requests, r.per.as_secs())),
            "quota": a.defaults.quota.map(|q| format!("{}/{:?}", q.requests, q.per).to_lowercase()),
            "limits_backend": a.limits.backend(),
            "api_keys_required": !a.keys.current().is_empty(),
            "consumers": a.keys.current().len(),
            "consumer_header": a.consumer_header.as_ref().map(|h| h.as_str()),
            "max_connections": conn.max_connections,
            "header_timeout_s": conn.header_timeout.as_secs_f64(),
            "body_timeout_s": conn.body_timeout.as_secs_f64(),
            "keep_alive_timeout_s": conn.keep_alive_timeout.as_secs_f64(),
        },
    }))
}

#[derive(Deserialize)]
pub struct Fault {
    #[serde(default)]
    failures: u32,
    /// Panic in this handler (tests that a panic is one request's 500).
    #[serde(default)]
    panic: bool,
}

pub async fn inject_fault(
    State(state): State<AppState>,
    Json(f): Json<Fault>,
) -> Result<Json<Value>, ApiError> {
    let e = state.loaded_engine()?;
    if f.panic && e.config().fault_injection {
        panic!("injected handler panic (test-only fault switch)");
    }
    if e.inject_failures(f.failures) {
        Ok(Json(json!({"injected": f.failures})))
    } else {
        Err(ApiError::new(ErrorType::NotFound, "fault injection is off"))
    }
}
