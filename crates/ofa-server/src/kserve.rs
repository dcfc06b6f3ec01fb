//! KServe v2 / Open Inference Protocol REST routes, so Triton and KServe clients and gateways
//! work unchanged. Inputs are BYTES tensors `image`, `text` and optional `premise` of shape
//! `[B]` (see [`crate::kserve_tensor`]). Outputs: `probabilities` FP32 `[B, 3]` (yes, no,
//! maybe) and `label` BYTES `[B]`.

use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorType};
use crate::images::{self, PendingPair};
use crate::probes::status_for;
use crate::timings::Timings;
use crate::{kserve_tensor, parse, predict, AppState};
use ofa_api::Answer;

pub const MODEL_NAME: &str = "ofa-entail";

fn check_model(name: &str) -> Result<(), ApiError> {
    if name == MODEL_NAME {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorType::ModelNotFound,
            format!("unknown model {name:?}; this server serves {MODEL_NAME:?}"),
        ))
    }
}

pub async fn server_metadata() -> Json<Value> {
    Json(
        json!({"name": "ofa-entail", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// KServe's liveness: as `/healthz`.
pub async fn live(State(state): State<AppState>) -> Response {
    let live = state.engine().and_then(|e| e.failing()).is_none();
    (status_for(live), Json(json!({"live": live}))).into_response()
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    (status_for(ready), Json(json!({"ready": ready}))).into_response()
}

pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&name)?;
    let ready = state.is_ready();
    Ok((
        status_for(ready),
        Json(json!({"name": name, "ready": ready})),
    )
        .into_response())
}

pub async fn model_metadata(Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    check_model(&name)?;
    Ok(Json(json!({
        "name": MODEL_NAME,
        "versions": ["1"],
        "platform": "ofa-entail",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
            {"name": "premise", "datatype": "BYTES", "shape": [-1], "optional": true},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    })))
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    run(state, name, req).await
}

pub async fn infer_versioned(
    State(state): State<AppState>,
    Path((name, _version)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    run(state, name, req).await
}

async fn run(state: AppState, name: String, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    check_model(&name)?;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let request = kserve_tensor::decode(&upload.parts.headers, &upload.body)?;
    drop(upload.body);
    parse::check_batch_len(request.images.len(), state.config.max_batch_items)?;
    crate::access::charge_pairs(
        &state.config.access,
        &upload.parts.extensions,
        request.images.len(),
    )
    .await?;
    let scope = crate::access::cache_scope(&state.config.access, &upload.parts.extensions);
    let mut premises = request.premises.map(Vec::into_iter);
    let pending: Vec<PendingPair> = request
        .images
        .into_iter()
        .zip(request.texts)
        .map(|(image, text)| PendingPair {
            image,
            text,
            premise: premises.as_mut().and_then(Iterator::next),
        })
        .collect();
    let _in_flight = state.enter()?;
    let images::Resolved {
        pairs,
        fetch,
        held: _fetched,
    } = images::resolve(&state, pending, scope, deadline).await?;
    let scored = engine.run_all(pairs, deadline).await?;
    let mut timings = Timings::slowest(&scored);
    timings.fetch = fetch;
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for s in &scored {
        let answer = Answer::from_scores(&s.scores);
        probs.extend(answer.details.iter().copied());
        labels.push(answer.label);
    }
    let b = labels.len();
    let width = probs.len().checked_div(b).unwrap_or(0);
    let mut out = json!({
        "model_name": MODEL_NAME,
        "model_version": "1",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [b, width], "data": probs},
            {"name": "label", "datatype": "BYTES", "shape": [b], "data": labels},
        ],
    });
    if let Some(id) = request.id {
        out["id"] = id;
    }
    Ok(predict::respond(Json(out), timings, start))
}
