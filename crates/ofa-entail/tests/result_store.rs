//! The result store as a nightly catalogue scan uses it: `batch` run twice over image URLs
//! served with ETags, one image and one text changed in between, and two `worker` replicas
//! sharing a Redis store. Unchanged jobs are answered from the store (conditional fetches
//! answered 304, no model time, bit-identical scores); changed ones are scored; a model with
//! another precision reuses nothing.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::catalogue::Catalogue;
use common::image;
use common::jobs::*;
use common::queue_cli::*;
use common::rabbit::Rabbit;
use common::redis_server::{free_port, Redis};
use serde_json::{json, Value};

const PICTURES: [&str; 4] = [
    "grace_hopper.jpg",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
];

/// `n` products, product `i` showing picture `i % 4` at its own URL with its own claim.
fn catalogue_jobs(
    catalogue: &Catalogue,
    dir: &Path,
    n: usize,
    claim_of: impl Fn(usize) -> String,
) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| json!({"id": format!("p{i}"), "text": claim_of(i), "image_url": catalogue.url(&format!("p{i}"))}).to_string())
        .collect();
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    jobs
}

fn claim(i: usize) -> String {
    format!("product {i} is shown in the picture.")
}

fn batch(jobs: &Path, out: &Path, store: &Path, allow: &str) -> Command {
    let mut c = batch_command(jobs, out);
    c.env("RESULT_STORE", store).env("IMAGE_URL_ALLOW", allow);
    c
}

fn run(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    stderr
}

fn probs(v: &Value) -> Vec<f64> {
    v["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {v}"))
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect()
}

#[test]
fn a_second_night_scores_only_what_changed() {
    let dir = scratch("store-batch");
    let catalogue = Catalogue::start(Duration::ZERO);
    let n = 16;
    for i in 0..n {
        catalogue.put(&format!("p{i}"), image(PICTURES[i % 4]));
    }
    let store = dir.join("results.redb");
    let jobs = catalogue_jobs(&catalogue, &dir, n, claim);
    let night1 = dir.join("night1.jsonl");
    let said = run(&mut batch(&jobs, &night1, &store, catalogue.authority()));
    assert!(said.contains("16 ok (0 from the result store"), "{said}");
    let first = results_by_id(&night1);
    assert!(first
        .values()
        .all(|v| v["status"] == "ok" && v.get("cached").is_none()));
    assert_eq!(catalogue.served.bodies.load(Ordering::SeqCst), n);

    // Between the nights: p3's picture is replaced, p5's claim is edited.
    catalogue.reset_counts();
    catalogue.put("p3", image("horse.png"));
    let jobs = catalogue_jobs(&catalogue, &dir, n, |i| {
        if i == 5 {
            "product 5 is a red bicycle.".into()
        } else {
            claim(i)
        }
    });
    let night2 = dir.join("night2.jsonl");
    let said = run(&mut batch(&jobs, &night2, &store, catalogue.authority()));
    assert!(
        said.contains("16 ok (14 from the result store, 14 images not modified)"),
        "{said}"
    );
    let second = results_by_id(&night2);
    for i in (0..n).filter(|i| ![3, 5].contains(i)) {
        let (a, b) = (&first[&format!("p{i}")], &second[&format!("p{i}")]);
        assert_eq!(b["cached"], true, "{b}");
        assert_eq!(a["details"], b["details"], "bit-identical from the store");
        assert_eq!(b["timings"]["inference_s"], 0.0);
    }
    // The changed ones were scored, as `predict` scores them.
    for (id, picture, text) in [
        ("p3", "horse.png", claim(3)),
        ("p5", PICTURES[1], "product 5 is a red bicycle.".to_string()),
    ] {
        let got = &second[id];
        assert!(got.get("cached").is_none(), "{got}");
        let want = predict(picture, &text);
        for (g, w) in probs(got).iter().zip(probs(&want)) {
            assert!((g - w).abs() < 1e-6, "{id}: {got} vs {want}");
        }
    }
    // 14 answered 304; p3 was asked conditionally and changed; p5's new claim had no stored
    // result to be conditional on.
    let served = &catalogue.served;
    assert_eq!(served.not_modified.load(Ordering::SeqCst), 14);
    assert_eq!(served.conditional.load(Ordering::SeqCst), 15);
    assert_eq!(served.bodies.load(Ordering::SeqCst), 2);

    // The same store under another precision: another scope, nothing reused.
    let night3 = dir.join("night3.jsonl");
    let said = run(batch(&jobs, &night3, &store, catalogue.authority()).env("PRECISION", "int8"));
    assert!(said.contains("16 ok (0 from the result store"), "{said}");

    // One process at a time on a file store: a second is told why it cannot open it.
    let slow = Catalogue::start(Duration::from_secs(30));
    slow.put("p0", image(PICTURES[0]));
    let slow_jobs = catalogue_jobs(&slow, &dir, 1, claim);
    let mut holder = batch(
        &slow_jobs,
        &dir.join("held.jsonl"),
        &store,
        slow.authority(),
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Fetching its one image, so past opening the store.
    let t = std::time::Instant::now();
    while slow.served.requests.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the holder never fetched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = batch(
        &jobs,
        &dir.join("night4.jsonl"),
        &store,
        catalogue.authority(),
    )
    .output()
    .unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn worker_replicas_share_a_redis_store() {
    let rabbit = Rabbit::start("store");
    let redis = Redis::start(free_port());
    let dir = scratch("store-workers");
    let catalogue = Catalogue::start(Duration::ZERO);
    let n = 24;
    for i in 0..n {
        catalogue.put(&format!("p{i}"), image(PICTURES[i % 4]));
    }
    let jobs = catalogue_jobs(&catalogue, &dir, n, claim);
    let env = [
        ("RESULT_STORE", redis.url()),
        ("IMAGE_URL_ALLOW", catalogue.authority().to_owned()),
        ("MAX_BATCH_SIZE", "4".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let workers = [
        Worker::start(&rabbit, &dir, &env),
        Worker::start(&rabbit, &dir, &env),
    ];
    let total = |name: &str| workers.iter().map(|w| w.metric(name)).sum::<f64>();
    let mut nights: Vec<HashMap<String, Value>> = Vec::new();
    for night in 1..=2 {
        let sub = submit(&rabbit, &jobs, &[]);
        assert!(sub.status.success(), "{}", text(&sub));
        let out = dir.join(format!("night{night}.jsonl"));
        let col = collect(&rabbit, &out, n, 60);
        assert!(col.status.success(), "{}", text(&col));
        nights.push(results_by_id(&out));
    }
    for (id, second) in &nights[1] {
        assert_eq!(second["cached"], true, "{second}");
        assert_eq!(second["details"], nights[0][id]["details"]);
    }
    assert_eq!(total("ofa_result_store_hits_total"), n as f64);
    assert_eq!(total("ofa_result_store_misses_total"), n as f64);
    assert_eq!(total("ofa_image_fetch_not_modified_total"), n as f64);
    assert_eq!(total("ofa_result_store_errors_total"), 0.0);
    assert!(
        workers.iter().all(|w| w.jobs("ok") > 0.0),
        "both replicas took jobs"
    );
}
