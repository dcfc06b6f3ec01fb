//! The engine every front end drives: admit pairs (all of a request's at once), preprocess them
//! on a pool bounded to the cores, queue them for the inference thread, and hand back typed
//! scores or a typed error. Every admitted pair gets exactly one answer.

use std::sync::atomic::AtomicU32;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ofa_api::Prepared;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::admission::Admission;
use crate::inference_thread::{Job, Worker};
use crate::lane::{memory_units, Group, Lane, Member};
use crate::{
    Backend, Breaker, BreakerEvent, BreakerState, Drain, EngineConfig, EngineError, EngineMetrics,
    Pair, Scored,
};

/// Why a multi-pair request got no answers: refused as a whole (`item` is `None`), or one of its
/// pairs failed.
#[derive(Debug)]
pub struct Refused {
    pub item: Option<usize>,
    pub error: EngineError,
}

impl From<EngineError> for Refused {
    fn from(error: EngineError) -> Self {
        Refused { item: None, error }
    }
}

pub struct Engine {
    backend: Arc<dyn Backend>,
    config: EngineConfig,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    breaker: Arc<Breaker>,
    admission: Arc<Admission>,
    faults: Arc<AtomicU32>,
    drain: Arc<Drain>,
    preprocess: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    decoded: Arc<crate::lane::Decoded>,
    /// The warm-up pair, prepared: what the inference thread probes the model with.
    probe: Arc<Mutex<Option<Prepared>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each image's task, answering for its pairs by their index in the request.
type Tasks = JoinSet<Vec<(usize, Result<Scored, EngineError>)>>;

impl Engine {
    pub fn start(
        backend: Arc<dyn Backend>,
        config: EngineConfig,
        metrics: Arc<EngineMetrics>,
        drain: Arc<Drain>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let breaker = Arc::new(Breaker::new(
            config.breaker_failures,
            config.breaker_cooldown,
            config.breaker_give_up,
        ));
        let probe_pair = Arc::new(Mutex::new(None));
        let admission = Arc::new(Admission::new(
            config.max_queue,
            config.max_batch_size,
            metrics.clone(),
        ));
        let faults = Arc::new(AtomicU32::new(0));
        let worker = Worker {
            backend: backend.clone(),
            max_batch: config.max_batch_size.max(1),
            max_wait: config.max_batch_wait,
            breaker: breaker.clone(),
            metrics: metrics.clone(),
            admission: admission.clone(),
            faults: faults.clone(),
            probe: probe_pair.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("ofa-inference".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the inference thread");
        metrics.set_breaker(breaker.state());
        let probe = backend.clone();
        metrics.set_device_memory(crate::metrics::MemoryProbe(Box::new(move || {
            probe.device_memory()
        })));
        Self {
            backend,
            preprocess: Arc::new(Semaphore::new(config.preprocess_threads.max(1))),
            decoded: Arc::default(),
            memory: Arc::new(Semaphore::new(
                memory_units(config.preprocess_memory) as usize
            )),
            config,
            sender: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(handle)),
            breaker,
            admission,
            faults,
            drain,
            probe: probe_pair,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The circuit breaker's transitions from now on (opened by which failure, closed), for
    /// the front ends to log.
    pub fn breaker_events(&self) -> tokio::sync::broadcast::Receiver<BreakerEvent> {
        self.breaker.subscribe()
    }

    /// `(used, total)` bytes of the accelerator's memory; `None` on the CPU.
    pub fn device_memory(&self) -> Option<(u64, u64)> {
        self.backend.device_memory()
    }

    /// Pairs admitted and not yet taken by the inference thread.
    pub fn queue_len(&self) -> usize {
        self.admission.waiting()
    }

    /// About how long `pairs` more pairs would take to be answered behind what is queued now,
    /// once a batch has been timed (`None` before): for a caller that will send them in
    /// several rounds to refuse up front what could only miss its deadline.
    pub fn expected_time(&self, pairs: usize) -> Option<Duration> {
        self.admission.expected_time(pairs)
    }

    /// Why the model is taken for broken, when it is: the breaker's probes failed
    /// [`EngineConfig::breaker_give_up`] times in a row. Liveness should fail then: a model
    /// that fails every batch, probes included, for several cool-downs (a GPU whose context an
    /// error poisoned fails every later call) comes back only in a new process.
    pub fn failing(&self) -> Option<String> {
        self.breaker.given_up().then(|| {
            let n = self.breaker.failed_probes();
            let probes = if n == 1 { "probe" } else { "probes" };
            format!(
                "the model failed {n} {probes} in a row since the circuit breaker opened; a restart may recover it"
            )
        })
    }

    /// Ready to take work: breaker closed and not draining.
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining() && self.breaker.state() == BreakerState::Closed
    }

    /// Scores one pair, answering by `deadline`.
    pub async fn run_one(&self, pair: Pair, deadline: Instant) -> Result<Scored, EngineError> {
        self.run_all(vec![pair], deadline)
            .await
            .map(|mut v| v.remove(0))
            .map_err(|r| r.error)
    }

    /// Scores every pair or none: admitted together (refused whole), the first failure cancels
    /// the rest. Answers in request order.
    pub async fn run_all(
        &self,
        pairs: Vec<Pair>,
        deadline: Instant,
    ) -> Result<Vec<Scored>, Refused> {
        for (i, pair) in pairs.iter().enumerate() {
            self.check_texts(&pair.text, pair.premise.as_deref())
                .map_err(|error| Refused {
                    item: Some(i),
                    error,
                })?;
        }
        let n = pairs.len();
        let mut tasks = self.spawn(pairs, deadline)?;
        let mut out: Vec<Option<Scored>> = (0..n).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let answers = joined.map_err(|e| Refused {
                item: None,
                error: EngineError::Internal(e.to_string()),
            })?;
            for (i, result) in answers {
                // Returning drops the JoinSet, which aborts the other images' tasks: their
                // replies close, and the inference thread skips them.
                out[i] = Some(result.map_err(|error| Refused {
                    item: Some(i),
                    error,
                })?);
            }
        }
        Ok(out
            .into_iter()
            .map(|s| s.expect("every pair answered"))
            .collect())
    }

    /// Scores every pair on its own: a bad pair gets its error, the others their scores. The
    /// request is still admitted as a whole.
    pub async fn run_each(
        &self,
        pairs: Vec<Pair>,
        deadline: Instant,
    ) -> Result<Vec<Result<Scored, EngineError>>, EngineError> {
        let mut out: Vec<Option<Result<Scored, EngineError>>> =
            (0..pairs.len()).map(|_| None).collect();
        let mut good = Vec::new();
        let mut index = Vec::new();
        for (i, pair) in pairs.into_iter().enumerate() {
            match self.check_texts(&pair.text, pair.premise.as_deref()) {
                Ok(()) => {
                    good.push(pair);
                    index.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !good.is_empty() {
            let mut tasks = self.spawn(good, deadline)?;
            while let Some(joined) = tasks.join_next().await {
                let answers = joined.map_err(|e| EngineError::Internal(e.to_string()))?;
                for (k, result) in answers {
                    out[index[k]] = Some(result);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every pair answered"))
            .collect())
    }

    /// Admits all pairs, then runs each distinct image in its own task: decoded once, then its
    /// pairs queued and answered.
    fn spawn(&self, pairs: Vec<Pair>, deadline: Instant) -> Result<Tasks, EngineError> {
        if self.drain.is_draining() {
            return Err(EngineError::ShuttingDown);
        }
        self.breaker
            .admit()
            .map_err(|retry_after| EngineError::BreakerOpen { retry_after })?;
        let sender = lock(&self.sender)
            .clone()
            .ok_or(EngineError::ShuttingDown)?;
        let slots = self.admission.admit(pairs.len(), deadline)?;
        let lane = Lane {
            backend: self.backend.clone(),
            preprocess: self.preprocess.clone(),
            memory: self.memory.clone(),
            decoded: self.decoded.clone(),
            memory_budget: self.config.preprocess_memory,
            sender,
            max_image_pixels: self.config.max_image_pixels,
        };
        let admitted = Instant::now();
        let mut groups: Vec<Group> = Vec::new();
        for (index, (pair, slot)) in pairs.into_iter().zip(slots).enumerate() {
            let member = Member {
                index,
                text: pair.text,
                premise: pair.premise,
                slot,
            };
            let same = |g: &&mut Group| g.image == pair.image && g.cache_scope == pair.cache_scope;
            match groups.iter_mut().find(same) {
                Some(g) => g.members.push(member),
                None => groups.push(Group {
                    image: pair.image,
                    cache_scope: pair.cache_scope,
                    members: vec![member],
                }),
            }
        }
        let mut tasks = JoinSet::new();
        for group in groups {
            let lane = lane.clone();
            tasks.spawn(async move { lane.run(group, admitted, deadline).await });
        }
        Ok(tasks)
    }

    /// The model's input for a hypothesis and optional premise, as a pair would be encoded
    /// (checked the same way): what decides the text's part of a result, so two texts with
    /// the same ids score alike with the same image.
    pub fn encode_text(&self, text: &str, premise: Option<&str>) -> Result<Vec<u32>, EngineError> {
        self.check_texts(text, premise)?;
        Ok(self.backend.encode_text(text, premise)?)
    }

    fn check_texts(&self, text: &str, premise: Option<&str>) -> Result<(), EngineError> {
        self.check_text("text", text)?;
        if let Some(p) = premise {
            self.check_text("premise", p)?;
        }
        Ok(())
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

    /// Runs `pair` in batches of each of `sizes` on the calling thread (first-touch
    /// allocations, thread pools, a GPU's kernel choices per shape), and seeds the admission
    /// estimate with the largest batch's time per pair. No sizes: one full batch.
    pub fn warmup(&self, pair: &Pair, sizes: &[usize]) -> Result<(), EngineError> {
        let one = self.prepare(pair)?;
        let max = self.config.max_batch_size.max(1);
        let mut sizes: Vec<usize> = sizes.iter().map(|&n| n.clamp(1, max)).collect();
        if sizes.is_empty() {
            sizes.push(max);
        }
        sizes.sort_unstable();
        sizes.dedup();
        let mut per_pair = 0.0;
        for n in sizes {
            let batch = vec![&one; n];
            let t = Instant::now();
            self.backend
                .score(&batch)
                .map_err(|e| EngineError::ModelFailure(e.to_string()))?;
            per_pair = t.elapsed().as_secs_f64() / n as f64;
        }
        // Per pair: optimistic, until real batches are timed.
        self.admission.seed(per_pair);
        *lock(&self.probe) = Some(one);
        Ok(())
    }

    /// Keeps `pair`, prepared, as the breaker's own probe without scoring it: what
    /// [`Engine::warmup`] leaves behind, for a service that starts without one. Without a probe
    /// an open breaker waits for a request, and an unready replica gets none.
    pub fn set_probe(&self, pair: &Pair) -> Result<(), EngineError> {
        let one = self.prepare(pair)?;
        *lock(&self.probe) = Some(one);
        Ok(())
    }

    fn prepare(&self, pair: &Pair) -> Result<Prepared, EngineError> {
        self.check_texts(&pair.text, pair.premise.as_deref())?;
        Ok(Prepared {
            source: self
                .backend
                .encode_text(&pair.text, pair.premise.as_deref())?,
            pixels: self
                .backend
                .prepare_image(&pair.image, self.config.max_image_pixels)?,
            cache_scope: pair.cache_scope,
        })
    }

    /// Test-only fault switch: the next `n` batches panic inside the model call.
    pub fn inject_failures(&self, n: u32) -> bool {
        if self.config.fault_injection {
            self.faults.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        self.config.fault_injection
    }

    /// Refuses new work, lets the inference thread finish what was admitted, and waits for it
    /// at most `timeout`. Returns whether it finished.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.drain.begin();
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
