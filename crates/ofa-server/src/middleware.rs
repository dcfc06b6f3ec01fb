//! What wraps every request: the request id, one JSON log line and the request metrics; on
//! inference routes, API keys, rate limits and the up-front payload check.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde_json::Value;

use crate::error::{ApiError, ErrorType};
use crate::limit::Decision;
use crate::{parse, AppState};

/// Where an answered pair's time went; handlers put it on the response for the log line.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub queue: Duration,
    pub inference: Duration,
}

/// One JSON log line and the request metrics for every request; refusals counted by kind.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(request_id);
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    state
        .http_metrics
        .record_request(&route, status, elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let kind = resp.extensions().get::<ErrorType>().copied();
    if let Some(k) = kind {
        state.engine_metrics.record_rejection(k.as_str());
    }
    let mut fields: Vec<(&str, Value)> = vec![
        ("request_id", id.into()),
        ("method", method.into()),
        ("route", route.into()),
        ("status", status.into()),
        ("total_time", elapsed.as_secs_f64().into()),
    ];
    if let Some(t) = resp.extensions().get::<Timings>() {
        fields.push(("queue_time", t.queue.as_secs_f64().into()));
        fields.push(("inference_time", t.inference.as_secs_f64().into()));
    }
    if let Some(k) = kind {
        fields.push(("error_type", k.as_str().into()));
    }
    state.log.event("request", &fields);
    resp
}

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}-{n:x}", t as u64 ^ (std::process::id() as u64) << 32)
}

/// A panic while handling a request is a 500 for that request (logged and counted by
/// [`track`] like any error), never the process's end.
pub async fn catch_panic(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let message = ofa_model::error::panic_message(&*panic);
            state
                .log
                .event("request_panicked", &[("error", message.into())]);
            ApiError::new(ErrorType::Internal, "internal error").into_response()
        }
    }
}

/// Inference routes: a body declared over the limit is refused before anything else; then
/// API keys and rate limits, all before the body is read.
pub async fn guard_inference(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.config.payload_limit;
    if parse::declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
        return parse::too_large(limit).into_response();
    }
    let key = api_key(req.headers());
    if !state.config.api_keys.is_empty()
        && !key
            .as_ref()
            .is_some_and(|k| state.config.api_keys.contains(k))
    {
        return ApiError::new(
            ErrorType::Unauthorized,
            "a valid API key is required (Authorization: Bearer KEY or X-API-Key)",
        )
        .into_response();
    }
    let mut decision = None;
    if let Some(limiter) = state.limiter() {
        let client = match (&key, state.config.api_keys.is_empty()) {
            (Some(k), false) => format!("key:{k}"),
            _ => format!("ip:{}", peer.ip()),
        };
        let d = limiter.check(&client);
        if !d.allowed {
            let mut r = ApiError::new(
                ErrorType::RateLimited,
                format!("rate limit of {} requests exceeded", d.limit),
            )
            .retry_after(d.reset)
            .into_response();
            add_limit_headers(r.headers_mut(), &d);
            return r;
        }
        decision = Some(d);
    }
    let mut resp = next.run(req).await;
    if let Some(d) = decision {
        add_limit_headers(resp.headers_mut(), &d);
    }
    resp
}

fn add_limit_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from(d.reset.as_secs_f64().ceil() as u64),
    );
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
