//! Connections: our own accept loop over hyper, because every connection needs deadlines that
//! `axum::serve` does not give. Headers must arrive within `header_timeout` (also the first
//! ones: a silent connection is closed), an idle keep-alive connection is closed after
//! `keep_alive_timeout`, and at most `max_connections` are open: past it the connection idle
//! longest (no request being handled, headers included) is closed to make room, so probes and
//! real clients keep getting through a flood of silent or slow connections. A panic while
//! handling a request becomes a 500 for that request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::error::{ApiError, ErrorType};

#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most (keep it under the file-descriptor limit).
    pub max_connections: usize,
    /// From connection start (or the end of the previous response) to complete headers.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keep_alive_timeout: Duration,
    /// A request body must arrive within this (408 beyond).
    pub body_timeout: Duration,
}

/// One open connection as the accept loop sees it.
struct Conn {
    /// Requests being handled on it now.
    busy: AtomicUsize,
    /// Milliseconds since `opened` when it last became idle.
    idle_since_ms: AtomicU64,
    opened: Instant,
    evict: Notify,
}

impl Conn {
    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| {
            self.opened.elapsed().saturating_sub(Duration::from_millis(
                self.idle_since_ms.load(Ordering::Acquire),
            ))
        })
    }
}

#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection; at the cap, first closes the one idle longest. `None` when
    /// every open connection is handling a request (the new one is then refused).
    fn open(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.lock();
        if conns.len() >= max {
            let victim = conns
                .iter()
                .filter_map(|(id, c)| c.idle_for().map(|d| (d, *id)))
                .max()
                .map(|(_, id)| id)?;
            if let Some(c) = conns.remove(&victim) {
                c.evict.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            opened: Instant::now(),
            evict: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn open_count(&self) -> usize {
        self.lock().len()
    }
}

/// Counts a request on its connection from headers to response.
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` until `stop` resolves, then stops accepting, lets every connection finish its
/// request in progress (keep-alive off), and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::default());
    let (closing_tx, closing) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (EMFILE) or a transient error: pause instead of
                    // spinning; closing connections free descriptors meanwhile.
                    tracing::info!(error = %e, "accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, conn)) = registry.open(limits.max_connections) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, registry, closing) = (
            app.clone(),
            limits.clone(),
            registry.clone(),
            closing.clone(),
        );
        tokio::spawn(async move {
            serve_conn(stream, peer, app, &limits, conn, closing).await;
            registry.close(id);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while registry.open_count() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &ConnLimits,
    conn: Arc<Conn>,
    mut closing: watch::Receiver<bool>,
) {
    let on_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        on_conn.busy.fetch_add(1, Ordering::AcqRel);
        let busy = Busy(on_conn.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let _busy = busy;
            let handled = AssertUnwindSafe(tower_service::Service::call(&mut app, req))
                .catch_unwind()
                .await;
            Ok::<_, Infallible>(match handled {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(panic) => {
                    let message = ofa_api::panic::panic_message(&*panic);
                    tracing::error!(error = message, "request_panicked");
                    ApiError::new(ErrorType::Internal, "internal error").into_response()
                }
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let tick =
        (limits.keep_alive_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            // Dropping the connection closes the socket at once.
            _ = conn.evict.notified() => break,
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = tokio::time::sleep(tick) => {
                if conn.idle_for().is_some_and(|d| d >= limits.keep_alive_timeout) {
                    break;
                }
            }
        }
    }
}

/// The soft limit on open files (`/proc/self/limits`), to keep `max_connections` under it.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}
