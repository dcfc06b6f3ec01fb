//! The contract: `/openapi.json` says exactly what the service takes. Schemathesis (PyPI)
//! generates requests from it, schema-valid and not, for every route, KServe's included, and
//! checks the answers against it; our own checks (tests/contract/hooks.py) hold refusals of
//! schema-valid requests to the rules a JSON Schema cannot state (an image's bytes, a tensor's
//! shape against its data).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod common;

use common::Server;

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

#[test]
fn schemathesis_finds_nothing_against_the_document() {
    // Generated image URLs are refused by the policy without a DNS lookup: the contract is
    // about the shapes, not the network.
    let s = Server::start(&[
        ("MAX_TEXT_CHARS", "300"),
        ("MAX_BATCH_ITEMS", "6"),
        ("IMAGE_URL_ALLOW", "images.invalid"),
    ]);
    let dir = contract_dir();
    let out = Command::new("schemathesis")
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .args(["run", &s.url("/openapi.json")])
        // Bounded and repeatable: the same cases every run.
        .args([
            "--max-examples",
            "60",
            "--seed",
            "20261130",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "30"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis must be installed (pip install schemathesis; .ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran every operation, not an empty selection.
    assert!(text.contains("18 selected / 18 total"), "{text}");
    let lines = s.log_lines();
    let served = lines
        .iter()
        .filter(|l| l["event"] == "request" && l["route"] == "/predict" && l["status"] == 200)
        .count();
    assert!(served > 0, "schema-valid predictions were answered");
    assert!(
        !lines.iter().any(|l| l["event"] == "request_panicked"),
        "no request panicked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_carries_this_servers_limits_and_key_requirement() {
    let s = Server::start(&[
        ("MAX_TEXT_CHARS", "300"),
        ("MAX_BATCH_ITEMS", "6"),
        ("MAX_RERANK_CANDIDATES", "9"),
        ("API_KEYS", "k"),
    ]);
    let doc: Value = reqwest::get(s.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Text"]["maxLength"], 300);
    let batch = &doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert_eq!(batch["maxItems"], 6);
    assert_eq!(
        schemas["RerankRequest"]["oneOf"][0]["properties"]["texts"]["maxItems"],
        9
    );
    assert_eq!(
        schemas["RerankRequest"]["oneOf"][1]["properties"]["top_k"]["maximum"],
        9
    );
    let security = doc["paths"]["/predict"]["post"]["security"]
        .as_array()
        .unwrap();
    assert!(!security.is_empty());
    assert!(
        security.iter().all(|a| !a.as_object().unwrap().is_empty()),
        "a key is required, so no anonymous alternative: {security:?}"
    );
    // Every route the router serves is in the document, and nothing else.
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/",
            "/docs",
            "/healthz",
            "/info",
            "/metrics",
            "/openapi.json",
            "/predict",
            "/predict/batch",
            "/readyz",
            "/rerank",
            "/v1/rerank",
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/{name}",
            "/v2/models/{name}/infer",
            "/v2/models/{name}/ready",
            "/v2/models/{name}/versions/{version}/infer",
            "/v2/rerank",
        ]
    );
}
