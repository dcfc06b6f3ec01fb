//! Runs a chunk of jobs: images fetched concurrently, every valid pair scored through the
//! engine together (one admission, the engine's batching), one result per job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ofa_api::{ErrorType, Scores};
use ofa_engine::{Engine, EngineError, Pair, Scored};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fetch::Fetcher;
use crate::job::Job;
use crate::outcome::{Failure, JobResult, Timings};

pub struct Runner {
    engine: Arc<Engine>,
    fetcher: Arc<Fetcher>,
    /// How long one chunk may take, from its start.
    timeout: Duration,
}

impl Runner {
    pub fn new(engine: Arc<Engine>, fetcher: Fetcher, timeout: Duration) -> Self {
        Runner {
            engine,
            fetcher: Arc::new(fetcher),
            timeout,
        }
    }

    /// One result per job, in order. Jobs the engine refused without trying (breaker open,
    /// queue full) wait out its retry-after and go again, until the chunk's deadline or until
    /// `stop` turns true: the engine's state is not the job's failure, so it must not spend
    /// the job's deliveries (a breaker's cool-down outlasts a few quick redeliveries).
    pub async fn run(&self, jobs: Vec<Job>, stop: watch::Receiver<bool>) -> Vec<JobResult> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut fetched: Vec<Option<Result<(Pair, Duration), Failure>>> =
            (0..jobs.len()).map(|_| None).collect();
        let mut tasks = JoinSet::new();
        for (i, job) in jobs.iter().enumerate() {
            let source = match &job.image {
                Ok(s) => s.clone(),
                Err(f) => {
                    fetched[i] = Some(Err(f.clone()));
                    continue;
                }
            };
            let Some(text) = job.text.clone() else {
                fetched[i] = Some(Err(Failure::new(
                    ErrorType::MissingText,
                    "the job has no \"text\"",
                )));
                continue;
            };
            let (fetcher, premise) = (self.fetcher.clone(), job.premise.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let got = fetcher.fetch(&source, deadline).await.map(|image| {
                    (
                        Pair {
                            image,
                            text,
                            premise,
                            cache_scope: 0,
                        },
                        t.elapsed(),
                    )
                });
                (i, got)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, got)) = joined {
                fetched[i] = Some(got);
            }
        }
        // Each fetched pair with its job's index and fetch time.
        let mut pairs = Vec::new();
        let mut out: Vec<Option<(Result<Scores, Failure>, Timings)>> =
            (0..jobs.len()).map(|_| None).collect();
        for (i, f) in fetched.into_iter().enumerate() {
            match f {
                Some(Ok((pair, fetch))) => pairs.push(((i, fetch), pair)),
                Some(Err(e)) => out[i] = Some((Err(e), Timings::default())),
                None => {
                    out[i] = Some((
                        Err(Failure::transient(
                            ErrorType::Internal,
                            "the image fetch stopped",
                        )),
                        Timings::default(),
                    ))
                }
            }
        }
        for (i, outcome, timings) in self.score(pairs, deadline, stop).await {
            out[i] = Some((outcome, timings));
        }
        let total = start.elapsed();
        jobs.into_iter()
            .zip(out)
            .map(|(job, o)| {
                let (outcome, mut timings) = o.expect("every job answered");
                timings.total = total;
                JobResult {
                    id: job.id,
                    meta: job.meta,
                    outcome,
                    timings,
                }
            })
            .collect()
    }

    /// Scores the fetched pairs (each with its job's index and fetch time), holding back what
    /// the engine refuses as [`Runner::run`] says.
    async fn score(
        &self,
        mut pending: Vec<((usize, Duration), Pair)>,
        deadline: Instant,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<(usize, Result<Scores, Failure>, Timings)> {
        let mut done = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let batch = pending.iter().map(|(_, p)| p.clone()).collect();
            let results = match self.engine.run_each(batch, deadline).await {
                Ok(each) => each,
                Err(e) => pending.iter().map(|_| Err(e.replicate())).collect(),
            };
            let mut wait = Duration::ZERO;
            let mut again = Vec::new();
            for ((at, pair), r) in pending.into_iter().zip(results) {
                match refusal(&r) {
                    Some(after) if Instant::now() + after < deadline && !*stop.borrow() => {
                        wait = wait.max(after);
                        again.push((at, pair));
                    }
                    _ => done.push(answer(at, r)),
                }
            }
            pending = again;
            if pending.is_empty() {
                break;
            }
            let stopped = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                let e = EngineError::ShuttingDown;
                done.extend(
                    pending
                        .drain(..)
                        .map(|(at, _)| answer(at, Err(e.replicate()))),
                );
            }
        }
        done
    }
}

/// How long to wait before trying again, when the engine refused the pair without running it.
fn refusal(r: &Result<Scored, EngineError>) -> Option<Duration> {
    match r {
        Err(e @ (EngineError::BreakerOpen { .. } | EngineError::QueueFull { .. })) => {
            // At least a moment: a zero retry-after must not spin.
            e.retry_after().map(|d| d.max(Duration::from_millis(100)))
        }
        _ => None,
    }
}

fn answer(
    (i, fetch): (usize, Duration),
    r: Result<Scored, EngineError>,
) -> (usize, Result<Scores, Failure>, Timings) {
    match r {
        Ok(s) => (
            i,
            Ok(s.scores),
            Timings {
                fetch,
                queue: s.queue_time,
                inference: s.inference_time,
                total: Duration::ZERO,
            },
        ),
        Err(e) => (
            i,
            Err(e.failure()),
            Timings {
                fetch,
                ..Timings::default()
            },
        ),
    }
}
