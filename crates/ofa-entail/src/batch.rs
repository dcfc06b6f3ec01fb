//! `ofa-entail batch FILE --out FILE`: jobs from a JSONL file, results appended to another, with
//! no broker: the same job format, engine and failure classes as the queue worker. Resumable:
//! ids already in the output are skipped, so a killed run continues where it stopped.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ofa_engine::{Drain, Engine, EngineConfig, EngineMetrics};
use ofa_jobs::{Fetcher, ImageSettings, Job, JobResult, Runner};
use ofa_model::{image::DEFAULT_MAX_PIXELS, Entailment};

use crate::model_source::ModelArgs;

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
    /// Directory that `image_path` is relative to; unset, paths are refused.
    #[arg(long, env = "IMAGE_ROOT")]
    image_root: Option<PathBuf>,
    /// Comma-separated hosts `image_url` may name; empty: any.
    #[arg(long, env = "IMAGE_URL_ALLOW", default_value = "")]
    image_url_allow: String,
    /// Largest image in bytes, from any source (suffixes KB, MB).
    #[arg(long, env = "PAYLOAD_LIMIT", default_value = "10MB")]
    payload_limit: String,
    /// Seconds to connect to an image URL, and for its whole download.
    #[arg(long, env = "IMAGE_URL_TIMEOUT", default_value_t = 30.0)]
    image_url_timeout: f64,
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    #[arg(long, env = "MAX_TEXT_CHARS", default_value_t = 2000)]
    max_text_chars: usize,
}

/// Ids that already have a result in `out`. A last line cut short by a kill is removed: that
/// job runs again, and the file stays one JSON object per line.
fn finished(out: &PathBuf) -> Result<HashSet<String>> {
    let mut done = HashSet::new();
    let Ok(text) = std::fs::read(out) else {
        return Ok(done);
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .with_context(|| format!("cannot repair {}", out.display()))?;
        f.set_len(whole as u64)?;
    }
    for line in text[..whole].split(|&b| b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
            if let Some(id) = v["id"].as_str() {
                done.insert(id.to_owned());
            }
        }
    }
    Ok(done)
}

struct Progress {
    bar: bool,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn tick(&mut self, n: usize) {
        self.done += n;
        if !self.bar || self.last.elapsed() < Duration::from_millis(200) && self.done < self.total {
            return;
        }
        self.last = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        let width = 30;
        let filled = width * self.done / self.total.max(1);
        eprint!(
            "\r[{}{}] {}/{} jobs, {rate:.1}/s, ETA {eta:.0} s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total
        );
        if self.done >= self.total {
            eprintln!();
        }
    }
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
    let done = finished(&args.out)?;
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine = Arc::new(Engine::start(
        Arc::new(pipeline),
        EngineConfig {
            max_batch_size: args.max_batch_size.max(1),
            max_batch_wait: Duration::ZERO,
            max_queue: chunk,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(5),
            max_image_pixels: args.max_image_pixels,
            max_text_chars: args.max_text_chars,
            preprocess_threads: cpus,
            preprocess_memory: 768 << 20,
            fault_injection: false,
        },
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
    ));
    let timeout = Duration::from_secs_f64(args.image_url_timeout.max(0.0));
    let fetcher = Fetcher::new(ImageSettings {
        root: args.image_root.clone(),
        url_allow: args
            .image_url_allow
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        max_bytes: crate::serve::parse_bytes("PAYLOAD_LIMIT", &args.payload_limit)?,
        connect_timeout: timeout,
        read_timeout: timeout,
        max_redirects: 5,
    })?;
    let runner = Runner::new(engine, fetcher, Duration::from_secs(3600));
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("cannot open {}", args.out.display()))?;
    let (model_id, revision) = (args.model.model_id.clone(), args.model.revision.clone());
    let mut progress = Progress {
        bar: std::io::stderr().is_terminal(),
        total: jobs.len(),
        done: 0,
        started: Instant::now(),
        last: Instant::now(),
    };
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
    eprintln!(
        "{ok} ok, {errors} errors, {skipped} already answered, {not_jobs} lines not jobs; results in {}",
        args.out.display()
    );
    Ok(())
}
