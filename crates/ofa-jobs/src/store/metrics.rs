//! The store's counters, in a registry of their own that a front end adds to its `/metrics`
//! (`worker`); `batch` reads them for its summary.

use ofa_engine::prom::{self, IntCounter, MetricFamily, Registry};

#[derive(Debug)]
pub struct StoreMetrics {
    registry: Registry,
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub not_modified: IntCounter,
    pub errors: IntCounter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let r = Registry::new();
        StoreMetrics {
            hits: prom::counter(
                &r,
                "ofa_result_store_hits_total",
                "Jobs answered from the result store, without model time.",
            ),
            misses: prom::counter(
                &r,
                "ofa_result_store_misses_total",
                "Jobs looked up in the result store and not found (scored, then stored).",
            ),
            not_modified: prom::counter(
                &r,
                "ofa_image_fetch_not_modified_total",
                "Conditional image fetches answered 304 Not Modified (nothing downloaded).",
            ),
            errors: prom::counter(
                &r,
                "ofa_result_store_errors_total",
                "Result store calls that failed; their jobs were scored as if they missed.",
            ),
            registry: r,
        }
    }
}

impl StoreMetrics {
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}
