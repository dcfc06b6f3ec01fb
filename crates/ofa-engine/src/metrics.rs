//! The engine's metrics: queue, batches, breaker, inference time, model load, and refusals.
//! Names, types and buckets are documented in the README (dashboards and alerts rely on them).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use crate::prom::{self, Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, MetricFamily};
use crate::prom::{Registry, BATCH_BUCKETS, LATENCY_BUCKETS};
use crate::BreakerState;
use ofa_api::error_type::Surface;
use ofa_api::{BatchReport, ErrorType};

/// The refusal reason of a pair whose caller went away before it ran.
pub const CANCELLED: &str = "cancelled";

#[derive(Debug)]
pub struct EngineMetrics {
    registry: Registry,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    /// Pairs admitted and not yet taken by the inference thread. Admission reads and updates it
    /// atomically, so it stays an atomic and `/metrics` reads it when scraped.
    pub queue_depth: AtomicI64,
    pub batches_failed: IntCounter,
    breaker_state: IntGauge,
    model_loaded: IntGauge,
    model_load_seconds: Gauge,
    image_cache_hits: IntCounter,
    image_cache_misses: IntCounter,
    image_cache_bytes: IntGauge,
    /// Every front end reports its refusals here too, so one counter covers them all.
    rejections: IntCounterVec,
    /// Reads the accelerator's memory at scrape time (set once the model is loaded).
    device_memory: OnceLock<MemoryProbe>,
}

/// `(used, total)` bytes of the model's device, read when asked.
pub struct MemoryProbe(pub Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>);

impl std::fmt::Debug for MemoryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryProbe")
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let rejections = prom::counter_vec(
            &r,
            "ofa_rejections_total",
            "Requests refused or failed, by reason.",
            &["reason"],
        );
        // Every reason the service can give starts at 0, so `rate()` and `increase()` see the
        // first refusal and an alert's family exists before anything went wrong.
        for reason in ErrorType::on(Surface::Http)
            .map(ErrorType::as_str)
            .chain([CANCELLED])
        {
            rejections.with_label_values(&[reason]);
        }
        Self {
            queue_duration: prom::histogram(
                &r,
                "ofa_queue_duration_seconds",
                "Time an admitted pair waited for the inference thread.",
                &LATENCY_BUCKETS,
            ),
            inference_duration: prom::histogram(
                &r,
                "ofa_inference_duration_seconds",
                "Time of the batched forward pass a pair ran in.",
                &LATENCY_BUCKETS,
            ),
            batch_size: prom::histogram(
                &r,
                "ofa_batch_size",
                "Pairs per forward pass.",
                &BATCH_BUCKETS,
            ),
            queue_depth: AtomicI64::new(0),
            batches_failed: prom::counter(
                &r,
                "ofa_batches_failed_total",
                "Forward passes that failed (errors or panics).",
            ),
            breaker_state: prom::gauge(
                &r,
                "ofa_breaker_state",
                "Circuit breaker: 0 closed, 1 open, 2 half-open.",
            ),
            model_loaded: prom::gauge(&r, "ofa_model_loaded", "1 once the model is loaded."),
            model_load_seconds: prom::float_gauge(
                &r,
                "ofa_model_load_seconds",
                "Time the model took to load.",
            ),
            image_cache_hits: prom::counter(
                &r,
                "ofa_image_cache_hits_total",
                "Distinct images of a batch whose ResNet features came from the feature cache.",
            ),
            image_cache_misses: prom::counter(
                &r,
                "ofa_image_cache_misses_total",
                "Distinct images of a batch run through the ResNet (with the cache off, all but a request's image run in a recent batch).",
            ),
            image_cache_bytes: prom::gauge(
                &r,
                "ofa_image_cache_bytes",
                "Bytes of image features the cache holds.",
            ),
            rejections,
            device_memory: OnceLock::new(),
            registry: r,
        }
    }
}

impl EngineMetrics {
    pub fn record_rejection(&self, reason: &str) {
        self.rejections.with_label_values(&[reason]).inc();
    }

    pub fn rejections(&self, reason: &str) -> u64 {
        self.rejections.with_label_values(&[reason]).get()
    }

    pub(crate) fn set_device_memory(&self, probe: MemoryProbe) {
        let _ = self.device_memory.set(probe);
    }

    pub fn set_model_loaded(&self, seconds: f64) {
        self.model_load_seconds.set(seconds);
        self.model_loaded.set(1);
    }

    /// One batch's images: distinct ones taken from the feature cache or run through the ResNet.
    pub(crate) fn record_images(&self, report: &BatchReport) {
        self.image_cache_hits.inc_by(report.cache_hits as u64);
        self.image_cache_misses
            .inc_by((report.images - report.cache_hits) as u64);
        self.image_cache_bytes
            .set(i64::try_from(report.cache_bytes).unwrap_or(i64::MAX));
    }

    pub fn image_cache(&self) -> (u64, u64) {
        (self.image_cache_hits.get(), self.image_cache_misses.get())
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker_state.set(i64::from(state.code()));
    }

    /// The engine's families as scraped now.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        families.push(prom::gauge_now(
            "ofa_queue_depth",
            "Pairs admitted and waiting for the inference thread.",
            self.queue_depth.load(Ordering::Relaxed) as f64,
        ));
        families.extend(prom::device_memory_families(
            self.device_memory.get().and_then(|p| (p.0)()),
        ));
        families
    }
}
