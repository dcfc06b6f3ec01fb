//! `ofa-entail batch FILE --out FILE`: jobs from a JSONL file, results appended to another, with
//! no broker: the same job format, engine and failure classes as the queue worker. Resumable:
//! ids already in the output are skipped, so a killed run continues where it stopped.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ofa_engine::{Drain, EngineMetrics};
use ofa_jobs::{Job, JobResult, Runner};
use ofa_model::Entailment;

use crate::job_args::ImageArgs;
use crate::model_source::ModelArgs;
use crate::progress::Progress;
use crate::results_file;

#[derive(Args)]
pub struct BatchArgs {
    /// Jobs, one JSON object per line (`-` for stdin).
    file: PathBuf,
    /// Results, one JSON line per job, appended (and read first, to skip finished ids).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// CUDA ordinal to run on (a `--features cuda` build); unset: the CPU.
    #[arg(long, env = "GPU_DEVICE")]
    gpu_device: Option<String>,
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Attempts for a job whose failure is transient (the model, an image URL's 5xx or time-out)
    /// before it is answered with that error.
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 5)]
    delivery_limit: u32,
    #[command(flatten)]
    images: ImageArgs,
}

pub fn run(args: BatchArgs) -> Result<()> {
    let input: Vec<String> = if args.file.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()?
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        text.lines().map(str::to_owned).collect()
    };
    let done = results_file::finished(&args.out)?;
    let mut jobs = Vec::new();
    let (mut skipped, mut not_jobs) = (0, 0);
    let mut seen = HashSet::new();
    for (n, line) in input.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Job::parse(line.as_bytes()) {
            Ok(job) if done.contains(&job.id) || !seen.insert(job.id.clone()) => skipped += 1,
            Ok(job) => jobs.push(job),
            Err(e) => {
                not_jobs += 1;
                eprintln!("line {}: not a job: {e}", n + 1);
            }
        }
    }
    let device = crate::device::select_for_cli(args.gpu_device.as_deref())?;
    let dir = args.model.resolve_blocking()?;
    let pipeline = Entailment::load(&dir, &device)?;
    let chunk = args.max_batch_size.max(1) * 4;
    let engine = args.images.engine(
        pipeline,
        args.max_batch_size,
        chunk,
        Duration::from_secs(5),
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
    );
    let fetcher = args.images.fetcher()?;
    let runner = Runner::new(engine, fetcher, Duration::from_secs(3600));
    let mut out = results_file::open_append(&args.out)?;
    let (model_id, revision) = (args.model.model_id.clone(), args.model.revision.clone());
    let mut progress = Progress::new(jobs.len(), "jobs");
    let (mut ok, mut errors) = (0usize, 0usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut pending: std::collections::VecDeque<(Job, u32)> =
        jobs.into_iter().map(|j| (j, 1)).collect();
    while !pending.is_empty() {
        let take: Vec<(Job, u32)> = pending.drain(..chunk.min(pending.len())).collect();
        let attempts: Vec<u32> = take.iter().map(|(_, a)| *a).collect();
        let originals: Vec<Job> = take.iter().map(|(j, _)| j.clone()).collect();
        let results: Vec<JobResult> =
            runtime.block_on(runner.run(take.into_iter().map(|(j, _)| j).collect()));
        let mut retry = false;
        for ((result, job), attempt) in results.into_iter().zip(originals).zip(attempts) {
            if result.is_transient() && attempt < args.delivery_limit {
                pending.push_back((job, attempt + 1));
                retry = true;
                continue;
            }
            if result.outcome.is_ok() {
                ok += 1;
            } else {
                errors += 1;
            }
            writeln!(out, "{}", result.to_json(&model_id, &revision))?;
            progress.tick(1);
        }
        // Results are on disk before the next chunk: a kill loses at most work in flight.
        out.flush()?;
        out.sync_data()?;
        if retry {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    progress.finish();
    eprintln!(
        "{ok} ok, {errors} errors, {skipped} already answered, {not_jobs} lines not jobs; results in {}",
        args.out.display()
    );
    Ok(())
}
