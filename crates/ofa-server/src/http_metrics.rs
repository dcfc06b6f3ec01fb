//! The HTTP layer's metrics: requests by route and status, latency by route, image URL
//! fetches, requests in flight, readiness. The engine gathers its own families; `/metrics` shows both.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use ofa_engine::prom::{
    self, Histogram, HistogramVec, IntCounterVec, MetricFamily, Registry, LATENCY_BUCKETS,
};
use prometheus::core::Collector;

/// Distinct consumer label values at most.
pub const MAX_CONSUMER_LABELS: usize = 100;

#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    /// Consumer names seen as labels so far; bounded, the rest count as `other`.
    consumers: Mutex<BTreeSet<String>>,
    request_duration: HistogramVec,
    image_url_fetch: Histogram,
    /// Inference requests between body received and answer. The in-flight limit reads and
    /// updates it atomically; `/metrics` reads it when scraped.
    pub in_flight: AtomicI64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let r = Registry::new();
        Self {
            requests: prom::counter_vec(
                &r,
                "ofa_requests_total",
                "HTTP requests by route, status code and consumer (no consumer label: anonymous).",
                &["route", "status", "consumer"],
            ),
            consumers: Mutex::default(),
            request_duration: prom::histogram_vec(
                &r,
                "ofa_request_duration_seconds",
                "Time from request received to response, by route.",
                &LATENCY_BUCKETS,
                &["route"],
            ),
            image_url_fetch: prom::histogram(
                &r,
                "ofa_image_url_fetch_seconds",
                "Time a request spent fetching the images it named by URL.",
                &LATENCY_BUCKETS,
            ),
            in_flight: AtomicI64::new(0),
            registry: r,
        }
    }
}

impl HttpMetrics {
    /// `consumer`: who called (`None`: anonymous or not identified).
    pub fn record_request(&self, route: &str, status: u16, consumer: Option<&str>, seconds: f64) {
        let label = self.consumer_label(consumer);
        self.requests
            .with_label_values(&[route, &status.to_string(), &label])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// One request's image fetches (all of them, from the first start to the last end).
    pub fn record_fetch(&self, seconds: f64) {
        self.image_url_fetch.observe(seconds);
    }

    /// At most [`MAX_CONSUMER_LABELS`] distinct names: a gateway may name any number.
    fn consumer_label(&self, consumer: Option<&str>) -> String {
        let Some(name) = consumer else {
            return String::new();
        };
        let mut seen = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(name) || seen.len() < MAX_CONSUMER_LABELS {
            seen.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// p95 of a route's total time so far (bucket upper bound), for `/readyz`.
    pub fn latency_p95(&self, route: &str) -> f64 {
        // Looked up among the series recorded, so asking does not create an empty one.
        let recorded = self.request_duration.collect().into_iter().any(|family| {
            family
                .get_metric()
                .iter()
                .any(|m| m.get_label().iter().any(|l| l.value() == route))
        });
        if !recorded {
            return 0.0;
        }
        prom::quantile(&self.request_duration.with_label_values(&[route]), 0.95)
    }

    /// The HTTP layer's families as scraped now.
    pub fn gather(&self, ready: bool) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        for family in &mut families {
            // Anonymous requests carry no consumer label rather than an empty one (the same
            // series to Prometheus, and what the help text and README say).
            for metric in family.mut_metric() {
                let labels = metric.take_label();
                metric.set_label(
                    labels
                        .into_iter()
                        .filter(|l| !l.value().is_empty())
                        .collect(),
                );
            }
        }
        families.push(prom::gauge_now(
            "ofa_in_flight_requests",
            "HTTP inference requests being handled.",
            self.in_flight.load(Ordering::Relaxed) as f64,
        ));
        families.push(prom::gauge_now(
            "ofa_ready",
            "1 when ready: loaded, warmed, breaker closed, not draining.",
            f64::from(u8::from(ready)),
        ));
        families
    }
}
