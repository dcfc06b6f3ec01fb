//! The worker's metrics port: `/healthz` (the process answers), `/readyz` (connected to the
//! broker and not stopping) and `/metrics` (the worker's, the engine's and the process's).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ofa_engine::{Drain, EngineMetrics};

use crate::metrics::WorkerMetrics;

#[derive(Clone)]
pub struct Health {
    pub worker: Arc<WorkerMetrics>,
    pub engine: Arc<EngineMetrics>,
    pub drain: Arc<Drain>,
    pub jobs_queue: String,
    pub dead_letter_queue: String,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> Response {
    if h.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else if !h.worker.connected.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the broker\n",
        )
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(h): State<Health>) -> Response {
    let mut text = String::new();
    h.worker
        .render(&mut text, &h.jobs_queue, &h.dead_letter_queue);
    h.engine.render(&mut text);
    ofa_engine::prom::render_process(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serves the metrics port until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) -> std::io::Result<()> {
    axum::serve(listener, router(health)).await
}
