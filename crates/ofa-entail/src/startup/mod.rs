//! Start-up, written once for every command that runs the model: open the device, get the
//! model directory, load and configure the pipeline, start the engine (with its breaker log),
//! warm it up. The services (`serve`, `worker`) report each step as a log event; the
//! command-line tools (`predict`, `rerank`, `batch`, `eval`) on stderr.

pub mod breaker_log;
pub mod log_progress;
pub mod stale_layout;
pub mod warmup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use ofa_engine::{Drain, Engine, EngineConfig, EngineMetrics};
use ofa_model::{Device, Entailment, Precision, WeightSource};
use serde_json::json;

use crate::args::device::{name, DeviceArgs};
use crate::args::model::ModelArgs;
use stale_layout::Rebuild;

/// How a command runs the model, which decides what loading tunes and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Each shape once (`predict`, `rerank`): nothing is timed or recorded, since neither
    /// would pay back; `auto` keeps the device's default ResNet layout.
    Once,
    /// Batches of up to this many pairs, many times (`serve`, `worker`, `batch`, `eval`): the
    /// ResNet layout is tuned on it and CUDA graphs recorded.
    Batches(usize),
}

/// What to load, where, and how it will run.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub device: DeviceArgs,
    pub runs: Runs,
    /// Bytes of image features kept across batches; 0: no cache.
    pub image_cache_bytes: u64,
}

/// The model directory at `dir`, loaded on `device` in `precision` and configured for its use.
pub fn load(
    dir: &Path,
    device: &Device,
    precision: Precision,
    settings: &ModelSettings,
) -> ofa_model::Result<Entailment> {
    let model = Entailment::load_with(dir, device, precision)?;
    let model = match settings.runs {
        Runs::Once => settings.device.configure_for_one_pass(model)?,
        Runs::Batches(max) => settings.device.configure(model, max)?,
    };
    // A request's image shared by pairs in several batches runs the ResNet once.
    Ok(model
        .with_image_cache(settings.image_cache_bytes)
        .with_feature_reuse(true))
}

/// For the command line: the device (its warning on stderr), the model directory (downloaded
/// with a progress bar when needed), and the pipeline loaded from it.
pub fn load_for_cli(model: &ModelArgs, settings: &ModelSettings) -> Result<Loaded> {
    let (device, precision) = settings.device.open_for_cli()?;
    let dir = model.resolve_blocking()?;
    match stale_layout::rebuild(&dir, &device, precision) {
        Some((why, Rebuild::Done(w))) => eprintln!(
            "{why}: rebuilt {} ({} tensors) in {:.1} s",
            w.path.display(),
            w.tensors,
            w.seconds
        ),
        Some((_, Rebuild::Failed(e))) => {
            eprintln!("warning: cannot rebuild the stale engine layout: {e:#}")
        }
        Some((_, Rebuild::ByAnother)) | None => {}
    }
    let pipeline = load(&dir, &device, precision, settings)?;
    if let WeightSource::CheckpointOverStale { why, .. } = pipeline.weight_source() {
        eprintln!(
            "warning: {why}; the checkpoint is transformed at load instead (`ofa-entail convert --precision {}` rewrites the layout)",
            precision.name()
        );
    }
    Ok(Loaded {
        pipeline: Arc::new(pipeline),
        device,
        dir,
    })
}

/// A loaded model as a service holds it.
pub struct Loaded {
    pub pipeline: Arc<Entailment>,
    pub device: Device,
    pub dir: PathBuf,
}

/// For a service: each step logged (`device_unavailable`, `gpu_unavailable`, the fetch's
/// events, `model_load_failed`, `model_loaded`), loading off the async runtime, and the load
/// time recorded in `metrics`.
pub async fn load_for_service(
    model: &ModelArgs,
    settings: &ModelSettings,
    metrics: &EngineMetrics,
) -> Result<Loaded> {
    let (device, precision, warning) = match settings.device.open() {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "device_unavailable");
            return Err(e);
        }
    };
    if let Some(detail) = warning {
        tracing::warn!(
            gpu_device = settings.device.gpu_device.as_deref(),
            detail,
            "gpu_unavailable"
        );
    }
    let dir = log_progress::resolve(model).await?;
    let rebuilt = {
        let (dir, device) = (dir.clone(), device.clone());
        tokio::task::spawn_blocking(move || stale_layout::rebuild(&dir, &device, precision)).await?
    };
    match rebuilt {
        Some((why, Rebuild::Done(w))) => tracing::info!(
            detail = why.as_str(),
            file = %w.path.display(),
            seconds = w.seconds,
            "engine_layout_rebuilt"
        ),
        Some((_, Rebuild::Failed(e))) => {
            tracing::warn!(error = %format!("{e:#}"), "engine_layout_not_rebuilt")
        }
        Some((_, Rebuild::ByAnother)) | None => {}
    }
    let t = Instant::now();
    let loaded = {
        let (dir, device, settings) = (dir.clone(), device.clone(), settings.clone());
        tokio::task::spawn_blocking(move || load(&dir, &device, precision, &settings)).await?
    };
    let pipeline = match loaded {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(model_dir = %dir.display(), error = %e, "model_load_failed");
            return Err(anyhow::Error::new(e).context("cannot load the model"));
        }
    };
    let load_s = t.elapsed().as_secs_f64();
    metrics.set_model_loaded(load_s);
    if let WeightSource::CheckpointOverStale { why, .. } = pipeline.weight_source() {
        tracing::warn!(detail = why.as_str(), "engine_layout_ignored");
    }
    let weights = pipeline.weight_source().describe();
    tracing::info!(seconds = load_s, device = name(&device), weights, json.resnet_layout_tuning = %json!(pipeline.model().resnet_layout_tuning()), "model_loaded");
    Ok(Loaded {
        pipeline: Arc::new(pipeline),
        device,
        dir,
    })
}

/// The engine over `pipeline`; for a service, its breaker's transitions are logged.
pub fn start_engine(
    pipeline: Arc<Entailment>,
    config: EngineConfig,
    metrics: Arc<EngineMetrics>,
    drain: Arc<Drain>,
    log_breaker: bool,
) -> Arc<Engine> {
    let engine = Arc::new(Engine::start(pipeline, config, metrics, drain));
    if log_breaker {
        breaker_log::spawn(&engine);
    }
    engine
}

/// Before a service takes work: a full warm-up (every batch size on a GPU, logged as
/// `warmed_up`), or with `full` false only the breaker's probe pair.
pub async fn warm_up(
    engine: &Arc<Engine>,
    pipeline: &Entailment,
    max_batch: usize,
    full: bool,
) -> Result<()> {
    if full {
        warmup::run(engine, pipeline, max_batch).await
    } else {
        warmup::probe_only(engine)
    }
}
