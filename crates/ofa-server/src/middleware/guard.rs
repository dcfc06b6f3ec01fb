//! The inference routes' guard: a body declared over the limit is refused first; then who is
//! calling (keys, the gateway's header) and their rate and quota, all before the body is read.
//! Guessing credentials is limited per client address.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ofa_access::{BackendChange, Decision, Policy};

use crate::access::{refusal_error, ClientIp, LimitSlot};
use crate::error::{ApiError, ErrorType};
use crate::{parse, AppState};

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
        Some(BackendChange::Down(error)) => tracing::info!(
            backend,
            error,
            fallback = "per-pod limits",
            "limits_backend_down"
        ),
        Some(BackendChange::Up) => tracing::info!(backend, "limits_backend_up"),
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
