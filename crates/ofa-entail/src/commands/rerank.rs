//! `ofa-entail rerank`: one image against many sentences (or one sentence against many images),
//! ranked exactly as `POST /rerank` ranks them, through the same engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ofa_api::{rank, Ranking};
use ofa_engine::Pair;
use ofa_engine::{Drain, EngineConfig, EngineMetrics};
use ofa_model::DEFAULT_MAX_PIXELS;

use crate::args::model::ModelArgs;
use crate::startup::{self, ModelSettings, Runs};

#[derive(Args)]
pub struct RerankArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// The image to rank sentences against; several, with one --text, to rank images.
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// A candidate sentence (repeat it), or the one sentence when several images are given.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Candidate sentences, one per line (blank lines skipped).
    #[arg(long)]
    texts_file: Option<PathBuf>,
    /// Optional premise text, read together with the image.
    #[arg(long)]
    premise: Option<String>,
    /// Which answer's probability ranks: yes, no or maybe.
    #[arg(long, default_value = "yes")]
    label: String,
    /// Keep only the best K.
    #[arg(long)]
    top_k: Option<usize>,
    /// Leave out candidates scoring below this probability.
    #[arg(long, default_value_t = 0.0)]
    min_score: f32,
    /// Most pairs in one forward pass.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
}

pub fn run(args: RerankArgs) -> Result<()> {
    let mut texts = args.texts.clone();
    if let Some(f) = &args.texts_file {
        let all =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        texts.extend(
            all.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    let mut images = Vec::with_capacity(args.images.len());
    for p in &args.images {
        let bytes =
            std::fs::read(p).with_context(|| format!("cannot read image {}", p.display()))?;
        images.push(bytes::Bytes::from(bytes));
    }
    let premise = args.premise.clone();
    let pair = |image: &bytes::Bytes, text: &str| Pair {
        image: image.clone(),
        text: text.to_owned(),
        premise: premise.clone(),
        cache_scope: 0,
    };
    let pairs: Vec<Pair> = match (images.as_slice(), texts.as_slice()) {
        ([image], texts) if !texts.is_empty() => texts.iter().map(|t| pair(image, t)).collect(),
        (images, [text]) if images.len() > 1 => images.iter().map(|i| pair(i, text)).collect(),
        _ => anyhow::bail!(
            "give one --image with one or more sentences, or several --image with one --text"
        ),
    };
    let settings = ModelSettings {
        device: args.device.clone(),
        runs: Runs::Once,
        image_cache_bytes: 0,
    };
    let pipeline = startup::load_for_cli(&args.model, &settings)?.pipeline;
    let answers = pipeline.answers().to_vec();
    let ranking = Ranking::new(
        Some(args.label.clone()),
        args.top_k,
        Some(args.min_score),
        &answers,
        usize::MAX,
    )
    .map_err(anyhow::Error::msg)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = EngineConfig {
        max_batch_size: args.max_batch_size.max(1),
        max_batch_wait: Duration::ZERO,
        max_queue: pairs.len(),
        breaker_failures: u32::MAX,
        breaker_cooldown: Duration::from_secs(1),
        breaker_give_up: 0,
        max_image_pixels: args.max_image_pixels,
        max_text_chars: usize::MAX,
        preprocess_threads: cpus,
        preprocess_memory: 2 << 30,
        fault_injection: false,
    };
    let engine = startup::start_engine(
        pipeline,
        config,
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
        false,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let results = runtime.block_on(engine.run_each(pairs, deadline))?;
    let (body, _) = rank(
        results
            .into_iter()
            .map(|r| r.map(|s| s.scores).map_err(|e| e.failure()))
            .collect(),
        &ranking,
    );
    println!("{body}");
    Ok(())
}
