//! One chunk of jobs from the broker to its end: parsed (a message that is not a job, or is
//! over `MAX_JOB_BYTES`, dead-lettered unread), run through the engine together, and each job
//! settled: its result published and confirmed, then acked; handed back for redelivery; or,
//! when the worker stops before running it, released without spending a delivery. Every
//! message received is settled, whatever happens while its chunk runs.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use ofa_api::panic::panic_message;
use ofa_api::ErrorType;
use ofa_jobs::outcome::Timings;
use ofa_jobs::{Failure, Job, JobResult, Runner};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Received, ResultSink, Settle};
use crate::metrics::{Outcome, WorkerMetrics};
use crate::worker_config::WorkerConfig;

/// One received message in the in-flight gauge until this is dropped, however its handling
/// ends (a panic included), so the gauge cannot leak.
pub(crate) struct Held(Arc<WorkerMetrics>);

impl Held {
    pub(crate) fn new(metrics: &Arc<WorkerMetrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Held(metrics.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a chunk's jobs need to finish: where results go, the engine, and the worker's state.
pub(crate) struct Context<K> {
    pub(crate) sink: K,
    pub(crate) runner: Arc<Runner>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) config: Arc<WorkerConfig>,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A job the worker never ran, or ran only into its own stop, back to the queue with the
/// deliveries it had spent before this one.
pub(crate) async fn release<S: Settle>(
    settle: S,
    body: Vec<u8>,
    delivery: u32,
    id: &str,
    metrics: &WorkerMetrics,
) {
    match settle.release(body, delivery.saturating_sub(1)).await {
        Ok(()) => {
            metrics.record(Outcome::Released);
            tracing::info!(id, delivery, "job_released");
        }
        // Unsettled, it goes back when the connection closes (counted, on older brokers).
        Err(e) => tracing::warn!(id, error = %e, "job_not_released"),
    }
}

pub(crate) async fn handle_chunk<S: Settle, K: ResultSink>(
    chunk: Vec<(Received<S>, Held)>,
    ctx: Arc<Context<K>>,
) {
    let Context {
        runner,
        metrics,
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
                held.push((r.settle, r.body, r.delivery, guard));
            }
            Err(reason) => {
                let metrics = metrics.clone();
                settles.spawn(async move {
                    match r.settle.dead_letter(r.body, &reason).await {
                        Ok(()) => {
                            metrics.record(Outcome::DeadLettered);
                            tracing::warn!(reason, "job_dead_lettered");
                        }
                        Err(e) => tracing::warn!(error = %e, "job_not_settled"),
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
                let message = panic_message(&*panic);
                tracing::error!(error = message.as_str(), "chunk_panicked");
                keys.into_iter()
                    .map(|(id, meta)| JobResult {
                        id,
                        meta,
                        outcome: Err(Failure::transient(
                            ErrorType::Internal,
                            format!("the worker failed while running this job: {message}"),
                        )),
                        timings: Timings::default(),
                        cached: false,
                    })
                    .collect()
            }
        }
    };
    for (result, (settle, body, delivery, guard)) in results.into_iter().zip(held) {
        let message = Message {
            settle,
            body,
            delivery,
        };
        settles.spawn(finish(result, message, guard, ctx.clone()));
    }
    while settles.join_next().await.is_some() {}
}

/// A job's message as received, until it is settled.
struct Message<S> {
    settle: S,
    body: Vec<u8>,
    delivery: u32,
}

/// One job's end: publish and ack; or hand back for redelivery; or, stopping, release it
/// without spending a delivery; or dead-letter it at its last delivery.
async fn finish<S: Settle, K: ResultSink>(
    result: JobResult,
    message: Message<S>,
    _held: Held,
    ctx: Arc<Context<K>>,
) {
    let Context {
        sink,
        metrics,
        config,
        ..
    } = &*ctx;
    let Message {
        settle,
        body,
        delivery,
    } = message;
    let mut stopping = ctx.stopping.clone();
    if !result.timings.fetch.is_zero() {
        metrics
            .fetch_seconds
            .observe(result.timings.fetch.as_secs_f64());
    }
    let id = result.id.clone();
    if let Some(f) = result.outcome.as_ref().err().filter(|f| f.transient) {
        // Refused by an engine that is stopping (or full, or resting its breaker while the
        // worker stops): the job did not fail, so it must not spend a delivery.
        let engine_refused = matches!(
            f.kind,
            ErrorType::ShuttingDown | ErrorType::QueueFull | ErrorType::BreakerOpen
        );
        if engine_refused && *stopping.borrow() {
            release(settle, body, delivery, &id, metrics).await;
            return;
        }
        let last = delivery >= config.delivery_limit;
        tracing::info!(
            id = id.as_str(),
            delivery,
            delivery_limit = config.delivery_limit,
            error_type = f.kind.as_str(),
            error = f.message.as_str(),
            "{}",
            if last {
                "job_dead_lettered"
            } else {
                "job_retry"
            }
        );
        if last {
            // Dead-lettered here rather than by the broker's count, which restarts for a job
            // a stopping worker released.
            let reason = format!(
                "failed on delivery {delivery} of {} ({}): {}",
                config.delivery_limit,
                f.kind.as_str(),
                f.message
            );
            match settle.dead_letter(body, &reason).await {
                Ok(()) => metrics.record(Outcome::DeadLettered),
                Err(e) => tracing::warn!(id = id.as_str(), error = %e, "job_not_settled"),
            }
            return;
        }
        // Not at once: a breaker open or a flaky image host needs time. A stop hands it back
        // straight away.
        if !*stopping.borrow() {
            let wait = (config.retry_delay * delivery).min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
        let _ = settle.retry().await;
        metrics.record(Outcome::Retried);
        return;
    }
    let ok = result.outcome.is_ok();
    let body = serde_json::to_vec(&result.to_json(&config.model_id, &config.model_revision))
        .unwrap_or_default();
    match sink.publish(&id, body).await {
        Ok(()) => match settle.ack().await {
            Ok(()) => metrics.record(if ok { Outcome::Ok } else { Outcome::Error }),
            // The result is stored; the job comes back and its duplicate is dropped by id.
            Err(e) => tracing::warn!(id = id.as_str(), error = %e, "job_ack_failed"),
        },
        Err(e) => {
            tracing::warn!(id = id.as_str(), error = %e, "job_result_unconfirmed");
            let _ = settle.retry().await;
            metrics.record(Outcome::Unconfirmed);
        }
    }
    if !ok {
        if let Err(f) = &result.outcome {
            tracing::info!(
                id = id.as_str(),
                error_type = f.kind.as_str(),
                error = f.message.as_str(),
                "job_failed"
            );
        }
    }
}
