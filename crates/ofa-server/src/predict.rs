//! `/predict` and `/predict/batch`: read the body, parse it into pairs, fetch the images named
//! by URL, run the pairs through the engine, and answer in the `/predict` shape.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::access::{cache_scope, charge_pairs};
use crate::error::ApiError;
use crate::timings::Timings;
use crate::{images, parse, AppState};
use ofa_api::Answer;

pub async fn predict(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let scope = cache_scope(&state.config.access, &upload.parts.extensions);
    let pending = parse::pair(upload.parts, upload.body).await?;
    let _in_flight = state.enter()?;
    let mut resolved = images::resolve(&state, vec![pending], scope, deadline).await?;
    let scored = engine.run_one(resolved.pairs.remove(0), deadline).await?;
    let mut timings = Timings::slowest([&scored]);
    timings.fetch = resolved.fetch;
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
    let pending = parse::batch(&upload.parts, &upload.body, state.config.max_batch_items)?;
    drop(upload.body);
    let scope = cache_scope(&state.config.access, &upload.parts.extensions);
    charge_pairs(
        &state.config.access,
        &upload.parts.extensions,
        pending.len(),
    )
    .await?;
    let _in_flight = state.enter()?;
    let images::Resolved {
        pairs,
        fetch,
        held: _fetched,
    } = images::resolve(&state, pending, scope, deadline).await?;
    let scored = engine.run_all(pairs, deadline).await?;
    let mut timings = Timings::slowest(&scored);
    timings.fetch = fetch;
    let answers: Vec<Answer> = scored
        .iter()
        .map(|s| Answer::from_scores(&s.scores))
        .collect();
    Ok(respond(Json(answers), timings, start))
}

/// The answer with its timing headers (seconds) and the timings for the log line.
pub fn respond(body: impl IntoResponse, t: Timings, start: Instant) -> Response {
    let mut resp = body.into_response();
    timing_headers(resp.headers_mut(), &t, start.elapsed());
    resp.extensions_mut().insert(t);
    resp
}

fn timing_headers(h: &mut HeaderMap, t: &Timings, total: Duration) {
    // `x-fetch-time` only when the request named an image by URL.
    let fetch = (!t.fetch.is_zero()).then_some(("x-fetch-time", t.fetch));
    for (name, d) in fetch.into_iter().chain([
        ("x-queue-time", t.queue),
        ("x-inference-time", t.inference),
        ("x-total-time", total),
    ]) {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", d.as_secs_f64())) {
            h.insert(name, v);
        }
    }
}
