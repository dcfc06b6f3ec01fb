//! One `request` log line per request: id, method, route, status, time, and what the inner
//! layers learned (client address, consumer, queue and inference time, trace ids, error kind).

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::{RequestId, TraceIds};
use crate::access::{Caller, ClientIp};
use crate::error::ErrorType;
use crate::timings::Timings;

pub async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = super::route(&req);
    let method = req.method().to_string();
    let id = req.extensions().get::<RequestId>().cloned();
    let resp = next.run(req).await;
    let x = resp.extensions();
    let timings = x.get::<Timings>();
    let trace = x.get::<TraceIds>();
    tracing::info!(
        request_id = id.as_ref().map(|r| r.0.as_str()),
        method,
        route,
        status = resp.status().as_u16(),
        total_time = start.elapsed().as_secs_f64(),
        client_ip = x.get::<ClientIp>().map(|c| tracing::field::display(c.0)),
        consumer = x
            .get::<Caller>()
            .and_then(|c| c.consumer.as_ref())
            .map(|c| c.name.as_str()),
        fetch_time = timings
            .filter(|t| !t.fetch.is_zero())
            .map(|t| t.fetch.as_secs_f64()),
        queue_time = timings.map(|t| t.queue.as_secs_f64()),
        inference_time = timings.map(|t| t.inference.as_secs_f64()),
        trace_id = trace.map(|t| t.trace_id.as_str()),
        span_id = trace.map(|t| t.span_id.as_str()),
        error_type = x.get::<ErrorType>().map(|k| k.as_str()),
        "request"
    );
    resp
}
