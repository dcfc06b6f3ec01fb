//! The worker's logic in process, against an in-memory broker that keeps RabbitMQ's rules and a
//! stand-in model: jobs answered and acked, transient failures retried then dead-lettered at
//! the delivery limit, input errors answered, messages that are not jobs dead-lettered, a
//! refused broker retried, a lost connection's jobs run again, and a stop that settles what
//! is held. No broker process, no model files; `tests/queue.rs` in the binary's crate runs the
//! same worker against a real RabbitMQ.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::memory_broker::MemoryBroker;
use ofa_api::{BackendError, BatchReport, Prepared, Scores};
use ofa_engine::{Backend, Drain, Engine, EngineConfig, EngineMetrics};
use ofa_jobs::{Fetcher, ImageSettings, Runner};
use ofa_queue::{Outcome, Worker, WorkerConfig, WorkerMetrics};
use serde_json::Value;

/// Scores from the text's length; the first `fail` batches fail as a broken model would.
#[derive(Default)]
struct StandIn {
    fail: AtomicUsize,
    batches: AtomicUsize,
    /// How long a batch takes.
    pace: Duration,
    /// While set, a batch waits before it runs: the test decides when the engine has room.
    gate: AtomicBool,
}

impl Backend for StandIn {
    fn prepare_image(&self, image: &[u8], _: u64) -> Result<Arc<[u8]>, BackendError> {
        if image == b"corrupt" {
            return Err(BackendError::Image("corrupt".into()));
        }
        Ok(image.into())
    }

    fn encode_text(&self, text: &str, _: Option<&str>) -> Result<Vec<u32>, BackendError> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn score(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), BackendError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        while self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(self.pace);
        let failing = self.fail.load(Ordering::SeqCst);
        if failing > 0 {
            self.fail.store(failing - 1, Ordering::SeqCst);
            return Err(BackendError::Model("the stand-in failed".into()));
        }
        let answers: Vec<String> = ["yes", "no", "maybe"].map(String::from).to_vec();
        let scores = batch
            .iter()
            .map(|p| Scores::from_logits(&answers, &[p.source.len() as f32 / 10.0, 0.0, 0.0]))
            .collect();
        Ok((scores, BatchReport::default()))
    }
}

fn job(id: &str, image: &[u8], text: &str) -> Vec<u8> {
    let image = base64::engine::general_purpose::STANDARD.encode(image);
    serde_json::to_vec(&serde_json::json!({"id": id, "image": image, "text": text})).unwrap()
}

struct Setup {
    model: Arc<StandIn>,
    metrics: Arc<WorkerMetrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    worker: tokio::task::JoinHandle<Result<(), ofa_queue::BrokerError>>,
}

fn config(delivery_limit: u32) -> WorkerConfig {
    WorkerConfig {
        prefetch: 8,
        chunk: 4,
        gather: Duration::from_millis(5),
        delivery_limit,
        retry_delay: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(50),
        shutdown_timeout: Duration::from_secs(5),
        max_job_bytes: 4096,
        depth_interval: Duration::from_secs(60),
        model_id: "stand-in".into(),
        model_revision: "v0".into(),
    }
}

fn start(broker: &MemoryBroker, model: StandIn, config: WorkerConfig) -> Setup {
    start_queueing(broker, model, config, EngineConfig::default().max_queue)
}

/// [`start`], with at most `max_queue` pairs waiting in the engine.
fn start_queueing(
    broker: &MemoryBroker,
    model: StandIn,
    config: WorkerConfig,
    max_queue: usize,
) -> Setup {
    let model = Arc::new(model);
    let drain = Arc::new(Drain::default());
    let engine = Arc::new(Engine::start(
        model.clone(),
        EngineConfig {
            max_batch_size: 4,
            max_queue,
            breaker_failures: u32::MAX,
            ..EngineConfig::default()
        },
        Arc::new(EngineMetrics::default()),
        drain.clone(),
    ));
    let fetcher = Fetcher::new(ImageSettings {
        root: None,
        url_allow: Default::default(),
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(5),
        max_redirects: 3,
    })
    .unwrap();
    let runner = Arc::new(Runner::new(engine, fetcher, Duration::from_secs(30)));
    let metrics = Arc::new(WorkerMetrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::new(broker.clone(), runner, metrics.clone(), config);
    // As the binary does: a stop begins the engine's drain, which refuses new work.
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
        drain.begin();
    }));
    Setup {
        model,
        metrics,
        stop,
        worker,
    }
}

impl Setup {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.worker)
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap();
    }
}

fn result(broker: &MemoryBroker, id: &str) -> Value {
    let s = broker.state();
    let (_, body) = s.results.iter().find(|(i, _)| i == id).expect(id);
    serde_json::from_slice(body).unwrap()
}

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_answered_acked_and_bad_ones_answered_or_dead_lettered() {
    let jobs = vec![
        job("a", b"img", "a dog."),
        job("b", b"corrupt", "a dog."),
        b"not json".to_vec(),
        job("c", b"img", "a much longer sentence."),
    ];
    let broker = MemoryBroker::new(3, jobs);
    let w = start(&broker, StandIn::default(), config(3));
    broker
        .until(WITHIN, |s| s.results.len() == 3 && s.dead.len() == 1)
        .await;
    w.stop().await;
    let (a, b, c) = (
        result(&broker, "a"),
        result(&broker, "b"),
        result(&broker, "c"),
    );
    assert_eq!(a["status"], "ok", "{a}");
    assert_eq!(
        (a["model_id"].as_str(), a["model_revision"].as_str()),
        (Some("stand-in"), Some("v0"))
    );
    assert!(
        c["scores"]["yes"].as_f64() > a["scores"]["yes"].as_f64(),
        "{a} {c}"
    );
    assert_eq!(
        (b["status"].as_str(), b["error_type"].as_str()),
        (Some("error"), Some("invalid_image"))
    );
    let s = broker.state();
    assert_eq!(
        s.acked, 3,
        "results are acked; the dead-lettered message is settled by it"
    );
    assert!(
        s.dead[0].1.starts_with("not a job: not JSON"),
        "{:?}",
        s.dead[0].1
    );
    assert_eq!(s.dead[0].0, b"not json", "the message as it came");
    assert!(s.held.is_empty() && s.ready.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_until_it_succeeds() {
    let broker = MemoryBroker::new(3, vec![job("a", b"img", "x")]);
    let model = StandIn::default();
    model.fail.store(1, Ordering::SeqCst);
    let w = start(&broker, model, config(3));
    broker.until(WITHIN, |s| s.results.len() == 1).await;
    assert_eq!(result(&broker, "a")["status"], "ok");
    assert_eq!(w.metrics.jobs(Outcome::Retried), 1);
    assert_eq!(w.metrics.jobs(Outcome::Ok), 1);
    assert_eq!(w.model.batches.load(Ordering::SeqCst), 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_on_every_delivery_is_dead_lettered_at_the_limit() {
    let broker = MemoryBroker::new(2, vec![job("a", b"img", "x")]);
    let model = StandIn::default();
    model.fail.store(usize::MAX, Ordering::SeqCst);
    let w = start(&broker, model, config(2));
    broker.until(WITHIN, |s| s.dead.len() == 1).await;
    {
        let s = broker.state();
        assert!(s.results.is_empty(), "no result for a job that never ran");
        assert!(s.dead[0]
            .1
            .starts_with("failed on delivery 2 of 2 (model_failure)"));
    }
    assert_eq!(w.metrics.jobs(Outcome::Retried), 1);
    assert_eq!(w.metrics.jobs(Outcome::DeadLettered), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_broker_is_retried_and_a_lost_connection_loses_no_job() {
    let jobs: Vec<Vec<u8>> = (0..12)
        .map(|i| job(&format!("j{i}"), b"img", "x"))
        .collect();
    let broker = MemoryBroker::new(5, jobs);
    {
        let mut s = broker.state();
        s.refuse_opens = 2;
        s.lose_after = Some(5);
    }
    let w = start(&broker, StandIn::default(), config(5));
    broker
        .until(WITHIN, |s| s.results.len() >= 12 && s.held.is_empty())
        .await;
    {
        let s = broker.state();
        assert!(
            s.opens >= 4,
            "two refusals, a first session, one after the loss: {}",
            s.opens
        );
        let mut ids: Vec<&str> = s.results.iter().map(|(i, _)| i.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 12, "every job answered");
        assert!(s.dead.is_empty());
    }
    assert!(w.metrics.reconnects.get() >= 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_settles_every_job_held_and_leaves_the_rest_queued() {
    let jobs: Vec<Vec<u8>> = (0..40)
        .map(|i| job(&format!("j{i}"), b"img", "x"))
        .collect();
    let broker = MemoryBroker::new(5, jobs);
    let model = StandIn {
        pace: Duration::from_millis(50),
        ..StandIn::default()
    };
    let w = start(&broker, model, config(5));
    broker.until(WITHIN, |s| !s.results.is_empty()).await;
    assert!(
        !broker.state().held.is_empty(),
        "the worker holds jobs when it is stopped"
    );
    w.stop().await;
    let s = broker.state();
    assert!(s.held.is_empty(), "nothing left unsettled after the drain");
    assert_eq!(
        s.results.len() + s.ready.len(),
        40,
        "each job answered or still queued"
    );
    assert!(!s.ready.is_empty(), "a stop takes no more jobs");
    assert_eq!(s.acked, s.results.len());
    assert!(s.dead.is_empty());
}

/// A stop while a chunk waits for room in the engine, with a delivery limit of 1: the worker
/// puts the waiting jobs back without spending their one delivery. A second worker answers
/// every job; none is dead-lettered.
///
/// Three chunks are held (a prefetch of 12, chunks of 4) and the engine's queue takes one while
/// the first batch is held at the gate, so at least one chunk is refused room and cannot have
/// run when the stop comes, whatever the threads' timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_spends_no_delivery_of_the_jobs_it_did_not_run() {
    let n = 40;
    let jobs: Vec<Vec<u8>> = (0..n).map(|i| job(&format!("j{i}"), b"img", "x")).collect();
    let broker = MemoryBroker::new(1, jobs);
    let gated = StandIn {
        gate: AtomicBool::new(true),
        ..StandIn::default()
    };
    let w = start_queueing(
        &broker,
        gated,
        WorkerConfig {
            prefetch: 12,
            ..config(1)
        },
        4,
    );
    let model = w.model.clone();
    broker.until(WITHIN, |s| s.held.len() == 12).await;
    while model.batches.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = w.stop.send(());
    broker.until(WITHIN, |s| s.released > 0).await;
    // The drain runs what the engine accepted.
    model.gate.store(false, Ordering::SeqCst);
    tokio::time::timeout(WITHIN, w.worker)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    {
        let s = broker.state();
        assert!(s.released >= 4, "a refused chunk went back: {}", s.released);
        assert!(s.results.len() >= 4, "the chunk running was answered");
        assert_eq!(
            s.results.len() + s.released,
            12,
            "each job held answered or released"
        );
        assert!(s.held.is_empty() && s.dead.is_empty());
        assert!(
            s.ready.iter().all(|(_, spent)| *spent == 0),
            "no delivery spent"
        );
    }
    let w = start(&broker, StandIn::default(), config(1));
    broker.until(WITHIN, |s| s.results.len() == n).await;
    w.stop().await;
    let s = broker.state();
    assert_eq!(s.results.len(), n);
    assert!(s.dead.is_empty());
}
