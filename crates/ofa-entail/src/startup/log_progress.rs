//! Getting the model for the long-running commands (`serve`, `worker`): the directory, fetched
//! through the cache when needed, with progress as JSON log lines instead of a progress bar.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::args::model::{describe_source, ModelArgs};

/// Download progress as JSON log lines: one per file event, and bytes at most every 10 s.
pub struct LogProgress {
    bytes: std::sync::Mutex<(u64, Instant)>,
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress {
            bytes: std::sync::Mutex::new((0, Instant::now())),
        }
    }
}

impl ofa_hub::Progress for LogProgress {
    fn event(&self, event: ofa_hub::Event<'_>) {
        use ofa_hub::Event;
        match event {
            Event::Listed { files, bytes } => tracing::info!(files, bytes, "model_listing"),
            Event::Cached { path, hashed } => {
                tracing::info!(file = path, hashed, "model_file_cached")
            }
            Event::Waiting { path } => tracing::info!(file = path, "model_file_waiting_for_lock"),
            Event::Start { path, size, from } => {
                *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) = (from, Instant::now());
                tracing::info!(
                    file = path,
                    bytes = size,
                    resume_from = from,
                    "model_file_download"
                )
            }
            Event::Bytes { path, n } => {
                let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
                b.0 += n;
                if b.1.elapsed() >= Duration::from_secs(10) {
                    b.1 = Instant::now();
                    tracing::info!(file = path, bytes_done = b.0, "model_file_progress");
                }
            }
            Event::Done { path, bytes } => {
                tracing::info!(file = path, bytes, "model_file_verified")
            }
            Event::Retry { path, error, delay } => tracing::warn!(
                file = path,
                error,
                delay_seconds = delay.as_secs_f64(),
                "model_file_retry"
            ),
            Event::UsingCache { error } => {
                tracing::warn!(error, "model_hub_unreachable_using_cache")
            }
        }
    }
}

/// The model directory: `--model-dir` as it is, or the model fetched through the cache, each
/// step logged (`model_fetched`, or `model_fetch_failed` before the error is returned).
pub async fn resolve(model: &ModelArgs) -> Result<PathBuf> {
    if let Some(dir) = model.local_dir() {
        return Ok(dir);
    }
    let t = Instant::now();
    let progress = LogProgress::default();
    match crate::args::model::fetch(&model.model_id, &model.revision, &model.hub, &progress).await {
        Ok(snap) => {
            tracing::info!(model_dir = %snap.dir.display(), source = describe_source(&snap.source), seconds = t.elapsed().as_secs_f64(), "model_fetched");
            Ok(snap.dir)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "model_fetch_failed");
            Err(e)
        }
    }
}
