//! KServe v2 / Open Inference Protocol REST routes, so Triton and KServe clients and gateways
//! work unchanged. Inputs are BYTES tensors `image`, `text` and optional `premise` of shape
//! `[B]`; images travel as raw bytes in the binary-data extension (what `tritonclient` sends)
//! or as base64 strings in JSON. Outputs: `probabilities` FP32 `[B, 3]` (yes, no, maybe) and
//! `label` BYTES `[B]`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

pub const MODEL_NAME: &str = "ofa-entail";
const BINARY_HEADER: &str = "inference-header-content-length";

fn check_model(name: &str) -> Result<(), ApiError> {
    if name == MODEL_NAME {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("unknown model {name:?}; this server serves {MODEL_NAME:?}"),
        ))
    }
}

pub async fn server_metadata() -> Json<Value> {
    Json(
        json!({"name": "ofa-entail", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready}))).into_response()
}

pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&name)?;
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({"name": name, "ready": ready}))).into_response())
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

/// One input tensor's elements as raw bytes.
fn tensor_elements(
    input: &Value,
    binary: &mut &[u8],
    name: &str,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let bad = |m: String| {
        ApiError::bad_request("invalid_inference_request", format!("input {name:?}: {m}"))
    };
    if input["datatype"].as_str().is_some_and(|d| d != "BYTES") {
        return Err(bad(format!(
            "datatype must be BYTES, got {}",
            input["datatype"]
        )));
    }
    if let Some(size) = input["parameters"]["binary_data_size"].as_u64() {
        let size = size as usize;
        if binary.len() < size {
            return Err(bad("binary data shorter than binary_data_size".into()));
        }
        let (mut chunk, rest) = binary.split_at(size);
        *binary = rest;
        let mut out = Vec::new();
        while !chunk.is_empty() {
            if chunk.len() < 4 {
                return Err(bad("truncated BYTES element length".into()));
            }
            let n = u32::from_le_bytes(chunk[..4].try_into().expect("4 bytes")) as usize;
            if chunk.len() < 4 + n {
                return Err(bad("truncated BYTES element".into()));
            }
            out.push(chunk[4..4 + n].to_vec());
            chunk = &chunk[4 + n..];
        }
        return Ok(out);
    }
    let data = input["data"]
        .as_array()
        .ok_or_else(|| bad("needs \"data\" or binary data".into()))?;
    data.iter()
        .map(|v| match v {
            Value::String(s) if name == "image" => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| bad(format!("image elements in JSON must be base64: {e}"))),
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            other => Err(bad(format!("BYTES elements must be strings, got {other}"))),
        })
        .collect()
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    check_model(&name)?;
    let engine = state.engine().ok_or_else(ApiError::loading)?;
    let json_len = match headers.get(BINARY_HEADER) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_inference_request",
                    format!("bad {BINARY_HEADER} header"),
                )
            })?,
        None => body.len(),
    };
    let request: Value = serde_json::from_slice(&body[..json_len]).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("invalid inference request JSON: {e}"),
        )
    })?;
    let mut binary = &body[json_len..];
    let inputs = request["inputs"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request("invalid_inference_request", "missing \"inputs\""))?;
    let (mut images, mut texts, mut premises) = (None, None, None);
    for input in inputs {
        let n = input["name"].as_str().unwrap_or("");
        let elems = tensor_elements(input, &mut binary, n)?;
        match n {
            "image" => images = Some(elems),
            "text" => texts = Some(elems),
            "premise" => premises = Some(elems),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_inference_request",
                    format!("unknown input {other:?} (image, text, premise)"),
                ))
            }
        }
    }
    let images =
        images.ok_or_else(|| ApiError::bad_request("missing_image", "missing input \"image\""))?;
    let texts =
        texts.ok_or_else(|| ApiError::bad_request("missing_text", "missing input \"text\""))?;
    if images.len() != texts.len()
        || premises.as_ref().is_some_and(|p| p.len() != images.len())
        || images.is_empty()
    {
        return Err(ApiError::bad_request(
            "invalid_inference_request",
            "image, text and premise must have the same non-zero batch size",
        ));
    }
    crate::routes::check_batch_len(&state, images.len())?;
    let utf8 = |b: Vec<u8>, what: &str| {
        String::from_utf8(b).map_err(|_| {
            ApiError::bad_request("invalid_utf8", format!("{what} is not valid UTF-8"))
        })
    };
    let mut prepared = Vec::with_capacity(images.len());
    for (i, (image, text)) in images.into_iter().zip(texts).enumerate() {
        let text = utf8(text, "text")?;
        let premise = match premises.as_mut() {
            Some(p) => Some(utf8(std::mem::take(&mut p[i]), "premise")?),
            None => None,
        };
        let e = engine.clone();
        let p = tokio::task::spawn_blocking(move || e.prepare(&image, &text, premise.as_deref()))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(ApiError::from)?;
        prepared.push(p);
    }
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for outcome in crate::routes::run_all(&engine, prepared, deadline).await? {
        probs.extend(outcome.prediction.details.iter().copied());
        labels.push(outcome.prediction.label);
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
    if let Some(id) = request.get("id") {
        out["id"] = id.clone();
    }
    Ok(Json(out).into_response())
}
