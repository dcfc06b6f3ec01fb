//! The worker's own families; `/metrics` on the metrics port adds the engine's (batch sizes,
//! inference time, queue) and the process's.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use ofa_engine::prom::{self, Histogram, LATENCY_BUCKETS};

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
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::Error,
    Outcome::Retried,
    Outcome::DeadLettered,
    Outcome::Unconfirmed,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Unconfirmed => "unconfirmed",
        }
    }
}

#[derive(Debug)]
pub struct WorkerMetrics {
    jobs: [AtomicU64; 5],
    pub fetch_seconds: Histogram,
    pub reconnects: AtomicU64,
    pub connected: AtomicBool,
    pub in_flight: AtomicI64,
    /// Unix time of the last job settled, for "backlog but no progress" alerts.
    pub last_settled: AtomicU64,
    /// Messages ready in the jobs and dead-letter queues, as last read from the broker.
    pub backlog: AtomicI64,
    pub dead_letters: AtomicI64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            jobs: Default::default(),
            fetch_seconds: Histogram::new(&LATENCY_BUCKETS),
            reconnects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            last_settled: AtomicU64::new(0),
            backlog: AtomicI64::new(-1),
            dead_letters: AtomicI64::new(-1),
        }
    }
}

impl WorkerMetrics {
    pub fn record(&self, outcome: Outcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.jobs[i].fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_settled.store(now, Ordering::Relaxed);
    }

    pub fn jobs(&self, outcome: Outcome) -> u64 {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.jobs[i].load(Ordering::Relaxed)
    }

    pub fn render(&self, o: &mut String, jobs_queue: &str, dead_letter_queue: &str) {
        prom::head(
            o,
            "ofa_jobs_total",
            "counter",
            "Jobs by how they left the worker.",
        );
        for (outcome, n) in OUTCOMES.iter().zip(&self.jobs) {
            let _ = writeln!(
                o,
                "ofa_jobs_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        prom::head(
            o,
            "ofa_image_fetch_seconds",
            "histogram",
            "Time to fetch or read a job's image (URL, path or inline base64).",
        );
        self.fetch_seconds.render(o, "ofa_image_fetch_seconds", "");
        let gauges: [(&str, &str, &str, i64); 3] = [
            (
                "ofa_broker_reconnects_total",
                "counter",
                "Broker connections lost and opened again.",
                self.reconnects.load(Ordering::Relaxed) as i64,
            ),
            (
                "ofa_broker_connected",
                "gauge",
                "1 while the worker holds a broker connection.",
                i64::from(self.connected.load(Ordering::Relaxed)),
            ),
            (
                "ofa_jobs_in_flight",
                "gauge",
                "Jobs received and not yet settled.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            prom::single(o, name, kind, help, v);
        }
        prom::single(
            o,
            "ofa_jobs_last_settled_timestamp_seconds",
            "gauge",
            "Unix time the worker last settled a job (0: none yet).",
            self.last_settled.load(Ordering::Relaxed),
        );
        prom::head(
            o,
            "ofa_broker_queue_messages",
            "gauge",
            "Messages ready in a queue, as the worker last read it from the broker.",
        );
        for (queue, v) in [
            (jobs_queue, &self.backlog),
            (dead_letter_queue, &self.dead_letters),
        ] {
            let v = v.load(Ordering::Relaxed);
            if v >= 0 {
                let _ = writeln!(o, "ofa_broker_queue_messages{{queue=\"{queue}\"}} {v}");
            }
        }
    }
}
