//! The HTTP service: routes, request parsing and error mapping, rate limiting, request logs,
//! graceful drain. It only translates HTTP to engine calls.

pub mod config;
pub mod error;
pub mod kserve;
pub mod limit;
pub mod logging;
pub mod routes;
pub mod state;

pub use config::ServerConfig;
pub use routes::router;
pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Serves until `shutdown` resolves, then: readiness goes false, new connections are still
/// taken for the drain delay (load balancers need time to notice), then the listener closes,
/// in-flight requests finish, and the engine finishes its queue, all within the shutdown timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let cfg = state.config.clone();
    let drain_state = state.clone();
    let graceful = async move {
        shutdown.await;
        drain_state.begin_drain();
        drain_state.log.event(
            "draining",
            &[("drain_delay_s", cfg.drain_delay.as_secs_f64().into())],
        );
        tokio::time::sleep(cfg.drain_delay).await;
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(graceful);
    let served = std::future::IntoFuture::into_future(server);
    // The shutdown timeout bounds the whole drain, not just the wait for the signal.
    let timeout_state = state.clone();
    let result = tokio::select! {
        r = served => r,
        _ = async {
            timeout_state.drained_notify().await;
            tokio::time::sleep(timeout_state.config.shutdown_timeout + timeout_state.config.drain_delay).await;
        } => {
            timeout_state.log.event("shutdown_timeout", &[]);
            Ok(())
        }
    };
    if let Some(engine) = state.engine() {
        let left = state.config.shutdown_timeout;
        let finished = tokio::task::spawn_blocking(move || engine.shutdown(left))
            .await
            .unwrap_or(false);
        state
            .log
            .event("stopped", &[("queue_finished", finished.into())]);
    }
    result
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

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}
