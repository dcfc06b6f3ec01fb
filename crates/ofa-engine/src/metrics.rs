//! The engine's metrics: queue, batches, breaker, inference time, model load, and refusals.
//! Names, types and buckets are documented in the README (dashboards and alerts rely on them).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::prom::{self, Histogram, BATCH_BUCKETS, LATENCY_BUCKETS};
use crate::BreakerState;
use ofa_api::BatchReport;

#[derive(Debug)]
pub struct EngineMetrics {
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    /// Pairs admitted and not yet taken by the inference thread.
    pub queue_depth: AtomicI64,
    pub batches_failed: AtomicU64,
    breaker_state: AtomicI64,
    model_loaded: AtomicI64,
    model_load_seconds: Mutex<f64>,
    image_cache_hits: AtomicU64,
    image_cache_misses: AtomicU64,
    image_cache_bytes: AtomicU64,
    /// Every front end reports its refusals here too, so one counter covers them all.
    rejections: Mutex<BTreeMap<String, u64>>,
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
        Self {
            queue_duration: Histogram::new(&LATENCY_BUCKETS),
            inference_duration: Histogram::new(&LATENCY_BUCKETS),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            queue_depth: AtomicI64::new(0),
            batches_failed: AtomicU64::new(0),
            breaker_state: AtomicI64::new(0),
            model_loaded: AtomicI64::new(0),
            model_load_seconds: Mutex::new(0.0),
            image_cache_hits: AtomicU64::new(0),
            image_cache_misses: AtomicU64::new(0),
            image_cache_bytes: AtomicU64::new(0),
            rejections: Mutex::default(),
            device_memory: OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EngineMetrics {
    pub fn record_rejection(&self, reason: &str) {
        *lock(&self.rejections).entry(reason.to_owned()).or_default() += 1;
    }

    pub fn rejections(&self, reason: &str) -> u64 {
        lock(&self.rejections).get(reason).copied().unwrap_or(0)
    }

    pub(crate) fn set_device_memory(&self, probe: MemoryProbe) {
        let _ = self.device_memory.set(probe);
    }

    pub fn set_model_loaded(&self, seconds: f64) {
        *lock(&self.model_load_seconds) = seconds;
        self.model_loaded.store(1, Ordering::Relaxed);
    }

    /// One batch's images: distinct ones taken from the feature cache or run through the ResNet.
    pub(crate) fn record_images(&self, report: &BatchReport) {
        self.image_cache_hits
            .fetch_add(report.cache_hits as u64, Ordering::Relaxed);
        self.image_cache_misses.fetch_add(
            (report.images - report.cache_hits) as u64,
            Ordering::Relaxed,
        );
        self.image_cache_bytes
            .store(report.cache_bytes, Ordering::Relaxed);
    }

    pub fn image_cache(&self) -> (u64, u64) {
        (
            self.image_cache_hits.load(Ordering::Relaxed),
            self.image_cache_misses.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker_state
            .store(i64::from(state.code()), Ordering::Relaxed);
    }

    pub fn render(&self, o: &mut String) {
        prom::render_device_memory(o, self.device_memory.get().and_then(|p| (p.0)()));
        prom::head(
            o,
            "ofa_queue_duration_seconds",
            "histogram",
            "Time an admitted pair waited for the inference thread.",
        );
        self.queue_duration
            .render(o, "ofa_queue_duration_seconds", "");
        prom::head(
            o,
            "ofa_inference_duration_seconds",
            "histogram",
            "Time of the batched forward pass a pair ran in.",
        );
        self.inference_duration
            .render(o, "ofa_inference_duration_seconds", "");
        prom::head(o, "ofa_batch_size", "histogram", "Pairs per forward pass.");
        self.batch_size.render(o, "ofa_batch_size", "");
        prom::head(
            o,
            "ofa_rejections_total",
            "counter",
            "Requests refused or failed, by reason.",
        );
        for (reason, n) in lock(&self.rejections).iter() {
            let _ = writeln!(o, "ofa_rejections_total{{reason=\"{reason}\"}} {n}");
        }
        prom::single(
            o,
            "ofa_queue_depth",
            "gauge",
            "Pairs admitted and waiting for the inference thread.",
            self.queue_depth.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_breaker_state",
            "gauge",
            "Circuit breaker: 0 closed, 1 open, 2 half-open.",
            self.breaker_state.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_model_loaded",
            "gauge",
            "1 once the model is loaded.",
            self.model_loaded.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_batches_failed_total",
            "counter",
            "Forward passes that failed (errors or panics).",
            self.batches_failed.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_image_cache_hits_total",
            "counter",
            "Distinct images of a batch whose ResNet features came from the feature cache.",
            self.image_cache_hits.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_image_cache_misses_total",
            "counter",
            "Distinct images of a batch run through the ResNet (every image when the cache is off).",
            self.image_cache_misses.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_image_cache_bytes",
            "gauge",
            "Bytes of image features the cache holds.",
            self.image_cache_bytes.load(Ordering::Relaxed),
        );
        prom::single(
            o,
            "ofa_model_load_seconds",
            "gauge",
            "Time the model took to load.",
            *lock(&self.model_load_seconds),
        );
    }
}
