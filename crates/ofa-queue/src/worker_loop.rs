//! The worker loop: take jobs from the broker, run them in chunks through the engine, publish
//! each result and ack the job only once the broker has confirmed the result. Reconnects with
//! backoff when the broker goes away; on stop, finishes what it is running, releases what it
//! holds unstarted (without spending its deliveries) and closes cleanly.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use ofa_jobs::Runner;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, JobSource, Received, ResultSink};
use crate::chunk::{handle_chunk, release, Context, Held};
use crate::error::BrokerError;
use crate::metrics::WorkerMetrics;
use crate::worker_config::WorkerConfig;

/// Longest wait for a connection, its channels and the queue declarations.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Worker<B: Broker> {
    broker: B,
    runner: Arc<Runner>,
    metrics: Arc<WorkerMetrics>,
    config: Arc<WorkerConfig>,
}

impl<B: Broker> Worker<B> {
    pub fn new(
        broker: B,
        runner: Arc<Runner>,
        metrics: Arc<WorkerMetrics>,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            broker,
            runner,
            metrics,
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
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs_f64(), "broker_unavailable");
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            delays = reconnect_delays(self.config.reconnect_max);
            sessions += 1;
            if sessions > 1 {
                self.metrics.reconnects.inc();
            }
            self.metrics.connected.store(true, Ordering::Relaxed);
            tracing::info!(
                broker = self.broker.describe(),
                prefetch = self.config.prefetch,
                "broker_connected"
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
                self.release_unstarted(&mut source).await;
                let held = self.metrics.in_flight.load(Ordering::Relaxed);
                tracing::info!(jobs_held = held, "worker_draining");
                let all = async { while tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(self.config.shutdown_timeout, all)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        jobs_left_to_broker = self.metrics.in_flight.load(Ordering::Relaxed),
                        "worker_drain_timeout"
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
        tracing::info!("worker_stopped");
        Ok(())
    }

    /// What the consumer had received but no chunk took (up to the prefetch) goes back
    /// without spending a delivery. After the cancel, the consumer yields what it buffered,
    /// then ends.
    async fn release_unstarted(&self, source: &mut B::Source) {
        let until = Instant::now() + Duration::from_secs(10);
        while let Ok(Some(Ok(r))) = tokio::time::timeout_at(until.into(), source.next()).await {
            let id = ofa_jobs::Job::parse(&r.body)
                .map(|j| j.id)
                .unwrap_or_default();
            release(r.settle, r.body, r.delivery, &id, &self.metrics).await;
        }
    }

    fn lost(&self, error: Option<String>) {
        tracing::warn!(
            error = error.unwrap_or_else(|| "consumer cancelled".into()),
            "broker_connection_lost"
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
