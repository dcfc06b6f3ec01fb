//! `POST /rerank`: rankings agree with `/predict`, one image runs the ResNet once (and, with
//! the cache, not again), other labels, `top_k` and `min_score`, multipart, and a bad candidate
//! failing alone while a bad request fails whole.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const TEXTS: [&str; 5] = [
    "two dogs play in the snow.",
    "a woman in a military uniform.",
    "a man.",
    "a person wearing a hat.",
    "a portrait of an officer.",
];

fn indices(v: &Value) -> Vec<u64> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_image_many_sentences_ranked_as_predict_scores_them_with_one_resnet_run() {
    let state = build(
        Options {
            image_cache_bytes: 64 << 20,
            ..Options::default()
        },
        open_access(),
    );
    let img = image("grace_hopper.jpg");
    let rerank = |body: Value| call_json(&state, json_request("/rerank", &body));
    let misses = metric(&state, "ofa_image_cache_misses_total").await;
    let (status, first) = rerank(json!({"image": b64(&img), "texts": TEXTS})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        metric(&state, "ofa_image_cache_misses_total").await - misses,
        1.0,
        "five sentences, one ResNet run"
    );
    let hits = metric(&state, "ofa_image_cache_hits_total").await;
    let (_, second) = rerank(json!({"image": b64(&img), "texts": TEXTS})).await;
    assert!(metric(&state, "ofa_image_cache_hits_total").await - hits >= 1.0);
    assert_eq!(first, second, "bit-identical from the cache");

    // Each candidate as /predict scores it alone (batching tolerance), best first.
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), TEXTS.len());
    let mut last = f64::INFINITY;
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        let (status, alone) = call_json(
            &state,
            json_request("/predict", &json!({"image": b64(&img), "text": TEXTS[i]})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{alone}");
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
    let (_, no) =
        rerank(json!({"image": b64(&img), "texts": TEXTS, "label": "no", "top_k": 2})).await;
    let no = no["results"].as_array().unwrap().clone();
    assert_eq!(no.len(), 2);
    assert!(no[0]["score"].as_f64() >= no[1]["score"].as_f64());
    assert_eq!(no[0]["score"], no[0]["scores"]["no"]);
    let cut = results[1]["score"].as_f64().unwrap();
    let (_, some) = rerank(json!({"image": b64(&img), "texts": TEXTS, "min_score": cut})).await;
    assert_eq!(indices(&some), indices(&first)[..2]);

    // Multipart with repeated fields gives the same ranking.
    let mut parts: Vec<(&str, &[u8])> = vec![("image", &img)];
    parts.extend(TEXTS.iter().map(|t| ("texts", t.as_bytes())));
    let (status, mp) = call_json(&state, multipart_to("/rerank", &parts)).await;
    assert_eq!(status, StatusCode::OK, "{mp}");
    assert_eq!(mp, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sentence_many_images_with_a_bad_candidate_failing_alone() {
    let state = build(
        Options {
            max_rerank_candidates: 4,
            ..Options::default()
        },
        open_access(),
    );
    let images = [
        b64(&image("grace_hopper.jpg")),
        b64(b"not an image"),
        b64(&image("chelsea.png")),
    ];
    let body = json!({"text": "a woman in a military uniform.", "images": images});
    let (status, v) = call_json(&state, json_request("/rerank", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[2]["index"], 1);
    assert_eq!(r[2]["error_type"], "unsupported_image");
    assert!(r[0]["score"].as_f64() >= r[1]["score"].as_f64());
    assert_eq!(
        metric(&state, "ofa_rejections_total{reason=\"unsupported_image\"}").await,
        1.0
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
        let (got, v) = call_json(&state, json_request("/rerank", &body)).await;
        assert_eq!(got.as_u16(), status, "{body}: {v}");
        if !kind.is_empty() {
            assert_eq!(v["error_type"], kind, "{v}");
        } else {
            assert_eq!(v["results"][1]["error_type"], "invalid_text", "{v}");
        }
    }
}
