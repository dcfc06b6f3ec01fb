//! `ofa-entail eval --data FILE.jsonl [--precision P] [--compare P2] [--json]`: a labelled set
//! through the engine, as the service runs it; accuracy, the confusion matrix and throughput,
//! and with `--compare` how far a second precision strays from the first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use ofa_engine::{Drain, EngineConfig, EngineMetrics, Pair};
use ofa_model::{Device, Entailment, Precision};
use serde_json::json;

use crate::args::model::ModelArgs;
use crate::evaluation::data::{self, Example};
use crate::evaluation::report::{self, Run};
use crate::observe::progress::Progress;
use crate::startup::{self, ModelSettings, Runs};

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled examples, one JSON object a line: image (a path relative to the file),
    /// hypothesis, optional premise, label (yes/no/maybe or entailment/contradiction/neutral).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// Run the set a second time in this precision and report how the two agree.
    #[arg(long, value_parser = crate::args::device::parse_precision)]
    compare: Option<Precision>,
    /// The report as JSON, for scripts.
    #[arg(long)]
    json: bool,
    /// Most pairs in one forward pass.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Longer hypotheses or premises are reported as errors, as the service refuses them.
    #[arg(long, env = "MAX_TEXT_CHARS", default_value_t = 2000)]
    max_text_chars: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let (device, precision) = args.device.open_for_cli()?;
    if let Some(p) = args.compare {
        p.check(&device)?;
    }
    let dir = args.model.resolve_blocking()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    let mut examples: Vec<Example> = Vec::new();
    for p in std::iter::once(precision).chain(args.compare) {
        // One model at a time: the second precision's run does not share memory with the first.
        let settings = ModelSettings {
            device: args.device.clone(),
            runs: Runs::Batches(args.max_batch_size),
            image_cache_bytes: 0,
        };
        let pipeline = startup::load(&dir, &device, p, &settings)?;
        if examples.is_empty() {
            examples = data::read(&args.data, pipeline.answers())?;
        }
        runs.push(runtime.block_on(score(pipeline, &examples, &device, p, &args)));
    }
    let mut report = json!({
        "data": args.data.display().to_string(),
        "examples": examples.len(),
        "runs": runs.iter().map(|r| r.json(&examples)).collect::<Vec<_>>(),
    });
    if let [a, b] = runs.as_slice() {
        report["comparison"] = report::agreement(a, b, &examples);
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{}", report::text(&report));
    }
    Ok(())
}

async fn score(
    pipeline: Entailment,
    examples: &[Example],
    device: &Device,
    precision: Precision,
    args: &EvalArgs,
) -> Run {
    let max_batch_size = args.max_batch_size;
    let answers = pipeline.answers().to_vec();
    let chunk = max_batch_size.max(1) * 4;
    let engine = startup::start_engine(
        Arc::new(pipeline),
        EngineConfig {
            max_batch_size: max_batch_size.max(1),
            max_queue: chunk,
            max_batch_wait: Duration::ZERO,
            max_text_chars: args.max_text_chars,
            ..EngineConfig::default()
        },
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
        false,
    );
    let mut progress = Progress::new(examples.len(), "pairs");
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(examples.len());
    for part in examples.chunks(chunk) {
        let mut pairs = Vec::new();
        let mut slots = Vec::new();
        for e in part {
            match std::fs::read(&e.image) {
                Ok(bytes) => {
                    slots.push(Ok(pairs.len()));
                    pairs.push(Pair {
                        image: bytes.into(),
                        text: e.hypothesis.clone(),
                        premise: e.premise.clone(),
                        cache_scope: 0,
                    });
                }
                Err(err) => slots.push(Err(format!("{}: {err}", e.image.display()))),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3600);
        let n = pairs.len();
        let scored: Vec<Result<Vec<f32>, String>> = match engine.run_each(pairs, deadline).await {
            Ok(all) => all
                .into_iter()
                .map(|r| r.map(|s| s.scores.probs).map_err(|e| e.to_string()))
                .collect(),
            Err(e) => vec![Err(e.to_string()); n],
        };
        for slot in slots {
            outcomes.push(slot.and_then(|i| scored[i].clone()));
        }
        progress.tick(part.len());
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    engine.shutdown(Duration::from_secs(5));
    Run {
        precision: precision.name().into(),
        device: crate::args::device::name(device),
        answers,
        outcomes,
        seconds,
    }
}
