//! `ofa-entail rerank` and the README's vector-search example against the real server and
//! binary: the command line ranks as the service does, and the example works as printed. The
//! route itself is tested in process, in `ofa-server`'s `tests/router/rerank.rs`.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const TEXTS: [&str; 5] = [
    "two dogs play in the snow.",
    "a woman in a military uniform.",
    "a man.",
    "a person wearing a hat.",
    "a portrait of an officer.",
];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn post(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    let r = c.post(s.url("/rerank")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn indices(v: &Value) -> Vec<u64> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_line_and_the_readme_example_rank_like_the_service() {
    let s = Server::start(&[]);
    let c = reqwest::Client::new();
    let photo = fixtures().join("golden/images/grace_hopper.jpg");
    let (_, api) = post(
        &c,
        &s,
        json!({"image": b64(&image("grace_hopper.jpg")), "texts": TEXTS}),
    )
    .await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    cmd.arg("rerank")
        .arg("--model-dir")
        .arg(fixtures().join("tiny_ofa_ve"))
        .arg("--image")
        .arg(&photo);
    for t in TEXTS {
        cmd.args(["--text", t]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(indices(&cli), indices(&api));
    for (a, b) in cli["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(api["results"].as_array().unwrap())
    {
        assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-5);
    }

    // The README's worked example: vector-search hits reranked and cut at a threshold (here
    // between the second and third best, so the cut shows).
    let repo = fixtures().join("..");
    let search: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("fixtures/search/qdrant_results.json")).unwrap(),
    )
    .unwrap();
    let titles: Vec<&str> = search["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["payload"]["title"].as_str().unwrap())
        .collect();
    let (_, all) = post(
        &c,
        &s,
        json!({"image": b64(&image("grace_hopper.jpg")), "texts": titles}),
    )
    .await;
    let score = |k: usize| all["results"][k]["score"].as_f64().unwrap();
    assert!(
        score(1) > score(2),
        "the fixture needs distinct scores: {all}"
    );
    let threshold = (score(1) + score(2)) / 2.0;
    let out = Command::new("python3")
        .arg(repo.join("examples/rerank_search_results.py"))
        .args(["--server", &s.base, "--threshold", &threshold.to_string()])
        .arg("--image")
        .arg(&photo)
        .arg("--results")
        .arg(repo.join("fixtures/search/qdrant_results.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want_ids: Vec<Value> = (0..2)
        .map(|k| {
            search["result"][all["results"][k]["index"].as_u64().unwrap() as usize]["id"].clone()
        })
        .collect();
    let got_ids: Vec<Value> = printed.iter().map(|p| p["id"].clone()).collect();
    assert_eq!(got_ids, want_ids, "{printed:?}");
}
