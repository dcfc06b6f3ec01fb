use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use ofa_engine::{Drain, Engine, EngineMetrics};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ErrorType};
use crate::http_metrics::HttpMetrics;
use crate::ServerConfig;

/// Shared by every handler. The engine arrives once the model has loaded and warmed up: the
/// server listens before that so probes can tell "alive, still loading" from "dead".
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    pub config: Arc<ServerConfig>,
    pub engine_metrics: Arc<EngineMetrics>,
    pub http_metrics: Arc<HttpMetrics>,
    pub drain: Arc<Drain>,
}

struct Inner {
    engine: OnceLock<(Arc<Engine>, Value)>,
    /// The upload budget, in megabytes.
    uploads: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        engine_metrics: Arc<EngineMetrics>,
        drain: Arc<Drain>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: OnceLock::new(),
                uploads: Arc::new(Semaphore::new(config.upload_memory.div_ceil(MB).max(1))),
            }),
            config: Arc::new(config),
            engine_metrics,
            http_metrics: Arc::new(HttpMetrics::default()),
            drain,
        }
    }

    /// Hands over the loaded and warmed engine, with what `/info` says of its model.
    pub fn set_engine(&self, engine: Arc<Engine>, model_info: Value) {
        let _ = self.inner.engine.set((engine, model_info));
    }

    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.inner.engine.get().map(|(e, _)| e.clone())
    }

    /// The engine, or 503 while the model loads.
    pub fn loaded_engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine().ok_or_else(ApiError::loading)
    }

    pub fn model_info(&self) -> Option<&Value> {
        self.inner.engine.get().map(|(_, i)| i)
    }

    /// The model's answers (`yes`, `no`, `maybe`), which a ranking's label must be one of.
    pub fn answers(&self) -> Vec<String> {
        self.model_info()
            .and_then(|i| serde_json::from_value(i["answers"].clone()).ok())
            .unwrap_or_default()
    }

    /// Ready: model loaded and warmed, breaker closed, not draining.
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining() && self.engine().is_some_and(|e| e.is_ready())
    }

    /// A share of the upload budget for a body of up to `bytes`, or 429 when bodies already in
    /// flight hold it (never waits: the client retries, the server holds nothing for it).
    pub fn reserve_upload(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let budget = self.config.upload_memory;
        let units = (bytes.saturating_mul(3).div_ceil(MB)).clamp(1, budget.div_ceil(MB).max(1));
        self.inner
            .uploads
            .clone()
            .try_acquire_many_owned(units as u32)
            .map_err(|_| {
                ApiError::new(
                    ErrorType::TooManyConcurrent,
                    format!(
                        "request bodies in flight hold the upload budget of {} MB",
                        budget / MB
                    ),
                )
                .retry_after(std::time::Duration::from_secs(1))
            })
    }

    /// Counts an inference request in flight from here on (its body has arrived), or refuses
    /// it past `max_concurrency`.
    pub fn enter(&self) -> Result<InFlight, ApiError> {
        let now = self.http_metrics.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = InFlight(self.http_metrics.clone());
        if let Some(max) = self.config.max_concurrency {
            if now as usize > max {
                return Err(ApiError::new(
                    ErrorType::TooManyConcurrent,
                    format!("more than {max} requests in flight"),
                )
                .retry_after(std::time::Duration::from_secs(1)));
            }
        }
        Ok(guard)
    }
}

/// One inference request in flight; dropping it counts it out.
pub struct InFlight(Arc<HttpMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

const MB: usize = 1 << 20;
