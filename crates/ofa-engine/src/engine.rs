//! Admission and the inference thread. Preprocessing (image decoding, tokenising) runs on the
//! caller's threads; the model runs only on the one inference thread, which takes whatever is
//! queued when it frees up (up to `max_batch_size`), runs one batched forward, and fans the
//! results out. Every admitted request gets exactly one reply.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ofa_model::output::Scores;
use ofa_model::pipeline::Prepared;
use ofa_model::{Entailment, PairInput, Prediction};
use tokio::sync::oneshot;

use crate::{Breaker, EngineConfig, EngineError, Metrics};

/// A prediction and where its time went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub prediction: Prediction,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch_size: usize,
}

struct Job {
    prepared: Prepared,
    deadline: Instant,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Outcome, EngineError>>,
}

pub struct Engine {
    pipeline: Arc<Entailment>,
    config: EngineConfig,
    sender: Mutex<Option<SyncSender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
    faults: Arc<AtomicU32>,
    /// Moving average of one forward pass, seconds (f64 bits); 0 = no estimate yet.
    batch_secs: Arc<AtomicU64>,
    ready: AtomicBool,
    draining: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn start(pipeline: Arc<Entailment>, config: EngineConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(config.max_queue.max(1));
        let breaker = Arc::new(Breaker::new(
            config.breaker_failures,
            config.breaker_cooldown,
        ));
        let faults = Arc::new(AtomicU32::new(0));
        let batch_secs = Arc::new(AtomicU64::new(0));
        let worker = {
            let (pipeline, breaker, metrics, faults, batch_secs) = (
                pipeline.clone(),
                breaker.clone(),
                metrics.clone(),
                faults.clone(),
                batch_secs.clone(),
            );
            let config = config.clone();
            std::thread::Builder::new()
                .name("ofa-inference".into())
                .spawn(move || {
                    let shared = Shared {
                        breaker: &breaker,
                        metrics: &metrics,
                        faults: &faults,
                        batch_secs: &batch_secs,
                    };
                    worker_loop(rx, &pipeline, &config, shared)
                })
                .expect("spawn the inference thread")
        };
        metrics.set_breaker(breaker.state());
        Self {
            pipeline,
            config,
            sender: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            breaker,
            metrics,
            faults,
            batch_secs,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    pub fn pipeline(&self) -> &Entailment {
        &self.pipeline
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Validates the texts and preprocesses the pair (CPU work: call it off the async runtime).
    pub fn prepare(
        &self,
        image: &[u8],
        text: &str,
        premise: Option<&str>,
    ) -> Result<Prepared, EngineError> {
        self.check_text("text", text)?;
        if let Some(p) = premise {
            self.check_text("premise", p)?;
        }
        let input = PairInput {
            image,
            hypothesis: text,
            premise,
        };
        Ok(self
            .pipeline
            .prepare(&input, self.config.max_image_pixels)?)
    }

    fn check_text(&self, field: &str, text: &str) -> Result<(), EngineError> {
        if text.trim().is_empty() {
            return Err(EngineError::InvalidText(format!("{field} is empty")));
        }
        let n = text.chars().count();
        if n > self.config.max_text_chars {
            return Err(EngineError::InvalidText(format!(
                "{field} has {n} characters, more than the limit of {}",
                self.config.max_text_chars
            )));
        }
        Ok(())
    }

    /// Admits a prepared pair and waits for its prediction, at most until `deadline`.
    pub async fn infer(
        &self,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<Outcome, EngineError> {
        let rx = self.submit(prepared, deadline)?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EngineError::ModelFailure(
                "the inference thread stopped".into(),
            )),
            Err(_) => Err(EngineError::DeadlineExceeded),
        }
    }

    /// Queues a pair; the receiver yields its one reply. Dropping the receiver cancels the
    /// request if it has not started.
    pub fn submit(
        &self,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<Outcome, EngineError>>, EngineError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(EngineError::ShuttingDown);
        }
        // Refuse now what could only time out in the queue: a 429 the client can act on beats
        // a 504 after waiting.
        // With nothing queued it is always admitted: the estimate may be stale, and running a
        // batch is what refreshes it.
        if let Some(wait) = self.expected_wait().filter(|_| self.queue_len() > 0) {
            if Instant::now() + wait > deadline {
                return Err(EngineError::QueueFull {
                    capacity: self.config.max_queue,
                    retry_after: wait,
                });
            }
        }
        self.breaker
            .admit()
            .map_err(|retry_after| EngineError::BreakerOpen { retry_after })?;
        let guard = lock(&self.sender);
        let sender = guard.as_ref().ok_or(EngineError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            prepared,
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match sender.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => EngineError::QueueFull {
                        capacity: self.config.max_queue,
                        retry_after: self.retry_hint(),
                    },
                    TrySendError::Disconnected(_) => EngineError::ShuttingDown,
                })
            }
        }
    }

    /// Expected wait before a new request would finish: the batches ahead of it plus its own,
    /// from the median forward-pass time seen so far (`None` before any was seen).
    fn expected_wait(&self) -> Option<Duration> {
        let per_batch = load_secs(&self.batch_secs)?;
        let ahead = self.queue_len().div_ceil(self.config.max_batch_size.max(1)) as f64;
        // The batch running now is on average half done.
        Some(Duration::from_secs_f64(per_batch * (ahead + 1.5)))
    }

    /// Roughly how long the queue takes to drain, from the observed forward-pass time.
    fn retry_hint(&self) -> Duration {
        let per_batch = self.metrics.inference_duration.quantile(0.5).max(0.001);
        let batches = self
            .config
            .max_queue
            .div_ceil(self.config.max_batch_size.max(1)) as f64;
        Duration::from_secs_f64((per_batch * batches).clamp(1.0, 60.0))
    }

    pub fn queue_len(&self) -> usize {
        self.metrics.queue_depth.load(Ordering::Relaxed).max(0) as usize
    }

    /// Runs one full batch on the calling thread, then reports ready.
    pub fn warmup(&self, image: &[u8]) -> Result<(), EngineError> {
        let one = self.prepare(image, "a photo.", None)?;
        let batch = vec![one; self.config.max_batch_size.max(1)];
        let t = Instant::now();
        self.pipeline
            .score_batch(&batch)
            .map_err(|e| EngineError::ModelFailure(e.to_string()))?;
        // Per pair: an optimistic first estimate for admission until real batches are timed.
        store_secs(
            &self.batch_secs,
            t.elapsed().as_secs_f64() / batch.len() as f64,
        );
        self.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Refuse new work from now on (readiness goes false); queued work still runs.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Test-only fault switch: the next `n` batches panic inside the model call.
    pub fn inject_failures(&self, n: u32) -> bool {
        if self.config.fault_injection {
            self.faults.store(n, Ordering::Relaxed);
        }
        self.config.fault_injection
    }

    /// Closes the queue, lets the inference thread finish what was admitted, and waits for it
    /// at most `timeout`. Returns whether it finished.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.start_drain();
        drop(lock(&self.sender).take());
        let Some(handle) = lock(&self.worker).take() else {
            return true;
        };
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = handle.join();
            let _ = done_tx.send(());
        });
        done_rx.recv_timeout(timeout).is_ok()
    }
}

fn load_secs(a: &AtomicU64) -> Option<f64> {
    let v = f64::from_bits(a.load(Ordering::Relaxed));
    (v > 0.0).then_some(v)
}

fn store_secs(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

/// What the inference thread shares with the engine handle.
struct Shared<'a> {
    breaker: &'a Breaker,
    metrics: &'a Metrics,
    faults: &'a AtomicU32,
    batch_secs: &'a AtomicU64,
}

fn worker_loop(
    rx: mpsc::Receiver<Job>,
    pipeline: &Entailment,
    config: &EngineConfig,
    shared: Shared<'_>,
) {
    let Shared {
        breaker,
        metrics,
        faults,
        batch_secs,
    } = shared;
    let max_batch = config.max_batch_size.max(1);
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let fill_until = Instant::now() + config.max_batch_wait;
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
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
                Err(TryRecvError::Disconnected) => break,
            }
        }
        metrics
            .queue_depth
            .fetch_sub(jobs.len() as i64, Ordering::Relaxed);
        let start = Instant::now();
        // Never run work nobody waits for: cancelled (receiver dropped) or already late.
        jobs.retain(|j| {
            if j.reply.is_closed() {
                metrics.record_rejection("cancelled");
                false
            } else {
                true
            }
        });
        let (late, jobs): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.deadline <= start);
        for j in late {
            metrics.record_rejection("deadline_exceeded");
            let _ = j.reply.send(Err(EngineError::DeadlineExceeded));
        }
        if jobs.is_empty() {
            continue;
        }
        let batch: Vec<Prepared> = jobs.iter().map(|j| j.prepared.clone()).collect();
        let injected = faults
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if injected {
                panic!("injected fault (test-only fault switch)");
            }
            pipeline.score_batch(&batch)
        }));
        let elapsed = start.elapsed();
        metrics.batch_size.observe(jobs.len() as f64);
        let avg = load_secs(batch_secs).map_or(elapsed.as_secs_f64(), |a| {
            0.7 * a + 0.3 * elapsed.as_secs_f64()
        });
        store_secs(batch_secs, avg);
        let scores: Result<Vec<Scores>, String> = match result {
            Ok(Ok((scores, _))) => Ok(scores),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in the model".into())),
        };
        match scores {
            Ok(scores) => {
                breaker.on_success();
                let n = jobs.len();
                for (job, s) in jobs.into_iter().zip(scores) {
                    metrics
                        .queue_duration
                        .observe((start - job.enqueued).as_secs_f64());
                    metrics.inference_duration.observe(elapsed.as_secs_f64());
                    let _ = job.reply.send(Ok(Outcome {
                        prediction: Prediction::from_scores(&s),
                        queue_time: start - job.enqueued,
                        inference_time: elapsed,
                        batch_size: n,
                    }));
                }
            }
            Err(message) => {
                breaker.on_failure();
                metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(EngineError::ModelFailure(message.clone())));
                }
            }
        }
        metrics.set_breaker(breaker.state());
    }
}
