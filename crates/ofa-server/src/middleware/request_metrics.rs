//! The request metrics: count and duration by route, status and consumer, and refusals by kind.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::access::Caller;
use crate::error::ErrorType;
use crate::AppState;

pub async fn request_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = super::route(&req);
    let resp = next.run(req).await;
    let consumer = resp
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.consumer.as_ref())
        .map(|c| c.name.as_str());
    state.http_metrics.record_request(
        &route,
        resp.status().as_u16(),
        consumer,
        start.elapsed().as_secs_f64(),
    );
    if let Some(k) = resp.extensions().get::<ErrorType>() {
        state.engine_metrics.record_rejection(k.as_str());
    }
    resp
}
