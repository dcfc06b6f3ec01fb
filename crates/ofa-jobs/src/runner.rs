//! Runs a chunk of jobs: images fetched concurrently, every valid pair scored through the
//! engine together (one admission, the engine's batching), one result per job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ofa_engine::{Engine, Pair};
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

    pub async fn run(&self, jobs: Vec<Job>) -> Vec<JobResult> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut fetched: Vec<Option<Result<(Pair, Duration), Failure>>> =
            (0..jobs.len()).map(|_| None).collect();
        let mut tasks = JoinSet::new();
        for (i, job) in jobs.iter().enumerate() {
            let Some(text) = job.text.clone() else {
                fetched[i] = Some(Err(Failure::input(
                    "missing_text",
                    "the job has no \"text\"",
                )));
                continue;
            };
            let source = match &job.image {
                Ok(s) => s.clone(),
                Err(f) => {
                    fetched[i] = Some(Err(f.clone()));
                    continue;
                }
            };
            let (fetcher, premise) = (self.fetcher.clone(), job.premise.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let got = fetcher.fetch(&source).await.map(|image| {
                    (
                        Pair {
                            image,
                            text,
                            premise,
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
        let mut pairs = Vec::new();
        let mut scored_at = Vec::new();
        let mut out: Vec<Option<(Result<ofa_model::Scores, Failure>, Timings)>> =
            (0..jobs.len()).map(|_| None).collect();
        for (i, f) in fetched.into_iter().enumerate() {
            match f {
                Some(Ok((pair, fetch))) => {
                    pairs.push(pair);
                    scored_at.push((i, fetch));
                }
                Some(Err(e)) => out[i] = Some((Err(e), Timings::default())),
                None => {
                    out[i] = Some((
                        Err(Failure::transient("internal", "the image fetch stopped")),
                        Timings::default(),
                    ))
                }
            }
        }
        if !pairs.is_empty() {
            match self.engine.run_each(pairs, deadline).await {
                Ok(results) => {
                    for ((i, fetch), r) in scored_at.into_iter().zip(results) {
                        out[i] = Some(match r {
                            Ok(s) => (
                                Ok(s.scores),
                                Timings {
                                    fetch,
                                    queue: s.queue_time,
                                    inference: s.inference_time,
                                    total: Duration::ZERO,
                                },
                            ),
                            Err(e) => (
                                Err(Failure::from_engine(&e)),
                                Timings {
                                    fetch,
                                    ..Timings::default()
                                },
                            ),
                        });
                    }
                }
                Err(e) => {
                    for (i, fetch) in scored_at {
                        out[i] = Some((
                            Err(Failure::from_engine(&e)),
                            Timings {
                                fetch,
                                ..Timings::default()
                            },
                        ));
                    }
                }
            }
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
}
