//! The engine's circuit-breaker transitions as log events, so that a model that starts failing
//! shows in the logs with the error that opened the breaker, not only in `ofa_breaker_state`:
//! `breaker_opened` (`error`, `cooldown_s`, `failed_probes`) and `breaker_closed`.

use std::sync::Arc;

use ofa_engine::{BreakerEvent, Engine};
use ofa_server::logging::Logger;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

/// Logs `engine`'s breaker transitions from now on, on the async runtime, for as long as the
/// engine lives.
pub fn spawn(engine: &Engine, log: Arc<Logger>) {
    let mut events = engine.breaker_events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(BreakerEvent::Opened {
                    error,
                    cooldown,
                    failed_probes,
                }) => log.event(
                    "breaker_opened",
                    &[
                        ("error", error.into()),
                        ("cooldown_s", cooldown.as_secs_f64().into()),
                        ("failed_probes", failed_probes.into()),
                    ],
                ),
                Ok(BreakerEvent::Closed) => log.event("breaker_closed", &[]),
                Err(RecvError::Lagged(n)) => {
                    log.event("breaker_events_skipped", &[("count", Value::from(n))])
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}
