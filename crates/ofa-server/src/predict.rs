//! `/predict` and `/predict/batch`: read the body, parse it into pairs, run them through the
//! engine, and answer in the `/predict` shape.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::access::{cache_scope, charge_pairs};
use crate::error::ApiError;
use crate::timings::Timings;
use crate::{parse, AppState};
use ofa_api::Answer;

pub async fn predict(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let scope = cache_scope(&state.config.access, &upload.parts.extensions);
    let mut pair = parse::pair(upload.parts, upload.body).await?;
    pair.cache_scope = scope;
    let _in_flight = state.enter()?;
    let scored = engine.run_one(pair, deadline).await?;
    let timings = Timings::slowest([&scored]);
    Ok(respond(
        Json(Answer::from_scores(&scored.scores)),
        timings,
        start,
    ))
}

pub async fn predict_batch(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let mut pairs = parse::batch(&upload.parts, &upload.body, state.config.max_batch_items)?;
    drop(upload.body);
    let scope = cache_scope(&state.config.access, &upload.parts.extensions);
    pairs.iter_mut().for_each(|p| p.cache_scope = scope);
    charge_pairs(&state.config.access, &upload.parts.extensions, pairs.len()).await?;
    let _in_flight = state.enter()?;
    let scored = engine.run_all(pairs, deadline).await?;
    let timings = Timings::slowest(&scored);
    let answers: Vec<Answer> = scored
        .iter()
        .map(|s| Answer::from_scores(&s.scores))
        .collect();
    Ok(respond(Json(answers), timings, start))
}

/// The answer with its timing headers (seconds) and the timings for the log line.
pub fn respond(body: impl IntoResponse, t: Timings, start: Instant) -> Response {
    let mut resp = body.into_response();
    timing_headers(resp.headers_mut(), t.queue, t.inference, start.elapsed());
    resp.extensions_mut().insert(t);
    resp
}

fn timing_headers(h: &mut HeaderMap, queue: Duration, inference: Duration, total: Duration) {
    for (name, d) in [
        ("x-queue-time", queue),
        ("x-inference-time", inference),
        ("x-total-time", total),
    ] {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", d.as_secs_f64())) {
            h.insert(name, v);
        }
    }
}
