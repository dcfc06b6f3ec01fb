//! The HTTP service: routes, request parsing and error mapping, consumers and their limits, request logs,
//! connection limits and the graceful drain. It only translates HTTP to engine calls.

pub mod access;
pub mod answer;
mod assets;
pub mod config;
pub mod conn;
pub mod error;
pub mod http_metrics;
pub mod json_shape;
mod kserve;
pub mod kserve_tensor;
pub mod logging;
mod middleware;
mod openapi;
pub mod parse;
mod predict;
mod probes;
pub mod rerank;
pub mod router;
pub mod state;
pub mod timings;
pub mod trace;

pub use config::ServerConfig;
pub use router::router;
pub use state::AppState;

use std::future::Future;

/// Serves until `shutdown` resolves, then: readiness goes false, new connections are still
/// taken for the drain delay (load balancers need time to notice), then the listener closes,
/// in-flight requests finish, and the engine finishes its queue, all within the shutdown timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let access = &state.config.access;
    let watcher = tokio::spawn(access::watch_keys(
        access.keys.clone(),
        access.key_poll,
        state.log.clone(),
    ));
    let cfg = state.config.clone();
    let drain_state = state.clone();
    let stop = async move {
        shutdown.await;
        drain_state.drain.begin();
        drain_state.log.event(
            "draining",
            &[("drain_delay_s", cfg.drain_delay.as_secs_f64().into())],
        );
        tokio::time::sleep(cfg.drain_delay).await;
    };
    let served = conn::serve(
        listener,
        app,
        state.config.connections.clone(),
        state.log.clone(),
        stop,
    );
    // The shutdown timeout bounds the whole drain, not just the wait for the signal.
    let timeout_state = state.clone();
    tokio::select! {
        _ = served => {},
        _ = async {
            timeout_state.drain.started().await;
            tokio::time::sleep(timeout_state.config.shutdown_timeout + timeout_state.config.drain_delay).await;
        } => {
            timeout_state.log.event("shutdown_timeout", &[]);
        }
    }
    watcher.abort();
    if let Some(engine) = state.engine() {
        let left = state.config.shutdown_timeout;
        let finished = tokio::task::spawn_blocking(move || engine.shutdown(left))
            .await
            .unwrap_or(false);
        state
            .log
            .event("stopped", &[("queue_finished", finished.into())]);
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
