//! Prometheus metrics, rendered in the text exposition format. Buckets are fixed and
//! documented in the README so dashboards and alerts can rely on them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Latency buckets in seconds: sub-millisecond (tiny model) to a minute (OFA-large under load).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
pub const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Upper bound of the bucket holding quantile `q` (what `histogram_quantile` would say).
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil() as u64;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if c.load(Ordering::Relaxed) >= rank {
                return *b;
            }
        }
        *self.bounds.last().unwrap_or(&0.0)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

/// Everything `/metrics` exports.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    rejections: Mutex<BTreeMap<String, u64>>,
    request_duration: Mutex<BTreeMap<String, Histogram>>,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    pub batches_failed: AtomicU64,
    pub model_loaded: AtomicI64,
    /// 1 while `/readyz` would answer 200; set by the server at each scrape.
    pub ready: AtomicI64,
    model_load_seconds: Mutex<f64>,
    breaker_state: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            rejections: Mutex::default(),
            request_duration: Mutex::default(),
            queue_duration: Histogram::new(&LATENCY_BUCKETS),
            inference_duration: Histogram::new(&LATENCY_BUCKETS),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            queue_depth: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            batches_failed: AtomicU64::new(0),
            model_loaded: AtomicI64::new(0),
            ready: AtomicI64::new(0),
            model_load_seconds: Mutex::new(0.0),
            breaker_state: AtomicI64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        lock(&self.request_duration)
            .entry(route.to_owned())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    pub fn record_rejection(&self, reason: &str) {
        *lock(&self.rejections).entry(reason.to_owned()).or_default() += 1;
    }

    pub fn set_model_loaded(&self, seconds: f64) {
        *lock(&self.model_load_seconds) = seconds;
        self.model_loaded.store(1, Ordering::Relaxed);
    }

    pub fn set_breaker(&self, state: crate::BreakerState) {
        self.breaker_state
            .store(i64::from(state.code()), Ordering::Relaxed);
    }

    /// p95 of `/predict` total time so far (bucket upper bound), for `/readyz`.
    pub fn latency_p95(&self, route: &str) -> f64 {
        lock(&self.request_duration)
            .get(route)
            .map_or(0.0, |h| h.quantile(0.95))
    }

    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
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
        head(
            &mut o,
            "ofa_request_duration_seconds",
            "histogram",
            "Time from request received to response, by route.",
        );
        for (route, h) in lock(&self.request_duration).iter() {
            h.render(
                &mut o,
                "ofa_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        head(
            &mut o,
            "ofa_queue_duration_seconds",
            "histogram",
            "Time an admitted pair waited for the inference thread.",
        );
        self.queue_duration
            .render(&mut o, "ofa_queue_duration_seconds", "");
        head(
            &mut o,
            "ofa_inference_duration_seconds",
            "histogram",
            "Time of the batched forward pass a pair ran in.",
        );
        self.inference_duration
            .render(&mut o, "ofa_inference_duration_seconds", "");
        head(
            &mut o,
            "ofa_batch_size",
            "histogram",
            "Pairs per forward pass.",
        );
        self.batch_size.render(&mut o, "ofa_batch_size", "");
        head(
            &mut o,
            "ofa_rejections_total",
            "counter",
            "Requests refused or failed, by reason.",
        );
        for (reason, n) in lock(&self.rejections).iter() {
            let _ = writeln!(o, "ofa_rejections_total{{reason=\"{reason}\"}} {n}");
        }
        let gauges: [(&str, &str, i64); 5] = [
            (
                "ofa_queue_depth",
                "Pairs admitted and waiting for the inference thread.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "ofa_in_flight_requests",
                "HTTP inference requests being handled.",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "ofa_breaker_state",
                "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                self.breaker_state.load(Ordering::Relaxed),
            ),
            (
                "ofa_ready",
                "1 when ready: loaded, warmed, breaker closed, not draining.",
                self.ready.load(Ordering::Relaxed),
            ),
            (
                "ofa_model_loaded",
                "1 once the model is loaded.",
                self.model_loaded.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            head(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
        head(
            &mut o,
            "ofa_batches_failed_total",
            "counter",
            "Forward passes that failed (errors or panics).",
        );
        let _ = writeln!(
            o,
            "ofa_batches_failed_total {}",
            self.batches_failed.load(Ordering::Relaxed)
        );
        head(
            &mut o,
            "ofa_model_load_seconds",
            "gauge",
            "Time the model took to load.",
        );
        let _ = writeln!(
            o,
            "ofa_model_load_seconds {}",
            *lock(&self.model_load_seconds)
        );
        if let Some((rss, peak)) = process_memory() {
            head(
                &mut o,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the process.",
            );
            let _ = writeln!(o, "process_resident_memory_bytes {rss}");
            head(
                &mut o,
                "process_resident_memory_peak_bytes",
                "gauge",
                "Peak resident memory of the process.",
            );
            let _ = writeln!(o, "process_resident_memory_peak_bytes {peak}");
        }
        o
    }
}

/// `(current, peak)` resident bytes from `/proc/self/status` (Linux).
pub fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&BATCH_BUCKETS);
        for v in [1.0, 3.0, 8.0, 8.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"4\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"8\"} 4\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert_eq!(h.quantile(0.5), 4.0);
    }
}
