//! The engine's behaviour with a stand-in backend: no socket, no model files. The stand-in
//! can hold a batch at a gate, fail, or panic, so every path is driven deterministically.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ofa_engine::{
    Backend, BreakerState, Drain, Engine, EngineConfig, EngineError, EngineMetrics, Pair,
};

use ofa_api::{BackendError, BatchReport, Prepared, Scores};

#[derive(Default)]
struct StandIn {
    /// While true, `score` waits (the inference thread is "busy").
    gate: Mutex<bool>,
    opened: Condvar,
    batches: Mutex<Vec<Vec<String>>>,
    fail: AtomicUsize,
    preparing: AtomicUsize,
    most_preparing: AtomicUsize,
    prepare_ms: AtomicUsize,
    /// Calls of `score` so far, counted before the gate.
    entered: AtomicUsize,
    prepared: AtomicUsize,
}

impl StandIn {
    fn close(&self) {
        *self.gate.lock().unwrap() = true;
    }
    fn open(&self) {
        *self.gate.lock().unwrap() = false;
        self.opened.notify_all();
    }
    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

fn answers() -> Vec<String> {
    vec!["yes".into(), "no".into(), "maybe".into()]
}

impl Backend for StandIn {
    /// `mem:N` images (`mem:N:anything`) say they need N MB.
    fn preprocess_cost(&self, image: &[u8], _max_pixels: u64) -> Result<u64, BackendError> {
        Ok(std::str::from_utf8(image)
            .ok()
            .and_then(|s| s.strip_prefix("mem:"))
            .and_then(|n| n.split(':').next()?.parse::<u64>().ok())
            .map_or(0, |mb| mb << 20))
    }

    fn prepare_image(&self, image: &[u8], _max_pixels: u64) -> Result<Arc<[u8]>, BackendError> {
        let now = self.preparing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_preparing.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            self.prepare_ms.load(Ordering::SeqCst) as u64,
        ));
        self.preparing.fetch_sub(1, Ordering::SeqCst);
        self.prepared.fetch_add(1, Ordering::SeqCst);
        match image {
            b"bad" => Err(BackendError::Image("corrupt".into())),
            b"panic" => panic!("decoder bug"),
            _ => Ok(image.into()),
        }
    }

    fn encode_text(&self, text: &str, _premise: Option<&str>) -> Result<Vec<u32>, BackendError> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn score(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport), BackendError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.gate.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        drop(closed);
        let texts: Vec<String> = batch
            .iter()
            .map(|p| p.source.iter().map(|&c| c as u8 as char).collect())
            .collect();
        self.batches.lock().unwrap().push(texts.clone());
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::Text("stand-in failure".into()));
        }
        // The score of "yes" is the text's length, so answers are traceable to their pair.
        let scores = texts
            .iter()
            .map(|t| Scores::from_logits(&answers(), &[t.len() as f32, 0.0, 0.0]))
            .collect();
        Ok((scores, BatchReport::default()))
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        max_batch_size: 4,
        max_batch_wait: Duration::ZERO,
        max_queue: 6,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(200),
        breaker_give_up: 2,
        max_image_pixels: 1000,
        max_text_chars: 20,
        preprocess_threads: 2,
        preprocess_memory: 100 << 20,
        fault_injection: false,
    }
}

struct Setup {
    backend: Arc<StandIn>,
    engine: Arc<Engine>,
    metrics: Arc<EngineMetrics>,
    drain: Arc<Drain>,
}

fn setup(cfg: EngineConfig) -> Setup {
    let backend = Arc::new(StandIn::default());
    let metrics = Arc::new(EngineMetrics::default());
    let drain = Arc::new(Drain::default());
    let engine = Arc::new(Engine::start(
        backend.clone(),
        cfg,
        metrics.clone(),
        drain.clone(),
    ));
    Setup {
        backend,
        engine,
        metrics,
        drain,
    }
}

/// A pair with an image of its own (the engine decodes a request's equal images once).
fn pair(text: &str) -> Pair {
    Pair {
        image: format!("image of {text}").into_bytes().into(),
        text: text.into(),
        premise: None,
        cache_scope: 0,
    }
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Pending = tokio::task::JoinHandle<Result<ofa_engine::Scored, EngineError>>;

/// Starts a request in the background.
fn start(s: &Setup, text: &str) -> Pending {
    let e = s.engine.clone();
    let p = pair(text);
    tokio::spawn(async move { e.run_one(p, soon(10_000)).await })
}

/// Starts a request and waits until its batch is running (held at the gate).
async fn running(s: &Setup, text: &str) -> Pending {
    let before = s.backend.entered.load(Ordering::SeqCst);
    let h = start(s, text);
    until("batch running", || {
        s.backend.entered.load(Ordering::SeqCst) > before
    })
    .await;
    h
}

/// Starts a request and waits until it waits for the inference thread.
async fn queued(s: &Setup, text: &str) -> Pending {
    let before = s.backend.prepared.load(Ordering::SeqCst);
    let h = start(s, text);
    until_prepared(s, before + 1).await;
    h
}

/// Waits until `n` pairs were preprocessed, and then for their hand-over to the queue (the
/// next statement of the pair's task after preprocessing).
async fn until_prepared(s: &Setup, n: usize) {
    until("preprocessed", || {
        s.backend.prepared.load(Ordering::SeqCst) >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_carry_their_own_pairs_scores_in_order() {
    let s = setup(config());
    let out = s
        .engine
        .run_all(vec![pair("a"), pair("abc"), pair("ab")], soon(5000))
        .await
        .unwrap();
    let yes: Vec<f32> = out.iter().map(|o| o.scores.log_probs[0]).collect();
    assert!(yes[1] > yes[2] && yes[2] > yes[0], "{yes:?}");
    assert_eq!(s.metrics.queue_depth.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_queues_while_a_batch_runs_goes_into_the_next_batch_together() {
    let s = setup(config());
    s.backend.close();
    let first = running(&s, "first").await;
    let e = s.engine.clone();
    let rest = tokio::spawn(async move {
        e.run_all(vec![pair("b"), pair("c"), pair("d")], soon(10_000))
            .await
    });
    until_prepared(&s, 4).await;
    assert_eq!(s.engine.queue_len(), 3);
    s.backend.open();
    first.await.unwrap().unwrap();
    rest.await.unwrap().unwrap();
    // Within a batch, pairs keep the order in which their preprocessing finished.
    let mut batches = s.backend.batches();
    batches[1].sort();
    assert_eq!(batches, [vec!["first"], vec!["b", "c", "d"]]);
    assert_eq!(s.metrics.batch_size.get_sample_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_refuses_at_once_and_a_batch_larger_than_the_queue_is_never_admitted() {
    let s = setup(config());
    s.backend.close();
    let running = running(&s, "running").await;
    let e = s.engine.clone();
    let five = tokio::spawn(async move {
        e.run_all(
            (0..5).map(|i| pair(&format!("q{i}"))).collect(),
            soon(10_000),
        )
        .await
    });
    until("five queued", || s.engine.queue_len() == 5).await;
    let refused = s
        .engine
        .run_all(vec![pair("x"), pair("y")], soon(10_000))
        .await
        .unwrap_err();
    assert!(refused.item.is_none());
    match refused.error {
        EngineError::QueueFull { retry_after, .. } => {
            assert!(retry_after >= Duration::from_secs(1))
        }
        other => panic!("{other:?}"),
    }
    let too_big = s
        .engine
        .run_all(
            (0..7).map(|i| pair(&format!("{i}"))).collect(),
            soon(10_000),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        too_big.error,
        EngineError::BatchTooLarge {
            items: 7,
            capacity: 6
        }
    ));
    s.backend.open();
    running.await.unwrap().unwrap();
    assert_eq!(five.await.unwrap().unwrap().len(), 5);
    assert_eq!(s.engine.queue_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_past_its_deadline_gets_deadline_exceeded_and_never_runs() {
    let s = setup(config());
    s.backend.close();
    let running = running(&s, "running").await;
    let late = s.engine.run_one(pair("late"), soon(100)).await;
    assert!(
        matches!(late, Err(EngineError::DeadlineExceeded)),
        "{late:?}"
    );
    s.backend.open();
    running.await.unwrap().unwrap();
    // Let the inference thread take and drop the late pair.
    s.engine.run_one(pair("after"), soon(5000)).await.unwrap();
    let ran: Vec<String> = s.backend.batches().concat();
    assert!(!ran.contains(&"late".to_string()), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_request_is_dropped_before_its_batch() {
    let s = setup(config());
    s.backend.close();
    let running = running(&s, "running").await;
    let gone = queued(&s, "gone").await;
    gone.abort();
    let _ = gone.await;
    s.backend.open();
    running.await.unwrap().unwrap();
    s.engine.run_one(pair("after"), soon(5000)).await.unwrap();
    let ran: Vec<String> = s.backend.batches().concat();
    assert!(!ran.contains(&"gone".to_string()), "{ran:?}");
    assert_eq!(s.metrics.rejections("cancelled"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_opens_after_failed_batches_then_one_probe_closes_it() {
    let s = setup(config());
    s.backend.fail.store(2, Ordering::SeqCst);
    for _ in 0..2 {
        let r = s.engine.run_one(pair("x"), soon(5000)).await;
        assert!(matches!(r, Err(EngineError::ModelFailure(_))), "{r:?}");
    }
    assert_eq!(s.engine.breaker_state(), BreakerState::Open);
    assert!(!s.engine.is_ready());
    let r = s.engine.run_one(pair("x"), soon(5000)).await;
    assert!(matches!(r, Err(EngineError::BreakerOpen { .. })), "{r:?}");
    assert_eq!(s.metrics.batches_failed.get(), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.engine.run_one(pair("probe"), soon(5000)).await.unwrap();
    assert_eq!(s.engine.breaker_state(), BreakerState::Closed);
    assert!(s.engine.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_breaker_probes_the_model_by_itself_and_gives_up_on_a_model_that_stays_broken() {
    let s = setup(config());
    s.engine.warmup(&pair("warm"), &[1]).unwrap();
    // Two failed batches open the breaker; the next two (its own probes) fail too.
    s.backend.fail.store(4, Ordering::SeqCst);
    for _ in 0..2 {
        let r = s.engine.run_one(pair("x"), soon(5000)).await;
        assert!(matches!(r, Err(EngineError::ModelFailure(_))), "{r:?}");
    }
    assert_eq!(s.engine.breaker_state(), BreakerState::Open);
    assert_eq!(s.engine.failing(), None, "open, not yet given up");
    // No request is sent: the inference thread probes once per 200 ms cool-down.
    until("two failed probes", || s.engine.failing().is_some()).await;
    let why = s.engine.failing().unwrap();
    assert!(why.contains("2 probes"), "{why}");
    assert!(!s.engine.is_ready());
    assert_eq!(s.metrics.batches_failed.get(), 4);
    // The model recovers: the next probe closes the breaker, still without a request.
    until("a probe succeeded", || s.engine.is_ready()).await;
    assert_eq!(s.engine.failing(), None);
    assert_eq!(s.engine.breaker_state(), BreakerState::Closed);
    let probes: Vec<_> = s.backend.batches().into_iter().skip(3).collect();
    assert_eq!(
        probes,
        vec![vec!["warm".to_string()]; 3],
        "the probes ran the warm-up pair"
    );
    s.engine.run_one(pair("after"), soon(5000)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_refuses_new_work_and_shutdown_finishes_what_was_admitted() {
    let s = setup(config());
    s.backend.close();
    let running = running(&s, "running").await;
    let queued = queued(&s, "queued").await;
    s.drain.begin();
    assert!(!s.engine.is_ready());
    let r = s.engine.run_one(pair("new"), soon(5000)).await;
    assert!(matches!(r, Err(EngineError::ShuttingDown)), "{r:?}");
    let e = s.engine.clone();
    let done = std::thread::spawn(move || e.shutdown(Duration::from_secs(5)));
    s.backend.open();
    assert!(
        done.join().unwrap(),
        "the queue finished within the timeout"
    );
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_pair_fails_alone_with_run_each_and_fails_the_request_with_run_all() {
    let s = setup(config());
    let mut bad = pair("bad image");
    bad.image = bytes::Bytes::from_static(b"bad");
    let each = s
        .engine
        .run_each(
            vec![pair("good"), bad.clone(), pair(""), pair("fine")],
            soon(5000),
        )
        .await
        .unwrap();
    assert!(each[0].is_ok() && each[3].is_ok());
    assert_eq!(each[1].as_ref().unwrap_err().kind(), "invalid_image");
    assert_eq!(each[2].as_ref().unwrap_err().kind(), "invalid_text");
    let all = s
        .engine
        .run_all(vec![pair("good"), bad], soon(5000))
        .await
        .unwrap_err();
    assert_eq!(all.item, Some(1));
    assert_eq!(all.error.kind(), "invalid_image");
    until("every place was given back", || s.engine.queue_len() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_while_preprocessing_fails_that_pair_and_the_engine_goes_on() {
    let s = setup(config());
    let mut p = pair("x");
    p.image = bytes::Bytes::from_static(b"panic");
    let r = s.engine.run_one(p, soon(5000)).await;
    match r {
        Err(EngineError::Internal(m)) => assert!(m.contains("decoder bug"), "{m}"),
        other => panic!("{other:?}"),
    }
    s.engine.run_one(pair("after"), soon(5000)).await.unwrap();
    assert_eq!(s.engine.queue_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn preprocessing_runs_concurrently_but_never_beyond_its_pool() {
    let mut cfg = config();
    cfg.max_queue = 16;
    let s = setup(cfg);
    s.backend.prepare_ms.store(50, Ordering::SeqCst);
    let t = Instant::now();
    s.engine
        .run_all(
            (0..6).map(|i| pair(&format!("{i}"))).collect(),
            soon(10_000),
        )
        .await
        .unwrap();
    assert_eq!(s.backend.most_preparing.load(Ordering::SeqCst), 2);
    // 6 pairs × 50 ms on 2 lanes: about 150 ms, not 300.
    assert!(
        t.elapsed() < Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_that_passes_while_preprocessing_is_a_deadline_error() {
    let s = setup(config());
    s.backend.prepare_ms.store(200, Ordering::SeqCst);
    let r = s.engine.run_one(pair("slow"), soon(50)).await;
    assert!(matches!(r, Err(EngineError::DeadlineExceeded)), "{r:?}");
    until("the pair's place was given back", || {
        s.engine.queue_len() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn preprocessing_memory_is_a_budget_taken_before_decoding() {
    let mut cfg = config();
    cfg.max_queue = 16;
    let s = setup(cfg);
    s.backend.prepare_ms.store(50, Ordering::SeqCst);
    let sized = |mb: u64, name: &str| Pair {
        image: format!("mem:{mb}:{name}").into_bytes().into(),
        ..pair("x")
    };
    // Two lanes, but 60 MB + 60 MB exceeds the 100 MB budget: one at a time.
    s.engine
        .run_all(vec![sized(60, "a"), sized(60, "b")], soon(10_000))
        .await
        .unwrap();
    assert_eq!(s.backend.most_preparing.load(Ordering::SeqCst), 1);
    // 40 + 40 fit together.
    s.backend.most_preparing.store(0, Ordering::SeqCst);
    s.engine
        .run_all(vec![sized(40, "a"), sized(40, "b")], soon(10_000))
        .await
        .unwrap();
    assert_eq!(s.backend.most_preparing.load(Ordering::SeqCst), 2);
    // More than the whole budget can never run: refused before decoding, naming the budget.
    let before = s.backend.prepared.load(Ordering::SeqCst);
    let r = s
        .engine
        .run_one(sized(101, "a"), soon(10_000))
        .await
        .unwrap_err();
    assert_eq!(r.kind(), "image_too_large");
    assert!(r.to_string().contains("budget of 100 MB"), "{r}");
    assert_eq!(s.backend.prepared.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requests_repeated_image_is_decoded_once_and_a_bad_one_fails_each_of_its_pairs() {
    let s = setup(config());
    let same = |text: &str| Pair {
        image: bytes::Bytes::from(b"one photo".to_vec()),
        ..pair(text)
    };
    let out = s
        .engine
        .run_all(vec![same("a"), same("bb"), same("ccc")], soon(5000))
        .await
        .unwrap();
    assert_eq!(s.backend.prepared.load(Ordering::SeqCst), 1, "decoded once");
    let yes: Vec<f32> = out.iter().map(|o| o.scores.log_probs[0]).collect();
    assert!(yes[2] > yes[1] && yes[1] > yes[0], "{yes:?}");
    let bad = |text: &str| Pair {
        image: bytes::Bytes::from_static(b"bad"),
        ..pair(text)
    };
    let each = s
        .engine
        .run_each(vec![bad("x"), pair("fine"), bad("y")], soon(5000))
        .await
        .unwrap();
    assert_eq!(each[0].as_ref().unwrap_err().kind(), "invalid_image");
    assert!(each[1].is_ok());
    assert_eq!(each[2].as_ref().unwrap_err().kind(), "invalid_image");
    until("every place was given back", || s.engine.queue_len() == 0).await;
}
