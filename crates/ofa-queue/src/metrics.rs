//! The worker's own families; `/metrics` on the metrics port adds the engine's (batch sizes,
//! inference time, queue) and the process's.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use ofa_engine::prom::LATENCY_BUCKETS;
use ofa_engine::prom::{self, Histogram, IntCounter, IntCounterVec, MetricFamily, Registry};

/// How a job left the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Scored; result published and job acked.
    Ok,
    /// An input error (will never succeed); error result published and job acked.
    Error,
    /// A transient failure: handed back for redelivery.
    Retried,
    /// Not a job at all, or a transient failure on its last allowed delivery.
    DeadLettered,
    /// The result was not confirmed by the broker: handed back, runs again.
    Unconfirmed,
    /// Held when the worker stopped and not run (or refused by the stopping engine): put back
    /// without spending a delivery.
    Released,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::Ok,
    Outcome::Error,
    Outcome::Retried,
    Outcome::DeadLettered,
    Outcome::Unconfirmed,
    Outcome::Released,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Released => "released",
        }
    }
}

#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    jobs: IntCounterVec,
    pub fetch_seconds: Histogram,
    pub reconnects: IntCounter,
    // The rest is state the worker itself reads (readiness, drain); `/metrics` reads it when
    // scraped.
    pub connected: AtomicBool,
    pub in_flight: AtomicI64,
    /// Unix time of the last job settled, for "backlog but no progress" alerts.
    pub last_settled: AtomicU64,
    /// Messages ready in the jobs and dead-letter queues, as last read from the broker
    /// (-1: not read yet, and not exported).
    pub backlog: AtomicI64,
    pub dead_letters: AtomicI64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let jobs = prom::counter_vec(
            &r,
            "ofa_jobs_total",
            "Jobs by how they left the worker.",
            &["outcome"],
        );
        // Every outcome from 0, so the first dead letter is an increase an alert can see.
        for outcome in OUTCOMES {
            jobs.with_label_values(&[outcome.as_str()]);
        }
        WorkerMetrics {
            jobs,
            fetch_seconds: prom::histogram(
                &r,
                "ofa_image_fetch_seconds",
                "Time to fetch or read a job's image (URL, path or inline base64).",
                &LATENCY_BUCKETS,
            ),
            reconnects: prom::counter(
                &r,
                "ofa_broker_reconnects_total",
                "Broker connections lost and opened again.",
            ),
            connected: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            last_settled: AtomicU64::new(0),
            backlog: AtomicI64::new(-1),
            dead_letters: AtomicI64::new(-1),
            registry: r,
        }
    }
}

impl WorkerMetrics {
    pub fn record(&self, outcome: Outcome) {
        self.jobs.with_label_values(&[outcome.as_str()]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_settled.store(now, Ordering::Relaxed);
    }

    pub fn jobs(&self, outcome: Outcome) -> u64 {
        self.jobs.with_label_values(&[outcome.as_str()]).get()
    }

    /// The worker's families as scraped now.
    pub fn gather(&self, jobs_queue: &str, dead_letter_queue: &str) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        families.push(prom::gauge_now(
            "ofa_broker_connected",
            "1 while the worker holds a broker connection.",
            f64::from(u8::from(self.connected.load(Ordering::Relaxed))),
        ));
        families.push(prom::gauge_now(
            "ofa_jobs_in_flight",
            "Jobs received and not yet settled.",
            self.in_flight.load(Ordering::Relaxed) as f64,
        ));
        families.push(prom::gauge_now(
            "ofa_jobs_last_settled_timestamp_seconds",
            "Unix time the worker last settled a job (0: none yet).",
            self.last_settled.load(Ordering::Relaxed) as f64,
        ));
        let depths: Vec<(&str, f64)> = [
            (jobs_queue, &self.backlog),
            (dead_letter_queue, &self.dead_letters),
        ]
        .into_iter()
        .map(|(queue, v)| (queue, v.load(Ordering::Relaxed)))
        .filter(|(_, v)| *v >= 0)
        .map(|(queue, v)| (queue, v as f64))
        .collect();
        families.extend(prom::gauge_now_by(
            "ofa_broker_queue_messages",
            "Messages ready in a queue, as the worker last read it from the broker.",
            "queue",
            &depths,
        ));
        families
    }
}
