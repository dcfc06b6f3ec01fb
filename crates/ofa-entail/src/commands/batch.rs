//! `ofa-entail batch FILE --out FILE`: jobs from a JSONL file, results appended to another, with
//! no broker: the same job format, engine and failure classes as the queue worker. Resumable:
//! ids already in the output are skipped, so a killed run continues where it stopped.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ofa_engine::{Drain, EngineMetrics};
use ofa_jobs::{Job, JobResult, Runner};

use crate::args::jobs::{ImageArgs, JobSizeArgs};
use crate::args::model::ModelArgs;
use crate::files::job_lines::{Input, Line};
use crate::files::results;
use crate::observe::progress::Progress;
use crate::startup::{self, ModelSettings, Runs};

#[derive(Args)]
pub struct BatchArgs {
    /// Jobs, one JSON object per line (`-` for stdin).
    file: PathBuf,
    /// Results, one JSON line per job, appended (and read first, to skip finished ids).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 8)]
    max_batch_size: usize,
    /// Attempts for a job whose failure is transient (the model, an image URL's 5xx or time-out)
    /// before it is answered with that error.
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 5)]
    delivery_limit: u32,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    job_size: JobSizeArgs,
}

pub fn run(args: BatchArgs) -> Result<()> {
    let input = Input::open(&args.file)?;
    let max_job_bytes = args.job_size.bytes()?;
    let done = results::finished(&args.out)?;
    // First pass: how many jobs are left, for the progress bar.
    let mut left = 0usize;
    for line in input.jobs(max_job_bytes)? {
        if let Line::Job { job, .. } = line? {
            left += usize::from(!done.contains(&job.id));
        }
    }
    let settings = ModelSettings {
        device: args.device.clone(),
        runs: Runs::Batches(args.max_batch_size),
        image_cache_bytes: 0,
    };
    let (pipeline, _) = startup::load_for_cli(&args.model, &settings)?;
    let chunk = args.max_batch_size.max(1) * 4;
    let engine = startup::start_engine(
        Arc::new(pipeline),
        args.images
            .engine_config(args.max_batch_size, chunk, Duration::from_secs(5)),
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
        false,
    );
    let fetcher = args.images.fetcher()?;
    let runner = Runner::new(engine, fetcher, Duration::from_secs(3600));
    // Nothing stops a file run half-way but the process's end.
    let (_running, never_stop) = tokio::sync::watch::channel(false);
    let mut out = results::open_append(&args.out)?;
    let (model_id, revision) = (args.model.model_id.clone(), args.model.revision.clone());
    let mut progress = Progress::new(left, "jobs");
    let (mut ok, mut errors, mut skipped, mut not_jobs) = (0usize, 0usize, 0usize, 0usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Second pass: chunks of new jobs, with transient failures going round again first.
    let mut lines = input.jobs(max_job_bytes)?;
    let mut retries: VecDeque<(Job, u32)> = VecDeque::new();
    loop {
        let mut take: Vec<(Job, u32)> = retries.drain(..chunk.min(retries.len())).collect();
        let only_retries = !take.is_empty();
        while take.len() < chunk {
            match lines.next().transpose()? {
                None => break,
                Some(Line::Skipped { number, problem }) => {
                    not_jobs += 1;
                    eprintln!("line {number}: {problem}");
                }
                Some(Line::Job { job, .. }) if done.contains(&job.id) => skipped += 1,
                Some(Line::Job { job, .. }) => take.push((job, 1)),
            }
        }
        if take.is_empty() {
            break;
        }
        if only_retries && take.iter().all(|(_, a)| *a > 1) {
            // Nothing new to do meanwhile: give a flaky source a moment.
            std::thread::sleep(Duration::from_millis(500));
        }
        let attempts: Vec<u32> = take.iter().map(|(_, a)| *a).collect();
        let originals: Vec<Job> = take.iter().map(|(j, _)| j.clone()).collect();
        let results: Vec<JobResult> = runtime.block_on(runner.run(
            take.into_iter().map(|(j, _)| j).collect(),
            never_stop.clone(),
        ));
        for ((result, job), attempt) in results.into_iter().zip(originals).zip(attempts) {
            if result.is_transient() && attempt < args.delivery_limit {
                retries.push_back((job, attempt + 1));
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
    }
    progress.finish();
    eprintln!(
        "{ok} ok, {errors} errors, {skipped} already answered, {not_jobs} lines not jobs; results in {}",
        args.out.display()
    );
    Ok(())
}
