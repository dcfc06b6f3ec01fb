//! `POST /rerank` and `ofa-entail rerank` against the real server and binary: rankings agree
//! with `/predict`, one image runs the ResNet once (and, with the cache, not again), bad
//! candidates fail alone, and the README's vector-search example works as printed.

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
async fn one_image_many_sentences_ranked_as_predict_scores_them_with_one_resnet_run() {
    let s = Server::start(&[("IMAGE_CACHE_MB", "64")]);
    let c = reqwest::Client::new();
    let img = image("grace_hopper.jpg");
    let misses = metric(&c, &s, "ofa_image_cache_misses_total").await;
    let (status, first) = post(&c, &s, json!({"image": b64(&img), "texts": TEXTS})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        metric(&c, &s, "ofa_image_cache_misses_total").await - misses,
        1.0,
        "five sentences, one ResNet run"
    );
    let hits = metric(&c, &s, "ofa_image_cache_hits_total").await;
    let (_, second) = post(&c, &s, json!({"image": b64(&img), "texts": TEXTS})).await;
    assert!(metric(&c, &s, "ofa_image_cache_hits_total").await - hits >= 1.0);
    assert_eq!(first, second, "bit-identical from the cache");

    // Each candidate as /predict scores it alone (batching tolerance), best first.
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), TEXTS.len());
    let mut last = f64::INFINITY;
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        let alone: Value = c
            .post(s.url("/predict"))
            .json(&json!({"image": b64(&img), "text": TEXTS[i]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let score = r["score"].as_f64().unwrap();
        assert!(
            (score - alone["scores"]["yes"].as_f64().unwrap()).abs() < 1e-5,
            "{r} vs {alone}"
        );
        assert_eq!(r["label"], alone["label"]);
        assert_eq!(r["details"].as_array().unwrap().len(), 3);
        assert!(score <= last, "not best first");
        last = score;
    }

    // Another label, top_k, min_score.
    let (_, no) = post(
        &c,
        &s,
        json!({"image": b64(&img), "texts": TEXTS, "label": "no", "top_k": 2}),
    )
    .await;
    let no = no["results"].as_array().unwrap().clone();
    assert_eq!(no.len(), 2);
    assert!(no[0]["score"].as_f64() >= no[1]["score"].as_f64());
    assert_eq!(no[0]["score"], no[0]["scores"]["no"]);
    let cut = results[1]["score"].as_f64().unwrap();
    let (_, some) = post(
        &c,
        &s,
        json!({"image": b64(&img), "texts": TEXTS, "min_score": cut}),
    )
    .await;
    assert_eq!(indices(&some), indices(&first)[..2]);

    // Multipart with repeated fields gives the same ranking.
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(img.clone()).file_name("g.jpg"),
    );
    for t in TEXTS {
        form = form.text("texts", t);
    }
    let mp: Value = c
        .post(s.url("/rerank"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mp, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sentence_many_images_with_a_bad_candidate_failing_alone() {
    let s = Server::start(&[("MAX_RERANK_CANDIDATES", "4")]);
    let c = reqwest::Client::new();
    let images = [
        b64(&image("grace_hopper.jpg")),
        b64(b"not an image"),
        b64(&image("chelsea.png")),
    ];
    let (status, v) = post(
        &c,
        &s,
        json!({"text": "a woman in a military uniform.", "images": images}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[2]["index"], 1);
    assert_eq!(r[2]["error_type"], "unsupported_image");
    assert!(r[0]["score"].as_f64() >= r[1]["score"].as_f64());
    let text = metrics_text(&c, &s).await;
    assert!(
        text.contains("ofa_rejections_total{reason=\"unsupported_image\"} 1"),
        "{text}"
    );

    for (body, status, kind) in [
        (
            json!({"image": images[0], "texts": ["a"], "text": "b", "images": [images[0]]}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"image": images[0], "texts": []}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"image": images[0], "texts": ["a"], "label": "perhaps"}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"image": images[0], "texts": ["a"], "top_k": 0}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"image": images[0], "texts": ["a"], "top_k": 5}),
            400,
            "invalid_rerank_request",
        ),
        (
            json!({"image": images[0], "texts": ["a", "b", "c", "d", "e"]}),
            413,
            "batch_too_large",
        ),
        (
            json!({"image": images[1], "texts": ["a", "b"]}),
            415,
            "unsupported_image",
        ),
        (json!({"image": images[0], "texts": ["", "b"]}), 200, ""),
    ] {
        let (got, v) = post(&c, &s, body.clone()).await;
        assert_eq!(got, status, "{body}: {v}");
        if !kind.is_empty() {
            assert_eq!(v["error_type"], kind, "{v}");
        } else {
            assert_eq!(v["results"][1]["error_type"], "invalid_text", "{v}");
        }
    }
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
