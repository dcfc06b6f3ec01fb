//! The worker loop: take jobs from the broker, run them in chunks through the engine, publish
//! each result and ack the job only once the broker has confirmed the result. Reconnects with
//! backoff when the broker goes away; on stop, finishes what it holds and closes cleanly.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::FutureExt;
use ofa_jobs::outcome::Timings;
use ofa_jobs::{Failure, Job, JobResult, Runner};
use ofa_server::logging::Logger;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, JobSource, Received, ResultSink, Settle};
use crate::error::BrokerError;
use crate::metrics::{Outcome, WorkerMetrics};

/// Longest wait for a connection, its channels and the queue declarations.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages received and not yet settled, at most (the broker's prefetch).
    pub prefetch: u16,
    /// Jobs handed to the engine together (the model's batch size is a good value).
    pub chunk: usize,
    /// How long to wait for more messages to fill a chunk once one has arrived.
    pub gather: Duration,
    /// Deliveries before the broker dead-letters a job (for logs: the broker enforces it).
    pub delivery_limit: u32,
    /// Wait before handing back a transiently failed job, times its delivery number.
    pub retry_delay: Duration,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// After a stop: how long to finish what is held before closing anyway.
    pub shutdown_timeout: Duration,
    /// Longest job message; a longer one is dead-lettered unread (`MAX_JOB_BYTES`).
    pub max_job_bytes: usize,
    /// How often to read the queues' depths for the metrics.
    pub depth_interval: Duration,
    pub model_id: String,
    pub model_revision: String,
}

pub struct Worker<B: Broker> {
    broker: B,
    runner: Arc<Runner>,
    metrics: Arc<WorkerMetrics>,
    log: Arc<Logger>,
    config: Arc<WorkerConfig>,
}

impl<B: Broker> Worker<B> {
    pub fn new(
        broker: B,
        runner: Arc<Runner>,
        metrics: Arc<WorkerMetrics>,
        log: Arc<Logger>,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            broker,
            runner,
            metrics,
            log,
            config: Arc::new(config),
        }
    }

    /// Runs until `stop` completes, then drains: stops consuming, settles everything held
    /// (within the shutdown timeout) and closes the connection. Returns early only for what a
    /// reconnect cannot mend: queues declared with other settings.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) -> Result<(), BrokerError> {
        tokio::pin!(stop);
        let (stopping_tx, stopping) = watch::channel(false);
        let mut delays = reconnect_delays(self.config.reconnect_max);
        let mut sessions = 0u64;
        loop {
            // A broker that accepts the connection but never answers (still booting, queues
            // recovering) must not hold the worker: the attempt is abandoned and retried.
            let open = tokio::time::timeout(OPEN_TIMEOUT, self.broker.open(self.config.prefetch));
            let opened = tokio::select! {
                _ = &mut stop => break,
                o = open => o.unwrap_or_else(|_| Err(BrokerError::Lost(format!(
                    "no session within {} s", OPEN_TIMEOUT.as_secs()
                )))),
            };
            let (mut source, sink) = match opened {
                Ok(s) => s,
                Err(e @ BrokerError::Mismatch { .. }) => return Err(e),
                Err(e) => {
                    let wait = delays.next().unwrap_or(self.config.reconnect_max);
                    self.log.event(
                        "broker_unavailable",
                        &[
                            ("error", e.to_string().into()),
                            ("retry_in_s", wait.as_secs_f64().into()),
                        ],
                    );
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            delays = reconnect_delays(self.config.reconnect_max);
            sessions += 1;
            if sessions > 1 {
                self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            self.metrics.connected.store(true, Ordering::Relaxed);
            self.log.event(
                "broker_connected",
                &[
                    ("broker", self.broker.describe().into()),
                    ("prefetch", self.config.prefetch.into()),
                ],
            );
            let mut tasks = JoinSet::new();
            let mut depth_tick = tokio::time::interval(self.config.depth_interval);
            let stopped = loop {
                tokio::select! {
                    _ = &mut stop => break true,
                    _ = depth_tick.tick() => {
                        let depths = tokio::time::timeout(Duration::from_secs(10), sink.depths());
                        if let Ok(Ok((jobs, dead))) = depths.await {
                            self.metrics.backlog.store(jobs as i64, Ordering::Relaxed);
                            self.metrics.dead_letters.store(dead as i64, Ordering::Relaxed);
                        }
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    got = source.next() => match got {
                        Some(Ok(first)) => {
                            let (chunk, lost) = self.gather(&mut source, first).await;
                            let chunk = chunk
                                .into_iter()
                                .map(|r| (r, Held::new(&self.metrics)))
                                .collect();
                            tasks.spawn(handle_chunk(chunk, Arc::new(Context {
                                sink: sink.clone(),
                                runner: self.runner.clone(),
                                metrics: self.metrics.clone(),
                                log: self.log.clone(),
                                config: self.config.clone(),
                                stopping: stopping.clone(),
                            })));
                            if lost.is_some() {
                                self.lost(lost);
                                break false;
                            }
                        }
                        Some(Err(e)) => {
                            self.lost(Some(e.to_string()));
                            break false;
                        }
                        None => {
                            self.lost(None);
                            break false;
                        }
                    },
                }
            };
            if stopped {
                let _ = stopping_tx.send(true);
                source.stop().await;
                let held = self.metrics.in_flight.load(Ordering::Relaxed);
                self.log
                    .event("worker_draining", &[("jobs_held", held.into())]);
                let all = async { while tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(self.config.shutdown_timeout, all)
                    .await
                    .is_err()
                {
                    self.log.event(
                        "worker_drain_timeout",
                        &[(
                            "jobs_left_to_broker",
                            self.metrics.in_flight.load(Ordering::Relaxed).into(),
                        )],
                    );
                }
                source.close().await;
                break;
            }
            // The chunks in flight finish on their own: their results cannot be confirmed on
            // the lost connection, so their jobs stay unacked and the broker hands them out
            // again. Nothing is acked twice: settling consumes each message.
            tasks.detach_all();
            self.metrics.connected.store(false, Ordering::Relaxed);
            let wait = delays.next().unwrap_or(self.config.reconnect_max);
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.metrics.connected.store(false, Ordering::Relaxed);
        self.log.event("worker_stopped", &[]);
        Ok(())
    }

    fn lost(&self, error: Option<String>) {
        self.log.event(
            "broker_connection_lost",
            &[(
                "error",
                error.unwrap_or_else(|| "consumer cancelled".into()).into(),
            )],
        );
    }

    /// `first` and whatever else arrives within the gather window, up to a chunk.
    async fn gather(
        &self,
        source: &mut B::Source,
        first: Received<<B::Source as JobSource>::Settle>,
    ) -> (
        Vec<Received<<B::Source as JobSource>::Settle>>,
        Option<String>,
    ) {
        let mut chunk = vec![first];
        let until = Instant::now() + self.config.gather;
        while chunk.len() < self.config.chunk.max(1) {
            match tokio::time::timeout_at(until.into(), source.next()).await {
                Ok(Some(Ok(r))) => chunk.push(r),
                Ok(Some(Err(e))) => return (chunk, Some(e.to_string())),
                Ok(None) => return (chunk, Some("consumer cancelled".into())),
                Err(_) => break,
            }
        }
        (chunk, None)
    }
}

/// One received message in the in-flight gauge until this is dropped, however its handling
/// ends (a panic included), so the gauge cannot leak.
struct Held(Arc<WorkerMetrics>);

impl Held {
    fn new(metrics: &Arc<WorkerMetrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Held(metrics.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits between reconnect attempts: doubling from half a second up to `max`, each with random
/// jitter, so the workers a broker restart disconnected all at once (KEDA scales them by the
/// dozen) do not all come back in the same instant.
fn reconnect_delays(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What a chunk's jobs need to finish: where results go, the engine, and the worker's state.
struct Context<K> {
    sink: K,
    runner: Arc<Runner>,
    metrics: Arc<WorkerMetrics>,
    log: Arc<Logger>,
    config: Arc<WorkerConfig>,
    stopping: watch::Receiver<bool>,
}

async fn handle_chunk<S: Settle, K: ResultSink>(
    chunk: Vec<(Received<S>, Held)>,
    ctx: Arc<Context<K>>,
) {
    let Context {
        runner,
        metrics,
        log,
        config,
        ..
    } = &*ctx;
    let mut jobs = Vec::with_capacity(chunk.len());
    let mut held = Vec::with_capacity(chunk.len());
    let mut settles = JoinSet::new();
    for (r, guard) in chunk {
        let parsed = if r.body.len() > config.max_job_bytes {
            Err(format!(
                "the job has {} bytes, more than MAX_JOB_BYTES ({})",
                r.body.len(),
                config.max_job_bytes
            ))
        } else {
            Job::parse(&r.body).map_err(|e| format!("not a job: {e}"))
        };
        match parsed {
            Ok(job) => {
                jobs.push(job);
                held.push((r.settle, r.delivery, guard));
            }
            Err(reason) => {
                let (metrics, log) = (metrics.clone(), log.clone());
                settles.spawn(async move {
                    match r.settle.dead_letter(r.body, &reason).await {
                        Ok(()) => {
                            metrics.record(Outcome::DeadLettered);
                            log.event("job_dead_lettered", &[("reason", reason.into())]);
                        }
                        Err(e) => log.event("job_not_settled", &[("error", e.to_string().into())]),
                    }
                    drop(guard);
                });
            }
        }
    }
    let keys: Vec<(String, Option<serde_json::Value>)> = jobs
        .iter()
        .map(|j| (j.id.clone(), j.meta.clone()))
        .collect();
    let results = if jobs.is_empty() {
        Vec::new()
    } else {
        // A panic while running the chunk must still settle every message it holds: each job
        // goes back as a transient failure (retried, then dead-lettered at the limit).
        match AssertUnwindSafe(runner.run(jobs, ctx.stopping.clone()))
            .catch_unwind()
            .await
        {
            Ok(results) => results,
            Err(panic) => {
                let message = panic_text(&*panic);
                log.event("chunk_panicked", &[("error", message.as_str().into())]);
                keys.into_iter()
                    .map(|(id, meta)| JobResult {
                        id,
                        meta,
                        outcome: Err(Failure::transient(
                            "internal",
                            format!("the worker failed while running this job: {message}"),
                        )),
                        timings: Timings::default(),
                    })
                    .collect()
            }
        }
    };
    for (result, (settle, delivery, guard)) in results.into_iter().zip(held) {
        settles.spawn(finish(result, settle, delivery, guard, ctx.clone()));
    }
    while settles.join_next().await.is_some() {}
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// One job's end: publish and ack, or hand back for redelivery.
async fn finish<S: Settle, K: ResultSink>(
    result: JobResult,
    settle: S,
    delivery: u32,
    _held: Held,
    ctx: Arc<Context<K>>,
) {
    let Context {
        sink,
        metrics,
        log,
        config,
        ..
    } = &*ctx;
    let mut stopping = ctx.stopping.clone();
    if !result.timings.fetch.is_zero() {
        metrics
            .fetch_seconds
            .observe(result.timings.fetch.as_secs_f64());
    }
    let id = result.id.clone();
    if let Some(f) = result.outcome.as_ref().err().filter(|f| f.transient) {
        let last = delivery >= config.delivery_limit;
        log.event(
            if last {
                "job_dead_lettered"
            } else {
                "job_retry"
            },
            &[
                ("id", id.as_str().into()),
                ("delivery", delivery.into()),
                ("delivery_limit", config.delivery_limit.into()),
                ("error_type", f.error_type.as_str().into()),
                ("error", f.message.as_str().into()),
            ],
        );
        // Not at once: a breaker open or a flaky image host needs time. A stop hands it back
        // straight away.
        if !last && !*stopping.borrow() {
            let wait = (config.retry_delay * delivery).min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
        let _ = settle.retry().await;
        metrics.record(if last {
            Outcome::DeadLettered
        } else {
            Outcome::Retried
        });
        return;
    }
    let ok = result.outcome.is_ok();
    let body = serde_json::to_vec(&result.to_json(&config.model_id, &config.model_revision))
        .unwrap_or_default();
    match sink.publish(&id, body).await {
        Ok(()) => match settle.ack().await {
            Ok(()) => metrics.record(if ok { Outcome::Ok } else { Outcome::Error }),
            // The result is stored; the job comes back and its duplicate is dropped by id.
            Err(e) => log.event(
                "job_ack_failed",
                &[("id", id.as_str().into()), ("error", e.to_string().into())],
            ),
        },
        Err(e) => {
            log.event(
                "job_result_unconfirmed",
                &[("id", id.as_str().into()), ("error", e.to_string().into())],
            );
            let _ = settle.retry().await;
            metrics.record(Outcome::Unconfirmed);
        }
    }
    if !ok {
        if let Err(f) = &result.outcome {
            log.event(
                "job_failed",
                &[
                    ("id", id.as_str().into()),
                    ("error_type", f.error_type.as_str().into()),
                    ("error", f.message.as_str().into()),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_to_the_cap_with_jitter() {
        let max = Duration::from_secs(30);
        let a: Vec<Duration> = reconnect_delays(max).take(12).collect();
        let b: Vec<Duration> = reconnect_delays(max).take(12).collect();
        assert!(
            a[0] >= Duration::from_millis(500) && a[0] < Duration::from_secs(2),
            "{a:?}"
        );
        assert!(a.iter().all(|d| *d <= max * 2), "{a:?}");
        assert!(a[11] >= max, "the cap is reached: {a:?}");
        assert_ne!(a, b, "two workers do not wait alike");
    }
}
