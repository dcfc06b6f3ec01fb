//! `ofa-entail worker`: jobs from RabbitMQ through the same engine as `serve`, results back to
//! RabbitMQ; `/healthz`, `/readyz` and `/metrics` on the metrics port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ofa_engine::{Drain, EngineConfig, EngineMetrics};
use ofa_jobs::store::{StoreLocation, StoreMetrics};
use ofa_jobs::Runner;
use ofa_queue::health::{self, Health};
use ofa_queue::{Broker, Worker, WorkerConfig, WorkerMetrics};

use crate::args::flags::seconds;
use crate::args::jobs::{AmqpArgs, ImageArgs, JobSizeArgs};
use crate::args::model::ModelArgs;
use crate::args::store::StoreArgs;
use crate::startup::{self, Loaded, ModelSettings, Runs};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    job_size: JobSizeArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// Most pairs in one forward pass.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Jobs taken from the broker and not yet settled; 0 = four batches, which keeps the
    /// engine busy while results are published and images fetched.
    #[arg(long, env = "PREFETCH", default_value_t = 0)]
    prefetch: u16,
    /// Port for /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    /// json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Which events are logged: a level (`info`, `warn`) or `RUST_LOG`-style directives.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// Also append JSON log lines to this file.
    #[arg(long, env = "LOG_PATH")]
    log_path: Option<PathBuf>,
    /// Seconds before a transiently failed job is handed back, times its delivery number.
    #[arg(long, env = "RETRY_DELAY", default_value_t = 2.0)]
    retry_delay: f64,
    /// Seconds the breaker stays open after repeated model failures.
    #[arg(long, env = "BREAKER_COOLDOWN", default_value_t = 60.0)]
    breaker_cooldown: f64,
    /// Seconds allowed, after SIGTERM, to finish and publish the jobs held.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Seconds one chunk of jobs may take, fetches included, before its jobs are retried.
    #[arg(long, env = "JOB_TIMEOUT", default_value_t = 600.0)]
    job_timeout: f64,
    /// Test-only: enables POST /debug/fault on the metrics port. Never set in production.
    #[arg(long, env = "FAULT_INJECTION", default_value_t = false, action = clap::ArgAction::Set)]
    fault_injection: bool,
}

pub fn run(args: WorkerArgs) -> Result<()> {
    let _log =
        crate::args::flags::logger(&args.log_format, args.log_path.as_deref(), &args.log_filter)?;
    anyhow::ensure!(args.max_batch_size > 0, "MAX_BATCH_SIZE must be at least 1");
    let broker = args.amqp.broker("worker")?;
    let fetcher = args.images.fetcher()?;
    let prefetch = if args.prefetch == 0 {
        u16::try_from(args.max_batch_size * 4).unwrap_or(u16::MAX)
    } else {
        args.prefetch
    };
    let config = WorkerConfig {
        prefetch,
        chunk: args.max_batch_size,
        gather: Duration::from_millis(5),
        delivery_limit: args.amqp.delivery_limit,
        retry_delay: seconds("RETRY_DELAY", args.retry_delay)?,
        reconnect_max: Duration::from_secs(30),
        shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", args.shutdown_timeout)?,
        depth_interval: Duration::from_secs(15),
        max_job_bytes: args.job_size.bytes()?,
        model_id: args.model.model_id.clone(),
        model_revision: args.model.revision.clone(),
    };
    let job_timeout = seconds("JOB_TIMEOUT", args.job_timeout)?;
    let breaker_cooldown = seconds("BREAKER_COOLDOWN", args.breaker_cooldown)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let engine_metrics = Arc::new(EngineMetrics::default());
        let worker_metrics = Arc::new(WorkerMetrics::default());
        let store_metrics = Arc::new(StoreMetrics::default());
        let drain = Arc::new(Drain::default());
        let model_slot = Arc::new(std::sync::OnceLock::new());
        let addr = format!("{}:{}", args.host, args.metrics_port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let health = Health {
            worker: worker_metrics.clone(),
            engine: engine_metrics.clone(),
            store: store_metrics.clone(),
            drain: drain.clone(),
            jobs_queue: args.amqp.jobs_queue.clone(),
            dead_letter_queue: args.amqp.dead_letter_queue.clone(),
            model: model_slot.clone(),
            fault_route: args.fault_injection,
        };
        tokio::spawn(health::serve(listener, health));
        tracing::info!(metrics = %local, broker = broker.describe(), jobs_queue = %args.amqp.jobs_queue, model = args.model.describe(), version = env!("CARGO_PKG_VERSION"), "starting");
        let settings = ModelSettings {
            device: args.device.clone(),
            runs: Runs::Batches(args.max_batch_size),
            image_cache_bytes: 0,
        };
        let Loaded {
            pipeline,
            device,
            dir,
        } = startup::load_for_service(&args.model, &settings, &engine_metrics).await?;
        let store = args
            .store
            .open(&args.model, &dir, &pipeline, &device, store_metrics)
            .await?;
        if let Some(location) = args.store.location() {
            let kind = match StoreLocation::parse(location) {
                StoreLocation::Redis(_) => "redis",
                StoreLocation::File(_) => "file",
            };
            tracing::info!(kind, ttl_s = args.store.ttl()?.as_secs(), "result_store_opened");
        }
        // Every job held may be queued in the engine at once.
        let engine_config = EngineConfig {
            fault_injection: args.fault_injection,
            ..args.images.engine_config(
                args.max_batch_size,
                usize::from(prefetch),
                breaker_cooldown,
            )
        };
        let engine = startup::start_engine(
            pipeline.clone(),
            engine_config,
            engine_metrics,
            drain.clone(),
            true,
        );
        let _ = model_slot.set(engine.clone());
        // As `serve` does: every batch size on a GPU, and the breaker's probe pair.
        startup::warm_up(&engine, &pipeline, args.max_batch_size, true).await?;
        let mut runner = Runner::new(engine, fetcher, job_timeout);
        if let Some(store) = store {
            runner = runner.with_store(store);
        }
        let runner = Arc::new(runner);
        let stop = {
            let drain = drain.clone();
            async move {
                ofa_server::shutdown_signal().await;
                tracing::info!("stopping");
                drain.begin();
            }
        };
        Worker::new(broker, runner, worker_metrics, config)
            .run(stop)
            .await?;
        tracing::info!("exit");
        Ok(())
    })
}
