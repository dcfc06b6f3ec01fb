//! The engine's circuit-breaker transitions as log events, so that a model that starts failing
//! shows in the logs with the error that opened the breaker, not only in `ofa_breaker_state`:
//! `breaker_opened` (`error`, `cooldown_s`, `failed_probes`) and `breaker_closed`.

use ofa_engine::{BreakerEvent, Engine};
use tokio::sync::broadcast::error::RecvError;

/// Logs `engine`'s breaker transitions from now on, on the async runtime, for as long as the
/// engine lives.
pub fn spawn(engine: &Engine) {
    let mut events = engine.breaker_events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(BreakerEvent::Opened {
                    error,
                    cooldown,
                    failed_probes,
                }) => tracing::warn!(
                    error,
                    cooldown_s = cooldown.as_secs_f64(),
                    failed_probes,
                    "breaker_opened"
                ),
                Ok(BreakerEvent::Closed) => tracing::info!("breaker_closed"),
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(count = %n, "breaker_events_skipped")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}
