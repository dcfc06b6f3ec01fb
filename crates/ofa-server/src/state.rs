use std::sync::{Arc, OnceLock};

use ofa_engine::{Engine, Metrics};
use tokio::sync::watch;

use crate::limit::Limiter;
use crate::logging::Logger;
use crate::ServerConfig;

/// Shared by every handler. The engine arrives once the model has loaded: the server listens
/// before that so probes can tell "alive, still loading" from "dead".
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<Logger>,
}

struct Inner {
    engine: OnceLock<Arc<Engine>>,
    limiter: Option<Limiter>,
    draining: watch::Sender<bool>,
}

impl AppState {
    pub fn new(config: ServerConfig, metrics: Arc<Metrics>, log: Arc<Logger>) -> Self {
        let limiter = config.rate_limit.map(Limiter::new);
        Self {
            inner: Arc::new(Inner {
                engine: OnceLock::new(),
                limiter,
                draining: watch::channel(false).0,
            }),
            config: Arc::new(config),
            metrics,
            log,
        }
    }

    /// Hands over the loaded (and warmed) engine.
    pub fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.inner.engine.set(engine);
    }

    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.inner.engine.get().cloned()
    }

    pub fn limiter(&self) -> Option<&Limiter> {
        self.inner.limiter.as_ref()
    }

    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn drained_notify(&self) {
        let mut rx = self.inner.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Ready: model loaded and warmed, breaker closed, not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self.engine().is_some_and(|e| {
                e.is_ready() && e.breaker().state() == ofa_engine::BreakerState::Closed
            })
    }
}
