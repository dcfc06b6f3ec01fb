//! What wraps every request: the request id, one JSON log line and the request metrics; on
//! inference routes, API keys, rate limits and the up-front payload check.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use ofa_access::{BackendChange, Decision, Policy};
use opentelemetry::KeyValue;
use serde_json::Value;

use crate::access::{refusal_error, Caller, ClientIp, LimitSlot};
use crate::error::{ApiError, ErrorType};
use crate::timings::Timings;
use crate::{parse, trace, AppState};

/// One JSON log line and the request metrics for every request; refusals counted by kind.
pub async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| state.config.access.client_ip(*peer, req.headers()));
    if let Some(ip) = client_ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(request_id);
    let tracer = state.config.tracing.as_ref();
    let trace = trace::start(tracer, req.headers(), format!("{method} {route}"));
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let caller = resp.extensions().get::<Caller>().cloned();
    let consumer = caller
        .as_ref()
        .and_then(|c| c.consumer.as_ref())
        .map(|c| c.name.clone());
    state
        .http_metrics
        .record_request(&route, status, consumer.as_deref(), elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let kind = resp.extensions().get::<ErrorType>().copied();
    if let Some(k) = kind {
        state.engine_metrics.record_rejection(k.as_str());
    }
    let mut fields: Vec<(&str, Value)> = vec![
        ("request_id", id.clone().into()),
        ("method", method.clone().into()),
        ("route", route.clone().into()),
        ("status", status.into()),
        ("total_time", elapsed.as_secs_f64().into()),
    ];
    if let Some(ip) = client_ip {
        fields.push(("client_ip", ip.to_string().into()));
    }
    if let Some(name) = consumer {
        fields.push(("consumer", name.into()));
    }
    let timings = resp.extensions().get::<Timings>().cloned();
    if let Some(t) = &timings {
        fields.push(("queue_time", t.queue.as_secs_f64().into()));
        fields.push(("inference_time", t.inference.as_secs_f64().into()));
    }
    if let Some((trace_id, span_id)) = trace.ids() {
        fields.push(("trace_id", trace_id.into()));
        fields.push(("span_id", span_id.into()));
    }
    if let Some(v) = trace
        .traceparent()
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        resp.headers_mut().insert("traceparent", v);
    }
    if let Some(k) = kind {
        fields.push(("error_type", k.as_str().into()));
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("ofa.request_id", id),
    ];
    if let Some(c) = caller.as_ref().and_then(|c| c.consumer.as_ref()) {
        attributes.push(KeyValue::new("ofa.consumer", c.name.clone()));
    }
    state.log.event("request", &fields);
    trace.finish(tracer, attributes, status, timings.as_ref());
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
            let message = ofa_api::panic::panic_message(&*panic);
            state
                .log
                .event("request_panicked", &[("error", message.into())]);
            ApiError::new(ErrorType::Internal, "internal error").into_response()
        }
    }
}

/// Inference routes: a body declared over the limit is refused before anything else; then
/// who is calling and their limits, all before the body is read.
pub async fn guard_inference(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let limit = state.config.payload_limit;
    if parse::declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
        return parse::too_large(limit).into_response();
    }
    let access = &state.config.access;
    let client_ip = req
        .extensions()
        .get::<ClientIp>()
        .map_or_else(|| access.client_ip(peer, req.headers()), |c| c.0);
    // Guessing keys or the gateway secret: failures are limited per client address, and an
    // address over its limit is refused before its credentials are even compared.
    let guard = access
        .auth_failures
        .filter(|_| access.authenticates())
        .map(|rate| {
            (
                format!("auth-failures:{client_ip}"),
                Policy {
                    rate: Some(rate),
                    quota: None,
                },
            )
        });
    if let Some((key, policy)) = &guard {
        let (d, change) = access.limits.check(key, policy, 0).await;
        note_backend(&state, change);
        if !d.allowed() {
            return ApiError::new(
                ErrorType::RateLimited,
                "too many failed authentications from this address",
            )
            .retry_after(d.retry_after())
            .into_response();
        }
    }
    let caller = match access.identify(peer, client_ip, req.headers()) {
        Ok(c) => c,
        Err(e) => {
            if let Some((key, policy)) = &guard {
                let (_, change) = access.limits.check(key, policy, 1).await;
                note_backend(&state, change);
            }
            return e.into_response();
        }
    };
    let (decision, change) = access
        .limits
        .check(&caller.limit_key(), &caller.policy(&access.defaults), 1)
        .await;
    note_backend(&state, change);
    let slot = LimitSlot::default();
    let mut resp = match refusal_error(&decision) {
        Some(e) => e.into_response(),
        None => {
            req.extensions_mut().insert(caller.clone());
            req.extensions_mut().insert(slot.clone());
            next.run(req).await
        }
    };
    // The handler's charge for the rest of the pairs, when it made one, is the latest word.
    let charged = std::mem::take(&mut *slot.0.lock().unwrap_or_else(|p| p.into_inner()));
    note_backend(&state, charged.change);
    let latest = charged.decision.unwrap_or(decision);
    add_limit_headers(resp.headers_mut(), &latest);
    resp.extensions_mut().insert(caller);
    resp
}

/// The shared limits store went away or came back, as any check found: one log line.
fn note_backend(state: &AppState, change: Option<BackendChange>) {
    let backend = state.config.access.limits.backend();
    match change {
        Some(BackendChange::Down(error)) => state.log.event(
            "limits_backend_down",
            &[
                ("backend", backend.into()),
                ("error", error.into()),
                ("fallback", "per-pod limits".into()),
            ],
        ),
        Some(BackendChange::Up) => state
            .log
            .event("limits_backend_up", &[("backend", backend.into())]),
        None => {}
    }
}

fn add_limit_headers(h: &mut HeaderMap, d: &Decision) {
    let windows = [("x-ratelimit", d.rate), ("x-quota", d.quota)];
    for (prefix, w) in windows {
        let Some(w) = w else { continue };
        for (suffix, v) in [
            ("limit", w.limit),
            ("remaining", w.remaining),
            ("reset", w.reset.as_secs_f64().ceil() as u64),
        ] {
            if let Ok(name) = header::HeaderName::try_from(format!("{prefix}-{suffix}")) {
                h.insert(name, HeaderValue::from(v));
            }
        }
    }
}
