//! The inference thread: takes whatever is queued when it frees up (up to the batch size,
//! optionally waiting to fill), drops what nobody waits for, runs one forward pass, and sends
//! every pair its one reply. While the circuit breaker is open it also probes the model itself
//! once each cool-down is over, with the warm-up pair: an unready replica gets no traffic to
//! probe with (a load balancer sends none), so it would otherwise stay unready for good.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ofa_api::panic::panic_message;
use ofa_api::{BatchReport, Prepared, Scores};
use tokio::sync::oneshot;

use crate::admission::{Admission, Slot};
use crate::{Backend, Breaker, EngineError, EngineMetrics};

/// A pair's scores and where its time went.
#[derive(Debug, Clone)]
pub struct Scored {
    pub scores: Scores,
    /// Admitted (queued for preprocessing) → taken by the inference thread.
    pub queue_time: Duration,
    /// The forward pass the pair ran in.
    pub inference_time: Duration,
    /// When it was admitted, preprocessed (queued for the inference thread) and started in a
    /// batch: the stages of a trace.
    pub admitted: Instant,
    pub preprocessed: Instant,
    pub started: Instant,
    /// The batch it ran in: this engine's batch number, and how many pairs it held.
    pub batch_id: u64,
    pub batch_size: usize,
}

pub(crate) type Reply = oneshot::Sender<Result<Scored, EngineError>>;

pub(crate) struct Job {
    pub prepared: Prepared,
    pub deadline: Instant,
    pub admitted: Instant,
    /// Preprocessed and sent to the inference thread.
    pub preprocessed: Instant,
    /// Its queue place, held until the inference thread takes it.
    pub slot: Option<Slot>,
    pub reply: Reply,
}

pub(crate) struct Worker {
    pub backend: Arc<dyn Backend>,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub breaker: Arc<Breaker>,
    pub metrics: Arc<EngineMetrics>,
    pub admission: Arc<Admission>,
    pub faults: Arc<AtomicU32>,
    /// The prepared warm-up pair, once warm-up has run: the breaker's own probe.
    pub probe: Arc<Mutex<Option<Prepared>>>,
}

/// What the inference thread does next.
enum Next {
    Batch(Job),
    Probe,
}

/// Shortest wait before a probe: the breaker's clock and the channel's may disagree by a hair.
const PROBE_WAIT_MIN: Duration = Duration::from_millis(10);

impl Worker {
    pub fn run(self, rx: Receiver<Job>) {
        let mut batch_id = 0u64;
        while let Some(next) = self.next(&rx) {
            let first = match next {
                Next::Batch(job) => job,
                Next::Probe => {
                    self.probe_model();
                    continue;
                }
            };
            let jobs = self.fill(first, &rx);
            let start = Instant::now();
            let jobs = self.live(jobs, start);
            if jobs.is_empty() {
                continue;
            }
            let result = self.score(&jobs);
            let elapsed = start.elapsed();
            self.metrics.batch_size.observe(jobs.len() as f64);
            self.admission.observe_batch(elapsed.as_secs_f64());
            batch_id += 1;
            self.reply(jobs, result, start, elapsed, batch_id);
            self.metrics.set_breaker(self.breaker.state());
        }
    }

    /// The next job, or a probe of the model when the breaker's cool-down ends first (only once
    /// there is a warm-up pair to probe with); `None` once the engine has shut down.
    fn next(&self, rx: &Receiver<Job>) -> Option<Next> {
        let probe_in = match self.breaker.probe_in() {
            Some(d) if self.probe_pair().is_some() => d.max(PROBE_WAIT_MIN),
            _ => return rx.recv().ok().map(Next::Batch),
        };
        match rx.recv_timeout(probe_in) {
            Ok(job) => Some(Next::Batch(job)),
            Err(RecvTimeoutError::Timeout) => Some(Next::Probe),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    fn probe_pair(&self) -> Option<Prepared> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One batch of the warm-up pair, as the breaker's probe: closes it or opens it again.
    fn probe_model(&self) {
        let Some(pair) = self.probe_pair() else {
            return;
        };
        // Another probe (a request's) may be under way.
        if self.breaker.admit().is_err() {
            return;
        }
        match self.score_prepared(&[&pair]) {
            Ok(_) => self.breaker.on_success(),
            Err(message) => {
                self.breaker.on_failure(&message);
                self.metrics.batches_failed.inc();
            }
        }
        self.metrics.set_breaker(self.breaker.state());
    }

    /// The batch: `first` and whatever else is queued, waiting at most `max_wait` to fill.
    fn fill(&self, first: Job, rx: &Receiver<Job>) -> Vec<Job> {
        let mut jobs = vec![first];
        let fill_until = Instant::now() + self.max_wait;
        while jobs.len() < self.max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= fill_until {
                        break;
                    }
                    match rx.recv_timeout(fill_until - now) {
                        Ok(j) => jobs.push(j),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        jobs
    }

    /// Frees the jobs' queue places and keeps only work somebody still waits for in time.
    fn live(&self, jobs: Vec<Job>, now: Instant) -> Vec<Job> {
        let mut keep = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            job.slot = None;
            if job.reply.is_closed() {
                self.metrics.record_rejection(crate::metrics::CANCELLED);
            } else if job.deadline <= now {
                let _ = job.reply.send(Err(EngineError::DeadlineExceeded));
            } else {
                keep.push(job);
            }
        }
        keep
    }

    fn score(&self, jobs: &[Job]) -> Result<Vec<Scores>, String> {
        let batch: Vec<&Prepared> = jobs.iter().map(|j| &j.prepared).collect();
        let (scores, report) = self.score_prepared(&batch)?;
        self.metrics.record_images(&report);
        Ok(scores)
    }

    /// One forward pass, a panic inside it (or the test-only fault switch) an error.
    fn score_prepared(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), String> {
        let injected = self
            .faults
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if injected {
                panic!("injected fault (test-only fault switch)");
            }
            self.backend.score(batch)
        }));
        match result {
            Ok(Ok((scores, report))) if scores.len() == batch.len() => Ok((scores, report)),
            Ok(Ok((scores, _))) => Err(format!(
                "the model returned {} results for {} pairs",
                scores.len(),
                batch.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(panic_message(&*panic)),
        }
    }

    fn reply(
        &self,
        jobs: Vec<Job>,
        result: Result<Vec<Scores>, String>,
        start: Instant,
        elapsed: Duration,
        batch_id: u64,
    ) {
        let batch_size = jobs.len();
        match result {
            Ok(scores) => {
                self.breaker.on_success();
                for (job, scores) in jobs.into_iter().zip(scores) {
                    let queue_time = start - job.admitted;
                    self.metrics
                        .queue_duration
                        .observe(queue_time.as_secs_f64());
                    self.metrics
                        .inference_duration
                        .observe(elapsed.as_secs_f64());
                    let _ = job.reply.send(Ok(Scored {
                        scores,
                        queue_time,
                        inference_time: elapsed,
                        admitted: job.admitted,
                        preprocessed: job.preprocessed,
                        started: start,
                        batch_id,
                        batch_size,
                    }));
                }
            }
            Err(message) => {
                self.breaker.on_failure(&message);
                self.metrics.batches_failed.inc();
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(EngineError::ModelFailure(message.clone())));
                }
            }
        }
    }
}
