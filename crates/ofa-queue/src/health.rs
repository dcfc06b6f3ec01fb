//! The worker's metrics port: `/healthz` (the process answers, and its model is not taken for
//! broken), `/readyz` (connected to the broker and not stopping) and `/metrics` (the worker's,
//! the engine's and the process's); for tests only, `POST /debug/fault` when enabled.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ofa_engine::{prom, Drain, Engine, EngineMetrics};
use ofa_jobs::store::StoreMetrics;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::WorkerMetrics;

#[derive(Clone)]
pub struct Health {
    pub worker: Arc<WorkerMetrics>,
    pub engine: Arc<EngineMetrics>,
    /// The result store's counters (at 0 when no store is configured).
    pub store: Arc<StoreMetrics>,
    pub drain: Arc<Drain>,
    pub jobs_queue: String,
    pub dead_letter_queue: String,
    /// The engine, once the model has loaded (the port answers before).
    pub model: Arc<OnceLock<Arc<Engine>>>,
    /// Test-only: `POST /debug/fault` arms the engine's fault switch, as in `serve`.
    pub fault_route: bool,
}

pub fn router(health: Health) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if health.fault_route {
        app = app.route("/debug/fault", post(inject_fault));
    }
    app.with_state(health)
}

#[derive(Deserialize)]
struct Fault {
    failures: u32,
}

/// The next `failures` batches fail inside the model.
async fn inject_fault(State(h): State<Health>, Json(f): Json<Fault>) -> Response {
    match h.model.get() {
        Some(e) if e.inject_failures(f.failures) => {
            Json(json!({"injected": f.failures})).into_response()
        }
        Some(_) => (StatusCode::NOT_FOUND, "fault injection is off\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the model is loading\n").into_response(),
    }
}

/// 503 once the engine takes its model for broken (every probe of the circuit breaker failed
/// for several cool-downs, as after an error that poisons a GPU's context): a restart is what
/// recovers it, and the jobs it holds unacknowledged go back to the queue.
async fn healthz(State(h): State<Health>) -> Response {
    match h.model.get().and_then(|e| e.failing()) {
        None => "ok\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failing: {reason}\n"),
        )
            .into_response(),
    }
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
    let mut families = h.worker.gather(&h.jobs_queue, &h.dead_letter_queue);
    families.extend(h.engine.gather());
    families.extend(h.store.gather());
    families.extend(prom::process_families());
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        prom::encode(families),
    )
        .into_response()
}

/// Serves the metrics port until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) -> std::io::Result<()> {
    axum::serve(listener, router(health)).await
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ofa_api::{BackendError, BatchReport, Prepared, Scores};
    use ofa_engine::{Backend, EngineConfig, Pair};

    use super::*;

    /// A model that fails every batch.
    struct Broken;

    impl Backend for Broken {
        fn prepare_image(&self, image: &[u8], _: u64) -> Result<Arc<[u8]>, BackendError> {
            Ok(image.into())
        }

        fn encode_text(&self, text: &str, _: Option<&str>) -> Result<Vec<u32>, BackendError> {
            Ok(text.bytes().map(u32::from).collect())
        }

        fn score(&self, _: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), BackendError> {
            Err(BackendError::Text("broken".into()))
        }
    }

    async fn health_status(h: &Health) -> (StatusCode, String) {
        let r = healthz(State(h.clone())).await;
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_fails_once_the_engine_gives_up_on_its_model() {
        let engine_metrics = Arc::new(EngineMetrics::default());
        let drain = Arc::new(Drain::default());
        let h = Health {
            worker: Arc::default(),
            engine: engine_metrics.clone(),
            store: Arc::default(),
            drain: drain.clone(),
            jobs_queue: "jobs".into(),
            dead_letter_queue: "dead".into(),
            model: Arc::default(),
            fault_route: false,
        };
        assert_eq!(health_status(&h).await.0, StatusCode::OK, "while loading");
        let config = EngineConfig {
            breaker_failures: 1,
            breaker_cooldown: Duration::from_millis(20),
            breaker_give_up: 1,
            ..EngineConfig::default()
        };
        let engine = Arc::new(Engine::start(
            Arc::new(Broken),
            config,
            engine_metrics,
            drain,
        ));
        assert!(h.model.set(engine.clone()).is_ok());
        let pair = Pair {
            image: b"img".to_vec().into(),
            text: "a".into(),
            premise: None,
            cache_scope: 0,
        };
        let deadline = || Instant::now() + Duration::from_secs(5);
        // A failed job opens the breaker: unready work, but alive.
        assert!(engine.run_one(pair.clone(), deadline()).await.is_err());
        assert_eq!(health_status(&h).await.0, StatusCode::OK, "open only");
        // After the cool-down the next job is the probe; it fails too.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(engine.run_one(pair, deadline()).await.is_err());
        let (status, body) = health_status(&h).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.starts_with("failing: the model failed 1 probe in a row"),
            "{body}"
        );
    }
}
