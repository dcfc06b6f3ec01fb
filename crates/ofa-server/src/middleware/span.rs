//! The request's trace span (when tracing is configured): continued from the client's
//! `traceparent`, answered with ours, and finished with the route, the consumer and the
//! timings. Its ids go to the request log in the response's extensions.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;

use super::RequestId;
use crate::access::Caller;
use crate::timings::Timings;
use crate::{trace, AppState};

/// The span's trace and span ids, as the log prints them.
#[derive(Debug, Clone)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

pub async fn span(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = super::route(&req);
    let method = req.method().to_string();
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let tracer = state.config.tracing.as_ref();
    let trace = trace::start(tracer, req.headers(), format!("{method} {route}"));
    let mut resp = next.run(req).await;
    if let Some((trace_id, span_id)) = trace.ids() {
        resp.extensions_mut().insert(TraceIds { trace_id, span_id });
    }
    if let Some(v) = trace
        .traceparent()
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        resp.headers_mut().insert("traceparent", v);
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("ofa.request_id", id),
    ];
    if let Some(c) = resp
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.consumer.as_ref())
    {
        attributes.push(KeyValue::new("ofa.consumer", c.name.clone()));
    }
    let status = resp.status().as_u16();
    trace.finish(
        tracer,
        attributes,
        status,
        resp.extensions().get::<Timings>(),
    );
    resp
}
