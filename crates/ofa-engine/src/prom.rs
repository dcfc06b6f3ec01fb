//! Prometheus exposition through the `prometheus` crate (label escaping, the text format): the
//! buckets every layer shares, constructors that register a family, gauges read at scrape
//! time, and the one encoder each front end's `/metrics` uses.

use prometheus::core::Collector;
pub use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, HistogramOpts, Opts, TextEncoder};
pub use prometheus::{
    Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry,
};

/// Latency buckets in seconds: sub-millisecond (tiny model) to a minute (OFA-large under load).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
pub const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// What `/metrics` answers with (the text format Prometheus scrapes).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// Names, help texts and label names are constants of this crate's callers, so registering
// can only fail on a programming error (a duplicate name): that is a panic at start-up, and
// every test that builds the metrics would catch it.
const FIXED: &str = "metric names and labels are fixed and unique";

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect(FIXED);
    registry.register(Box::new(c.clone())).expect(FIXED);
    c
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect(FIXED);
    registry.register(Box::new(c.clone())).expect(FIXED);
    c
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect(FIXED);
    registry.register(Box::new(g.clone())).expect(FIXED);
    g
}

pub fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect(FIXED);
    registry.register(Box::new(g.clone())).expect(FIXED);
    g
}

pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect(FIXED);
    registry.register(Box::new(h.clone())).expect(FIXED);
    h
}

pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect(FIXED);
    registry.register(Box::new(h.clone())).expect(FIXED);
    h
}

/// A gauge whose value lives elsewhere (an atomic that admission or readiness reads, `/proc`),
/// read when scraped.
pub fn gauge_now(name: &str, help: &str, value: f64) -> MetricFamily {
    let g = Gauge::new(name, help).expect(FIXED);
    g.set(value);
    g.collect().remove(0)
}

/// A labelled gauge read when scraped; `None` with no sample (an empty family is not valid
/// exposition).
pub fn gauge_now_by(
    name: &str,
    help: &str,
    label: &str,
    samples: &[(&str, f64)],
) -> Option<MetricFamily> {
    if samples.is_empty() {
        return None;
    }
    let g = GaugeVec::new(Opts::new(name, help), &[label]).expect(FIXED);
    for (value, v) in samples {
        g.with_label_values(&[*value]).set(*v);
    }
    g.collect().pop()
}

/// The text format, families sorted by name so the page reads the same whatever layer
/// contributed them.
pub fn encode(mut families: Vec<MetricFamily>) -> String {
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::with_capacity(8192);
    // Encoding fails only on an empty family or an invalid name; gathered families are neither.
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Upper bound of the bucket holding quantile `q` (what `histogram_quantile` would say).
pub fn quantile(h: &Histogram, q: f64) -> f64 {
    let families = h.collect();
    let Some(metric) = families.first().and_then(|f| f.get_metric().first()) else {
        return 0.0;
    };
    let hist = metric.get_histogram();
    let total = hist.get_sample_count();
    if total == 0 {
        return 0.0;
    }
    let rank = (q * total as f64).ceil() as u64;
    let buckets = hist.get_bucket();
    buckets
        .iter()
        .find(|b| b.cumulative_count() >= rank)
        .or(buckets.last())
        .map_or(0.0, |b| b.upper_bound())
}

/// `process_resident_memory_bytes` and `process_resident_memory_peak_bytes` (Linux).
pub fn process_families() -> Vec<MetricFamily> {
    let Some((rss, peak)) = process_memory() else {
        return Vec::new();
    };
    vec![
        gauge_now(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            rss as f64,
        ),
        gauge_now(
            "process_resident_memory_peak_bytes",
            "Peak resident memory of the process.",
            peak as f64,
        ),
    ]
}

/// `ofa_gpu_memory_used_bytes` and `ofa_gpu_memory_total_bytes`, when the model is on a GPU.
pub fn device_memory_families(memory: Option<(u64, u64)>) -> Vec<MetricFamily> {
    let Some((used, total)) = memory else {
        return Vec::new();
    };
    vec![
        gauge_now(
            "ofa_gpu_memory_used_bytes",
            "GPU memory in use (every process on the device, as nvidia-smi counts it).",
            used as f64,
        ),
        gauge_now(
            "ofa_gpu_memory_total_bytes",
            "GPU memory in all.",
            total as f64,
        ),
    ]
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
    fn histogram_buckets_are_cumulative_and_the_quantile_is_a_bound() {
        let r = Registry::new();
        let h = histogram(&r, "x", "An x.", &BATCH_BUCKETS);
        for v in [1.0, 3.0, 8.0, 8.0] {
            h.observe(v);
        }
        let s = encode(r.gather());
        assert!(s.contains("# HELP x An x.\n# TYPE x histogram\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"4\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"8\"} 4\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_sum 20\nx_count 4\n"), "{s}");
        assert_eq!(quantile(&h, 0.5), 4.0);
        assert_eq!(quantile(&h, 1.0), 8.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        let c = counter_vec(&r, "y_total", "A y.", &["who"]);
        c.with_label_values(&["a\"b\\c\nd"]).inc();
        let s = encode(r.gather());
        assert!(s.contains("y_total{who=\"a\\\"b\\\\c\\nd\"} 1\n"), "{s}");
    }

    #[test]
    fn families_come_out_sorted_by_name_and_empty_labelled_gauges_are_left_out() {
        let mut families = vec![gauge_now("b", "B.", 2.0), gauge_now("a", "A.", 1.5)];
        assert!(gauge_now_by("c", "C.", "q", &[]).is_none());
        families.extend(gauge_now_by("d", "D.", "q", &[("x", 3.0)]));
        let s = encode(families);
        assert_eq!(
            s,
            "# HELP a A.\n# TYPE a gauge\na 1.5\n# HELP b B.\n# TYPE b gauge\nb 2\n\
             # HELP d D.\n# TYPE d gauge\nd{q=\"x\"} 3\n"
        );
    }
}
