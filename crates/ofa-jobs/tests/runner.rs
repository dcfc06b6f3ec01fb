//! The runner against a real engine on the tiny model: what the engine refuses without
//! running (its breaker open) waits and runs again instead of failing the job, within the
//! chunk's deadline and until a stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ofa_engine::{Drain, Engine, EngineConfig, EngineMetrics, Pair};
use ofa_jobs::{Fetcher, ImageSettings, Job, Runner};
use ofa_model::Entailment;
use tokio::sync::watch;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// An engine whose breaker opens at the first failed batch and stays open `cooldown`.
fn engine(cooldown: Duration) -> Arc<Engine> {
    engine_with(cooldown, Arc::new(EngineMetrics::default()))
}

fn engine_with(cooldown: Duration, metrics: Arc<EngineMetrics>) -> Arc<Engine> {
    let model = Entailment::load(fixtures().join("tiny_ofa_ve"), &candle_core::Device::Cpu)
        .expect("the tiny model loads");
    Arc::new(Engine::start(
        Arc::new(model),
        EngineConfig {
            breaker_failures: 1,
            breaker_cooldown: cooldown,
            breaker_give_up: 3,
            fault_injection: true,
            ..EngineConfig::default()
        },
        metrics,
        Arc::new(Drain::default()),
    ))
}

fn runner(engine: &Arc<Engine>, timeout: Duration) -> Runner {
    let fetcher = Fetcher::new(ImageSettings {
        root: Some(fixtures().join("golden/images")),
        url_allow: Default::default(),
        max_bytes: 8 << 20,
        timeout: Duration::from_secs(2),
        max_redirects: 0,
    })
    .unwrap();
    Runner::new(engine.clone(), fetcher, timeout)
}

fn job(id: &str) -> Job {
    let body =
        format!(r#"{{"id": "{id}", "text": "a man in a suit", "image_path": "camera.png"}}"#);
    Job::parse(body.as_bytes()).unwrap()
}

fn pair(text: &str) -> Pair {
    Pair {
        image: std::fs::read(fixtures().join("golden/images/camera.png"))
            .unwrap()
            .into(),
        text: text.into(),
        premise: None,
        cache_scope: 0,
    }
}

/// Opens the breaker: one batch fails (the engine's own fault switch).
async fn break_once(engine: &Engine) {
    assert!(engine.inject_failures(1));
    let failed = engine
        .run_one(pair("a camera"), Instant::now() + Duration::from_secs(30))
        .await;
    assert!(failed.is_err(), "the injected failure fails the batch");
    assert!(!engine.is_ready(), "the breaker is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_refused_by_an_open_breaker_waits_for_it_and_is_scored() {
    let engine = engine(Duration::from_millis(800));
    break_once(&engine).await;
    let (_keep, stop) = watch::channel(false);
    let t = Instant::now();
    let results = runner(&engine, Duration::from_secs(60))
        .run(vec![job("a"), job("b")], stop)
        .await;
    // The same scores as the engine gives the pair directly, now that it serves again.
    let direct = engine
        .run_one(
            pair("a man in a suit"),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap()
        .scores;
    for r in &results {
        let scores = r
            .outcome
            .as_ref()
            .expect("scored once the breaker let it through");
        assert_eq!(scores, &direct, "{}", r.id);
    }
    assert_eq!(
        results.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // It waited out the cool-down rather than failing at once.
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        engine.is_ready(),
        "the job was the probe that closed the breaker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_outlasts_the_chunk_deadline_is_a_transient_failure_at_once() {
    let engine = engine(Duration::from_secs(60));
    break_once(&engine).await;
    let (_keep, stop) = watch::channel(false);
    let t = Instant::now();
    let results = runner(&engine, Duration::from_secs(5))
        .run(vec![job("a")], stop)
        .await;
    let failure = results[0].outcome.as_ref().unwrap_err();
    assert_eq!(failure.kind.as_str(), "breaker_open");
    assert!(failure.transient, "handed back for redelivery");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_wait_and_hands_the_job_back() {
    let engine = engine(Duration::from_secs(20));
    break_once(&engine).await;
    let (stopping, stop) = watch::channel(false);
    let run = tokio::spawn({
        let runner = runner(&engine, Duration::from_secs(60));
        async move { runner.run(vec![job("a")], stop).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "still waiting for the breaker");
    let t = Instant::now();
    stopping.send(true).unwrap();
    let results = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the stop ends the wait")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    let failure = results[0].outcome.as_ref().unwrap_err();
    assert!(failure.transient, "{failure:?}");
}

/// Counts what a file run reports.
#[derive(Default)]
struct Seen {
    answered: usize,
    skipped_lines: Vec<usize>,
}

impl ofa_jobs::files::Progress for Seen {
    fn answered(&mut self, _from_store: bool) {
        self.answered += 1;
    }

    fn line_skipped(&mut self, number: usize, _problem: &str) {
        self.skipped_lines.push(number);
    }
}

/// A job file through the file runner: answered ids are skipped (a result cut short by a kill
/// is dropped and its job runs again), lines that are not jobs are reported by number, a
/// transient failure goes round again, and every job gets one result line.
#[test]
fn a_file_run_resumes_retries_and_answers_each_job_once() {
    use ofa_jobs::files::{FileRun, FileSummary, Input};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let metrics = Arc::new(EngineMetrics::default());
    let engine = engine_with(Duration::from_millis(50), metrics.clone());
    let runner = runner(&engine, Duration::from_secs(30));
    let lines = [
        r#"{"id": "a", "text": "a man in a suit", "image_path": "camera.png"}"#,
        r#"{"id": "b", "text": "a man in a suit", "image_path": "nope.png"}"#,
        r#"not a job"#,
        r#"{"id": "a", "text": "again", "image_path": "camera.png"}"#,
        r#"{"id": "c", "text": "a man in a suit", "image_path": "camera.png"}"#,
        r#"{"id": "d", "text": "a man in a suit", "image_path": "camera.png"}"#,
    ];
    let input = Input::Memory(lines.join("\n").into_bytes());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.jsonl");
    // "c" was answered by an earlier run; "d"'s line was cut short by a kill.
    std::fs::write(
        &out,
        "{\"id\": \"c\", \"answer\": \"yes\"}\n{\"id\": \"d\", \"ans",
    )
    .unwrap();
    let run = FileRun {
        chunk: 8,
        delivery_limit: 3,
        max_job_bytes: 4096,
        retry_pause: Duration::from_millis(100),
        model_id: "tiny".into(),
        revision: "r1".into(),
    };
    assert_eq!(run.pending(&input, &out).unwrap(), 3, "a, b and d");
    // The first batch fails: what it held (a, d or both) is a transient failure and goes round
    // again.
    assert!(engine.inject_failures(1));
    let mut seen = Seen::default();
    let summary = run
        .run(&runner, runtime.handle(), &input, &out, &mut seen)
        .unwrap();
    assert_eq!(
        summary,
        FileSummary {
            ok: 2,
            from_store: 0,
            errors: 1,
            skipped: 1,
            not_jobs: 2
        }
    );
    assert_eq!(seen.answered, 3);
    assert_eq!(seen.skipped_lines, [3, 4], "not a job; a repeated id");
    let text = std::fs::read_to_string(&out).unwrap();
    let results: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut each = ids.clone();
    each.sort_unstable();
    assert_eq!(each, ["a", "b", "c", "d"], "one result per job: {text}");
    assert_eq!(ids[0], "c", "the earlier run's result stays first: {text}");
    let at = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    // One batch failed (it held a, d or both, as the inference thread took them), yet both were
    // answered with scores: what failed went round again.
    assert_eq!(metrics.batches_failed.get(), 1, "the injected failure");
    let result = |id: &str| &results[at(id)];
    assert_eq!(result("b")["error_type"], "image_not_found", "{text}");
    for id in ["a", "d"] {
        assert_eq!(result(id)["model_revision"], "r1", "{text}");
        assert!(result(id)["scores"]["yes"].is_number(), "{text}");
    }
    // A second run has nothing left to do.
    assert_eq!(run.pending(&input, &out).unwrap(), 0);
    let again = run
        .run(
            &runner,
            runtime.handle(),
            &input,
            &out,
            &mut Seen::default(),
        )
        .unwrap();
    assert_eq!((again.ok, again.errors, again.skipped), (0, 0, 4));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

/// The runner with a file store: a second run answers from it, bit-identical and with no
/// model time; a job whose text encodes differently, or whose image differs, is scored; a
/// text that differs only where the tokenizer does not look shares the stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answers_what_was_scored_and_only_that() {
    use ofa_jobs::store::{ModelIdentity, ResultStore, StoreLocation, StoreMetrics, StoreSettings};

    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(StoreMetrics::default());
    let settings = StoreSettings {
        location: StoreLocation::File(dir.path().join("store.redb")),
        ttl: Duration::from_secs(3600),
        model: ModelIdentity {
            model_id: "tiny".into(),
            revision: "test".into(),
            files: [0; 32],
            precision: "f32/cpu".into(),
            answers: vec!["yes".into(), "no".into(), "maybe".into()],
        },
    };
    let store = Arc::new(ResultStore::open(settings, metrics.clone()).await.unwrap());
    let engine = engine(Duration::from_secs(1));
    let runner = runner(&engine, Duration::from_secs(30)).with_store(store.clone());
    let (_keep, stop) = watch::channel(false);
    let parse = |id: &str, text: &str, image: &str| {
        let body = serde_json::json!({"id": id, "text": text, "image_path": image});
        Job::parse(body.to_string().as_bytes()).unwrap()
    };
    let first = runner
        .run(
            vec![parse("a", "a man in a suit", "camera.png")],
            stop.clone(),
        )
        .await;
    assert!(!first[0].cached && first[0].outcome.is_ok());
    assert_eq!((metrics.hits.get(), metrics.misses.get()), (0, 1));
    let again = runner
        .run(
            vec![
                parse("b", "a man in a suit", "camera.png"),
                // Lower-cased by the model's text preparation: the same input ids.
                parse("c", "A man in a suit", "camera.png"),
                parse("d", "a woman in a suit", "camera.png"),
                parse("e", "a man in a suit", "coffee.png"),
            ],
            stop,
        )
        .await;
    let cached: Vec<bool> = again.iter().map(|r| r.cached).collect();
    assert_eq!(cached, [true, true, false, false]);
    let bits = |r: &ofa_jobs::JobResult| -> Vec<u32> {
        let s = r.outcome.as_ref().unwrap();
        s.log_probs.iter().map(|p| p.to_bits()).collect()
    };
    assert_eq!(bits(&again[0]), bits(&first[0]));
    assert!(again[0].timings.inference.is_zero());
    assert_eq!(store.file_entries().await, Some(3));
    assert_eq!((metrics.hits.get(), metrics.misses.get()), (2, 3));
}
