//! Scoring a rerank request's candidates, however many: refused up front when they could only
//! miss the deadline; an image shared by every candidate fetched once; then chunk by chunk
//! (each chunk's images fetched, admitted together and run), so memory stays bounded by a
//! chunk and other requests interleave at chunk boundaries. A candidate whose image cannot be
//! had, or whose pair fails, fails alone.

use std::time::{Duration, Instant};

use ofa_api::Failure;
use ofa_engine::{Engine, EngineError, Pair, Scored};

use crate::error::{ApiError, ErrorType};
use crate::images::{self, ImageRef, PendingPair};
use crate::AppState;

/// Every candidate's outcome, in request order.
pub struct Scoring {
    pub results: Vec<Result<Scored, Failure>>,
    /// The engine's own refusals, kept whole (with their `Retry-After`) for when every
    /// candidate failed.
    pub engine_errors: Vec<EngineError>,
    pub fetch: Duration,
}

impl Scoring {
    /// The request's own error when every candidate failed: the engine's, when it refused
    /// them all, else the first candidate's.
    pub fn all_failed(&mut self) -> Option<ApiError> {
        if !self.results.iter().all(Result::is_err) {
            return None;
        }
        if self.engine_errors.len() == self.results.len() {
            return Some(self.engine_errors.swap_remove(0).into());
        }
        self.results
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(|f| ApiError::from(f.clone()))
    }
}

/// Scores `pending` for one request, `chunk` candidates at a time.
pub async fn score(
    state: &AppState,
    engine: &Engine,
    mut pending: Vec<PendingPair>,
    cache_scope: u64,
    deadline: Instant,
) -> Result<Scoring, ApiError> {
    // At most half the queue: a chunk never fills it, so requests arriving meanwhile are
    // admitted rather than refused, and run between chunks.
    let chunk = state
        .config
        .max_rerank_candidates
        .min(engine.config().max_queue / 2)
        .max(1);
    if pending.len() > chunk {
        if let Some(expected) = engine.expected_time(pending.len()) {
            if Instant::now() + expected > deadline {
                return Err(ApiError::new(
                    ErrorType::QueueFull,
                    format!(
                        "{} candidates would take about {:.1} s here, past the request deadline",
                        pending.len(),
                        expected.as_secs_f64()
                    ),
                )
                .retry_after(expected.min(Duration::from_secs(60))));
            }
        }
    }
    let mut fetch = Duration::ZERO;
    // One image for every candidate (an image query): fetched once, not once a chunk.
    let mut _shared = Vec::new();
    let shared = match pending.first() {
        Some(first) if pending.len() > 1 && pending.iter().all(|p| p.image == first.image) => {
            Some(first.image.clone())
        }
        _ => None,
    };
    if let Some(url @ ImageRef::Url(_)) = shared {
        let fetched = images::fetch_all(state, vec![url], deadline).await;
        fetch += fetched.time;
        _shared = fetched.permits;
        match fetched.images.into_iter().next() {
            Some(Ok(bytes)) => pending
                .iter_mut()
                .for_each(|p| p.image = ImageRef::Inline(bytes.clone())),
            Some(Err(f)) => return Err(f.into()),
            None => {}
        }
    }
    let mut results = Vec::with_capacity(pending.len());
    let mut engine_errors = Vec::new();
    let mut rest = pending.into_iter().peekable();
    while rest.peek().is_some() {
        let part: Vec<PendingPair> = rest.by_ref().take(chunk).collect();
        let refs = part.iter().map(|p| p.image.clone()).collect();
        // The chunk's fetched bytes and their budget are let go once it has run.
        let fetched = images::fetch_all(state, refs, deadline).await;
        fetch += fetched.time;
        let _held = fetched.permits;
        let mut outcomes: Vec<Option<Result<Scored, Failure>>> = Vec::with_capacity(part.len());
        let mut runnable = Vec::new();
        for (p, image) in part.into_iter().zip(fetched.images) {
            match image {
                Ok(image) => {
                    outcomes.push(None);
                    runnable.push(Pair {
                        image,
                        text: p.text,
                        premise: p.premise,
                        cache_scope,
                    });
                }
                Err(f) => outcomes.push(Some(Err(f))),
            }
        }
        if !runnable.is_empty() {
            let mut ran = engine.run_each(runnable, deadline).await?.into_iter();
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = ran.next().map(|r| {
                    r.map_err(|e| {
                        let failure = e.failure();
                        engine_errors.push(e);
                        failure
                    })
                });
            }
        }
        results.extend(outcomes.into_iter().flatten());
    }
    Ok(Scoring {
        results,
        engine_errors,
        fetch,
    })
}
