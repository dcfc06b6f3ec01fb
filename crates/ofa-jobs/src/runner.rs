//! Runs a chunk of jobs: images fetched concurrently (and answered from the result store when
//! it has them), every other valid pair scored through the engine together (one admission,
//! the engine's batching), one result per job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ofa_api::{ErrorType, Scores};
use ofa_engine::{Engine, EngineError, Pair, Scored};
use tokio::sync::watch;

use crate::acquire::{acquire, Got, Wanted};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::outcome::{Failure, JobResult, Timings};
use crate::store::{ResultKey, ResultStore, TextKey};

pub struct Runner {
    engine: Arc<Engine>,
    fetcher: Arc<Fetcher>,
    store: Option<Arc<ResultStore>>,
    /// How long one chunk may take, from its start.
    timeout: Duration,
}

/// Where a scored pair's answer goes: its job, its fetch time, its key in the store.
#[derive(Clone, Copy)]
struct Slot {
    job: usize,
    fetch: Duration,
    key: Option<ResultKey>,
}

/// A job's answer before it becomes a [`JobResult`]: the outcome, its timings, and whether
/// the store gave it.
type Answer = (Result<Scores, Failure>, Timings, bool);

impl Runner {
    pub fn new(engine: Arc<Engine>, fetcher: Fetcher, timeout: Duration) -> Self {
        Runner {
            engine,
            fetcher: Arc::new(fetcher),
            store: None,
            timeout,
        }
    }

    /// Consults `store` before scoring and keeps what is scored in it.
    pub fn with_store(mut self, store: Arc<ResultStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// One result per job, in order. Jobs the engine refused without trying (breaker open,
    /// queue full) wait out its retry-after and go again, until the chunk's deadline or until
    /// `stop` turns true: the engine's state is not the job's failure, so it must not spend
    /// the job's deliveries (a breaker's cool-down outlasts a few quick redeliveries).
    pub async fn run(&self, jobs: Vec<Job>, stop: watch::Receiver<bool>) -> Vec<JobResult> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut out: Vec<Option<Answer>> = (0..jobs.len()).map(|_| None).collect();
        // Each job that has an image source and a text: its index, texts and source.
        let mut texts = Vec::new();
        let mut wanted = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let failed = |f: Failure| Some((Err(f), Timings::default(), false));
            let source = match &job.image {
                Ok(s) => s.clone(),
                Err(f) => {
                    out[i] = failed(f.clone());
                    continue;
                }
            };
            let Some(text) = job.text.clone() else {
                out[i] = failed(Failure::new(
                    ErrorType::MissingText,
                    "the job has no \"text\"",
                ));
                continue;
            };
            // A text the engine refuses is not looked up: scoring reports why.
            let key = self.store.as_ref().and_then(|_| {
                let ids = self
                    .engine
                    .encode_text(&text, job.premise.as_deref())
                    .ok()?;
                Some(TextKey::of(&ids))
            });
            wanted.push(Wanted { source, text: key });
            texts.push((i, text, job.premise.clone()));
        }
        let store = self.store.as_deref();
        let acquired = acquire(&self.fetcher, store, &wanted, deadline).await;
        let mut pairs = Vec::new();
        for ((job, text, premise), got) in texts.into_iter().zip(acquired.got) {
            match got {
                Got::Stored { scores, fetch } => {
                    let timings = Timings {
                        fetch,
                        ..Timings::default()
                    };
                    out[job] = Some((Ok(scores), timings, true));
                }
                Got::Image { bytes, fetch, key } => pairs.push((
                    Slot { job, fetch, key },
                    Pair {
                        image: bytes,
                        text,
                        premise,
                        cache_scope: 0,
                    },
                )),
                Got::Failed(f) => out[job] = Some((Err(f), Timings::default(), false)),
            }
        }
        let mut fresh = Vec::new();
        for (slot, outcome, timings) in self.score(pairs, deadline, stop).await {
            if let (Some(key), Ok(scores)) = (slot.key, &outcome) {
                fresh.push((key, scores.clone()));
            }
            out[slot.job] = Some((outcome, timings, false));
        }
        // Stored before the results leave: a job answered is a job the next run can skip.
        if let Some(store) = store {
            store.save(&fresh, &acquired.urls).await;
        }
        let total = start.elapsed();
        jobs.into_iter()
            .zip(out)
            .map(|(job, o)| {
                let (outcome, mut timings, cached) = o.expect("every job answered");
                timings.total = total;
                JobResult {
                    id: job.id,
                    meta: job.meta,
                    outcome,
                    timings,
                    cached,
                }
            })
            .collect()
    }

    /// Scores the fetched pairs (each with its job's index and fetch time), holding back what
    /// the engine refuses as [`Runner::run`] says.
    async fn score(
        &self,
        mut pending: Vec<(Slot, Pair)>,
        deadline: Instant,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<(Slot, Result<Scores, Failure>, Timings)> {
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

fn answer(slot: Slot, r: Result<Scored, EngineError>) -> (Slot, Result<Scores, Failure>, Timings) {
    let fetch = slot.fetch;
    match r {
        Ok(s) => (
            slot,
            Ok(s.scores),
            Timings {
                fetch,
                queue: s.queue_time,
                inference: s.inference_time,
                total: Duration::ZERO,
            },
        ),
        Err(e) => (
            slot,
            Err(e.failure()),
            Timings {
                fetch,
                ..Timings::default()
            },
        ),
    }
}
