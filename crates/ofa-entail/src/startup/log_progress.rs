//! Getting the model for the long-running commands (`serve`, `worker`): the directory, fetched
//! through the cache when needed, with progress as JSON log lines instead of a progress bar.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::args::model::{describe_source, ModelArgs};

use ofa_server::logging::Logger;
use serde_json::Value;

/// Download progress as JSON log lines: one per file event, and bytes at most every 10 s.
pub struct LogProgress {
    log: Arc<Logger>,
    bytes: std::sync::Mutex<(u64, Instant)>,
}

impl LogProgress {
    pub fn new(log: Arc<Logger>) -> LogProgress {
        LogProgress {
            log,
            bytes: std::sync::Mutex::new((0, Instant::now())),
        }
    }
}

impl ofa_hub::Progress for LogProgress {
    fn event(&self, event: ofa_hub::Event<'_>) {
        use ofa_hub::Event;
        let log = |name: &str, fields: &[(&str, Value)]| self.log.event(name, fields);
        match event {
            Event::Listed { files, bytes } => log(
                "model_listing",
                &[("files", files.into()), ("bytes", bytes.into())],
            ),
            Event::Cached { path, hashed } => log(
                "model_file_cached",
                &[("file", path.into()), ("hashed", hashed.into())],
            ),
            Event::Waiting { path } => log("model_file_waiting_for_lock", &[("file", path.into())]),
            Event::Start { path, size, from } => {
                *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) = (from, Instant::now());
                log(
                    "model_file_download",
                    &[
                        ("file", path.into()),
                        ("bytes", size.into()),
                        ("resume_from", from.into()),
                    ],
                )
            }
            Event::Bytes { path, n } => {
                let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
                b.0 += n;
                if b.1.elapsed() >= Duration::from_secs(10) {
                    b.1 = Instant::now();
                    log(
                        "model_file_progress",
                        &[("file", path.into()), ("bytes_done", b.0.into())],
                    );
                }
            }
            Event::Done { path, bytes } => log(
                "model_file_verified",
                &[("file", path.into()), ("bytes", bytes.into())],
            ),
            Event::Retry { path, error, delay } => log(
                "model_file_retry",
                &[
                    ("file", path.into()),
                    ("error", error.into()),
                    ("delay_seconds", delay.as_secs_f64().into()),
                ],
            ),
            Event::UsingCache { error } => log(
                "model_hub_unreachable_using_cache",
                &[("error", error.into())],
            ),
        }
    }
}

/// The model directory: `--model-dir` as it is, or the model fetched through the cache, each
/// step logged (`model_fetched`, or `model_fetch_failed` before the error is returned).
pub async fn resolve(model: &ModelArgs, log: &Arc<Logger>) -> Result<PathBuf> {
    if let Some(dir) = model.local_dir() {
        return Ok(dir);
    }
    let t = Instant::now();
    let progress = LogProgress::new(log.clone());
    match crate::args::model::fetch(&model.model_id, &model.revision, &model.hub, &progress).await {
        Ok(snap) => {
            log.event(
                "model_fetched",
                &[
                    ("model_dir", snap.dir.display().to_string().into()),
                    ("source", describe_source(&snap.source).into()),
                    ("seconds", t.elapsed().as_secs_f64().into()),
                ],
            );
            Ok(snap.dir)
        }
        Err(e) => {
            log.event("model_fetch_failed", &[("error", format!("{e:#}").into())]);
            Err(e)
        }
    }
}
