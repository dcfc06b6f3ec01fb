//! `ofa-entail serve`: flags and environment variables → engine and server configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ofa_engine::{Drain, EngineConfig, EngineMetrics};
use ofa_fetch::{AllowList, UrlFetcher, UrlSettings};
use ofa_model::DEFAULT_MAX_PIXELS;
use ofa_server::conn::ConnLimits;
use ofa_server::{AppState, ServerConfig};

use crate::args::flags::{parse_bytes, seconds};
use crate::args::model::ModelArgs;
use crate::startup::{self, Loaded, ModelSettings, Runs};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    /// Also append JSON log lines to this file.
    #[arg(long, env = "LOG_PATH")]
    log_path: Option<PathBuf>,
    /// json or text (stdout; the file is always JSON).
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Which events are logged: a level (`info`, `warn`) or `RUST_LOG`-style directives.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// Most inference requests handled at once, counted once their body has arrived (429
    /// beyond); 0 = bounded by the queue only.
    #[arg(long, env = "MAX_CONCURRENCY", default_value_t = 0)]
    max_concurrency: usize,
    /// Most pairs in one forward pass.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    #[arg(long, env = "MAX_BATCH_WAIT_MS", default_value_t = 0)]
    max_batch_wait_ms: u64,
    /// Pairs admitted and not yet running (preprocessing included); 429 beyond, and a batch
    /// larger than this gets 413.
    #[arg(long, env = "MAX_QUEUE", default_value_t = 64)]
    max_queue: usize,
    /// Most items in one /predict/batch or KServe request.
    #[arg(long, env = "MAX_BATCH_ITEMS", default_value_t = 32)]
    max_batch_items: usize,
    /// Most candidates in one /rerank request, and the most of any rerank request scored at
    /// once.
    #[arg(long, env = "MAX_RERANK_CANDIDATES", default_value_t = 64)]
    max_rerank_candidates: usize,
    /// Most documents in one /v1/rerank or /v2/rerank request (Cohere's and Jina's shape),
    /// scored in chunks of MAX_RERANK_CANDIDATES or half of MAX_QUEUE, whichever is smaller.
    #[arg(long, env = "MAX_RERANK_DOCUMENTS", default_value_t = 1000)]
    max_rerank_documents: usize,
    /// Megabytes of image features kept across requests (least recently used out), so one
    /// photo checked against many sentences runs the ResNet once; 0 = off.
    #[arg(long, env = "IMAGE_CACHE_MB", default_value_t = 0)]
    image_cache_mb: u64,
    /// Images decoded at once; 0 = the CPUs.
    #[arg(long, env = "PREPROCESS_THREADS", default_value_t = 0)]
    preprocess_threads: usize,
    /// Memory all images being decoded may hold together, estimated from each header before
    /// decoding (suffixes KB, MB, GB); an image needing more than all of it gets 413.
    #[arg(long, env = "PREPROCESS_MEMORY", default_value = "768MB")]
    preprocess_memory: String,
    /// Open connections at most; past it the connection idle longest is closed. Kept under the
    /// open-files limit.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// Seconds a connection may take to send complete request headers.
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a request body may take to arrive (408 beyond).
    #[arg(long, env = "BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT", default_value_t = 75.0)]
    keep_alive_timeout: f64,
    #[command(flatten)]
    access: crate::args::access::AccessArgs,
    /// Largest request body in bytes (suffixes KB, MB accepted).
    #[arg(long, env = "PAYLOAD_LIMIT", default_value = "10MB")]
    payload_limit: String,
    /// Comma-separated `host[:port]`, `*.domain[:port]` or CIDR entries an image URL in a
    /// request must match (a port-less entry admits 80 and 443); empty: any URL whose
    /// addresses are all public. Internal addresses are fetched only when an entry re-admits
    /// them (README).
    #[arg(long, env = "IMAGE_URL_ALLOW", default_value = "")]
    image_url_allow: String,
    /// Seconds one image URL may take, redirects and download included (the request's
    /// deadline bounds it too). Its size is bounded by PAYLOAD_LIMIT.
    #[arg(long, env = "IMAGE_URL_TIMEOUT", default_value_t = 10.0)]
    image_url_timeout: f64,
    /// Memory all request bodies being read and parsed may hold together (each counts three
    /// times its size); past it, 429.
    #[arg(long, env = "UPLOAD_MEMORY", default_value = "256MB")]
    upload_memory: String,
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    #[arg(long, env = "MAX_TEXT_CHARS", default_value_t = 2000)]
    max_text_chars: usize,
    /// Seconds from arrival to answer; later requests get 504.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 30.0)]
    request_timeout: f64,
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 3)]
    breaker_failures: u32,
    /// Seconds the breaker stays open.
    #[arg(long, env = "BREAKER_COOLDOWN", default_value_t = 60.0)]
    breaker_cooldown: f64,
    /// Failed probes in a row (one per cool-down) after which /healthz fails, so that the
    /// orchestrator restarts the process; 0: never.
    #[arg(long, env = "BREAKER_GIVE_UP", default_value_t = 3)]
    breaker_give_up: u32,
    /// Run one full batch before reporting ready.
    #[arg(long, env = "WARMUP", default_value_t = true, action = clap::ArgAction::Set)]
    warmup: bool,
    /// Seconds to keep serving after SIGTERM before closing the listener.
    #[arg(long, env = "DRAIN_DELAY", default_value_t = 5.0)]
    drain_delay: f64,
    /// Seconds allowed to finish in-flight and queued work after the listener closes.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Test-only: enables POST /debug/fault. Never set in production.
    #[arg(long, env = "FAULT_INJECTION", default_value_t = false, action = clap::ArgAction::Set)]
    fault_injection: bool,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let _log =
        crate::args::flags::logger(&args.log_format, args.log_path.as_deref(), &args.log_filter)?;
    let access = args.access.config()?;
    let tracing = crate::observe::otel::provider()?;
    anyhow::ensure!(args.max_batch_size > 0, "MAX_BATCH_SIZE must be at least 1");
    anyhow::ensure!(args.max_queue > 0, "MAX_QUEUE must be at least 1");
    anyhow::ensure!(
        args.max_batch_items > 0,
        "MAX_BATCH_ITEMS must be at least 1"
    );
    anyhow::ensure!(
        args.max_rerank_candidates > 0,
        "MAX_RERANK_CANDIDATES must be at least 1"
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Descriptors beyond connections: the model files, logs, the listener, blocking threads.
    let fd_room = ofa_server::conn::open_files_limit()
        .map_or(usize::MAX, |n| (n as usize).saturating_sub(64).max(16));
    let connections = ConnLimits {
        max_connections: args.max_connections.clamp(1, fd_room),
        header_timeout: seconds("HEADER_TIMEOUT", args.header_timeout)?,
        keep_alive_timeout: seconds("KEEP_ALIVE_TIMEOUT", args.keep_alive_timeout)?,
        body_timeout: seconds("BODY_TIMEOUT", args.body_timeout)?,
    };
    let server_cfg = ServerConfig {
        request_timeout: seconds("REQUEST_TIMEOUT", args.request_timeout)?,
        payload_limit: parse_bytes("PAYLOAD_LIMIT", &args.payload_limit)?,
        upload_memory: parse_bytes("UPLOAD_MEMORY", &args.upload_memory)?,
        max_batch_items: args.max_batch_items,
        max_text_chars: args.max_text_chars,
        max_rerank_candidates: args.max_rerank_candidates,
        max_rerank_documents: args.max_rerank_documents.max(1),
        image_urls: Some(UrlFetcher::new(UrlSettings {
            allow: AllowList::parse(&args.image_url_allow).context("IMAGE_URL_ALLOW")?,
            max_bytes: parse_bytes("PAYLOAD_LIMIT", &args.payload_limit)?,
            timeout: seconds("IMAGE_URL_TIMEOUT", args.image_url_timeout)?,
            max_redirects: 5,
        })?),
        connections,
        max_concurrency: (args.max_concurrency > 0).then_some(args.max_concurrency),
        access,
        drain_delay: seconds("DRAIN_DELAY", args.drain_delay)?,
        shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", args.shutdown_timeout)?,
        model_id: args.model.model_id.clone(),
        model_revision: args.model.revision.clone(),
        fault_route: args.fault_injection,
        tracing: tracing.clone(),
    };
    let engine_cfg = EngineConfig {
        max_batch_size: args.max_batch_size,
        max_batch_wait: Duration::from_millis(args.max_batch_wait_ms),
        max_queue: args.max_queue,
        breaker_failures: args.breaker_failures,
        breaker_cooldown: seconds("BREAKER_COOLDOWN", args.breaker_cooldown)?,
        breaker_give_up: args.breaker_give_up,
        max_image_pixels: args.max_image_pixels,
        max_text_chars: args.max_text_chars,
        preprocess_threads: if args.preprocess_threads == 0 {
            cpus
        } else {
            args.preprocess_threads
        },
        preprocess_memory: parse_bytes("PREPROCESS_MEMORY", &args.preprocess_memory)? as u64,
        fault_injection: args.fault_injection,
    };
    anyhow::ensure!(
        engine_cfg.preprocess_memory >= 1 << 20,
        "PREPROCESS_MEMORY must be at least 1MB"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let metrics = Arc::new(EngineMetrics::default());
        let drain = Arc::new(Drain::default());
        let state = AppState::new(server_cfg, metrics.clone(), drain.clone());
        tracing::info!(listen = %local, model = args.model.describe(), version = env!("CARGO_PKG_VERSION"), "starting");
        let server = tokio::spawn(ofa_server::serve(
            listener,
            state.clone(),
            ofa_server::shutdown_signal(),
        ));
        // Serving (liveness, a 503 readiness) while the model is fetched and loaded.
        let settings = ModelSettings {
            device: args.device.clone(),
            runs: Runs::Batches(args.max_batch_size),
            image_cache_bytes: args.image_cache_mb.saturating_mul(1 << 20),
        };
        let Loaded {
            pipeline, device, ..
        } = startup::load_for_service(&args.model, &settings, &metrics).await?;
        let model_info = serde_json::json!({
            "device": crate::args::device::name(&device),
            "precision": pipeline.precision(),
            "resnet_layout": pipeline.model().resnet_layout(),
            "resnet_layout_tuning": pipeline.model().resnet_layout_tuning(),
            "gpu": ofa_model::gpu::info(&device),
            "config": pipeline.config,
            "runtime": pipeline.runtime,
            "answers": pipeline.answers(),
            "image_cache_mb": args.image_cache_mb,
        });
        let engine = startup::start_engine(
            pipeline.clone(),
            engine_cfg,
            metrics.clone(),
            drain,
            true,
        );
        startup::warm_up(&engine, &pipeline, args.max_batch_size, args.warmup).await?;
        if args.warmup {
            let graphs = pipeline.model().cuda_graphs();
            if graphs.max_batch > 0 && !device.is_cpu() {
                tracing::info!(recorded = graphs.recorded, json.checks = %serde_json::json!(graphs.checks), json.plain = %serde_json::json!(graphs.plain), "cuda_graphs");
            }
        }
        state.set_engine(engine, model_info);
        tracing::info!(listen = %local, "ready");
        server.await??;
        if let Some(provider) = tracing {
            // Spans still buffered are sent before the process ends.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        tracing::info!("exit");
        Ok(())
    })
}
