//! The HTTP layer's metrics: requests by route and status, latency by route, requests in
//! flight, readiness. The engine renders its own families; `/metrics` shows both.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use ofa_engine::prom::{self, Histogram, LATENCY_BUCKETS};

/// Distinct consumer label values at most.
pub const MAX_CONSUMER_LABELS: usize = 100;

#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16, String), u64>>,
    /// Consumer names seen as labels so far; bounded, the rest count as `other`.
    consumers: Mutex<std::collections::BTreeSet<String>>,
    request_duration: Mutex<BTreeMap<String, Histogram>>,
    /// Inference requests between body received and answer.
    pub in_flight: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpMetrics {
    /// `consumer`: who called (`None`: anonymous or not identified).
    pub fn record_request(&self, route: &str, status: u16, consumer: Option<&str>, seconds: f64) {
        let label = self.consumer_label(consumer);
        *lock(&self.requests)
            .entry((route.to_owned(), status, label))
            .or_default() += 1;
        lock(&self.request_duration)
            .entry(route.to_owned())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    /// At most [`MAX_CONSUMER_LABELS`] distinct names: a gateway may name any number.
    fn consumer_label(&self, consumer: Option<&str>) -> String {
        let Some(name) = consumer else {
            return String::new();
        };
        let mut seen = lock(&self.consumers);
        if seen.contains(name) || seen.len() < MAX_CONSUMER_LABELS {
            seen.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
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
            "HTTP requests by route, status code and consumer (no consumer label: anonymous).",
        );
        for ((route, status, consumer), n) in lock(&self.requests).iter() {
            // Anonymous requests carry no consumer label (the same series to Prometheus).
            let consumer = if consumer.is_empty() {
                String::new()
            } else {
                format!(",consumer=\"{consumer}\"")
            };
            let _ = writeln!(
                o,
                "ofa_requests_total{{route=\"{route}\",status=\"{status}\"{consumer}}} {n}"
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
