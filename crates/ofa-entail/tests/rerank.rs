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

fn python(args: &[&str]) -> Vec<Value> {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The official `cohere` client (`ClientV2` with our base URL) ranks image URLs served on
/// loopback, admitted by `IMAGE_URL_ALLOW`, exactly as `/predict` scores each image; a URL the
/// policy refuses fails alone, last. The search example ranks image URLs from a vector
/// search's payloads the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cohere_client_and_the_search_example_rank_image_urls_like_predict() {
    let host = common::image_host::ImageHost::start();
    let allow = format!("127.0.0.1:{}", host.port);
    let s = Server::start(&[("IMAGE_URL_ALLOW", allow.as_str())]);
    let c = reqwest::Client::new();
    let query = "a woman in a military uniform.";
    let names = ["chelsea.png", "grace_hopper.jpg", "camera.png"];
    let mut yes = Vec::new();
    for n in names {
        let v: Value = c
            .post(s.url("/predict"))
            .json(&json!({"image": b64(&image(n)), "text": query}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        yes.push(v["scores"]["yes"].as_f64().unwrap());
    }
    let mut documents: Vec<String> = names.iter().map(|n| host.url(n)).collect();
    // Another loopback port: not admitted, refused before any connection.
    documents.push("http://127.0.0.1:9/forbidden.jpg".into());
    let repo = fixtures().join("..");
    let example = repo.join("examples/cohere_rerank.py");
    let mut args = vec![
        example.to_str().unwrap(),
        "--server",
        &s.base,
        "--query",
        query,
    ];
    args.extend(documents.iter().map(String::as_str));
    let printed = python(&args);
    assert_eq!(printed.len(), 4, "{printed:?}");
    let mut last = f64::INFINITY;
    for p in &printed[..3] {
        let i = p["index"].as_u64().unwrap() as usize;
        let score = p["relevance_score"].as_f64().unwrap();
        assert!((score - yes[i]).abs() < 1e-5, "{p} vs {}", yes[i]);
        assert!(score <= last, "best first: {printed:?}");
        last = score;
        assert_eq!(p["document"], documents[i]);
    }
    assert_eq!(printed[3]["index"], 3, "the refused URL last");
    assert_eq!(printed[3]["relevance_score"], 0.0);

    // "Search images by text": the hits carry image URLs, the server fetches them.
    let hits: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i, "score": 0.9 - i as f64 / 10.0, "payload": {"image_url": host.url(n)}}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("hits.json");
    std::fs::write(&results, json!({"result": hits}).to_string()).unwrap();
    let printed = python(&[
        repo.join("examples/rerank_search_results.py")
            .to_str()
            .unwrap(),
        "--server",
        &s.base,
        "--threshold",
        "0",
        "--text",
        query,
        "--results",
        results.to_str().unwrap(),
    ]);
    let mut by_score: Vec<usize> = (0..3).collect();
    by_score.sort_by(|a, b| yes[*b].total_cmp(&yes[*a]));
    let ids: Vec<u64> = printed.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        by_score.iter().map(|i| *i as u64).collect::<Vec<_>>(),
        "{printed:?}"
    );
    for p in &printed {
        let i = p["id"].as_u64().unwrap() as usize;
        assert!(
            (p["entailment"].as_f64().unwrap() - yes[i]).abs() < 1e-4,
            "{p}"
        );
        assert_eq!(p["image_url"], host.url(names[i]));
    }
}
