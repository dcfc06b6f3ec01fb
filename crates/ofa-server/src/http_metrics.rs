//! The HTTP layer's metrics: requests by route and status, latency by route, requests in
//! flight, readiness. The engine renders its own families; `/metrics` shows both.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use ofa_engine::prom::{self, Histogram, LATENCY_BUCKETS};

#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    request_duration: Mutex<BTreeMap<String, Histogram>>,
    /// Inference requests between body received and answer.
    pub in_flight: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpMetrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        lock(&self.request_duration)
            .entry(route.to_owned())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    /// p95 of a route's total time so far (bucket upper bound), for `/readyz`.
    pub fn latency_p95(&self, route: &str) -> f64 {
        lock(&self.request_duration)
            .get(route)
            .map_or(0.0, |h| h.quantile(0.95))
    }

    pub fn render(&self, o: &mut String, ready: bool) {
        prom::head(
            o,
            "ofa_requests_total",
            "counter",
            "HTTP requests by route and status code.",
        );
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                o,
                "ofa_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        prom::head(
            o,
            "ofa_request_duration_seconds",
            "histogram",
            "Time from request received to response, by route.",
        );
        for (route, h) in lock(&self.request_duration).iter() {
            h.render(
                o,
                "ofa_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        prom::single(
            o,
            "ofa_in_flight_requests",
            "gauge",
            "HTTP inference requests being handled.",
            self.in_flight.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_ready",
            "gauge",
            "1 when ready: loaded, warmed, breaker closed, not draining.",
            i64::from(ready),
        );
    }
}
