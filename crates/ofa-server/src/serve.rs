//! Serving a listener until shutdown, then draining in the order load balancers need.

use std::future::Future;

use crate::AppState;

/// Serves until `shutdown` resolves, then: readiness goes false, new connections are still
/// taken for the drain delay (load balancers need time to notice), then the listener closes,
/// in-flight requests finish, and the engine finishes its queue, all within the shutdown timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::router(state.clone());
    let access = &state.config.access;
    let watcher = tokio::spawn(crate::access::watch_keys(
        access.keys.clone(),
        access.key_poll,
    ));
    let cfg = state.config.clone();
    let drain_state = state.clone();
    let stop = async move {
        shutdown.await;
        drain_state.drain.begin();
        tracing::info!(drain_delay_s = cfg.drain_delay.as_secs_f64(), "draining");
        tokio::time::sleep(cfg.drain_delay).await;
    };
    let served = crate::conn::serve(listener, app, state.config.connections.clone(), stop);
    // The shutdown timeout bounds the whole drain, not just the wait for the signal.
    let timeout_state = state.clone();
    tokio::select! {
        _ = served => {},
        _ = async {
            timeout_state.drain.started().await;
            tokio::time::sleep(timeout_state.config.shutdown_timeout + timeout_state.config.drain_delay).await;
        } => {
            tracing::warn!("shutdown_timeout");
        }
    }
    watcher.abort();
    if let Some(engine) = state.engine() {
        let left = state.config.shutdown_timeout;
        let finished = tokio::task::spawn_blocking(move || engine.shutdown(left))
            .await
            .unwrap_or(false);
        tracing::info!(queue_finished = finished, "stopped");
    }
    Ok(())
}
