//! `ofa-entail batch FILE --out FILE`: jobs from a JSONL file, results appended to another, with
//! no broker: the same job format, engine and failure classes as the queue worker. Resumable:
//! ids already in the output are skipped, so a killed run continues where it stopped. With
//! `RESULT_STORE`, jobs whose image and text were scored before are answered from the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ofa_engine::{Drain, EngineMetrics};
use ofa_jobs::files::{self, FileRun, FileSummary, Input};
use ofa_jobs::store::StoreMetrics;
use ofa_jobs::Runner;

use crate::args::jobs::{ImageArgs, JobSizeArgs};
use crate::args::model::ModelArgs;
use crate::args::store::StoreArgs;
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
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: BatchArgs) -> Result<()> {
    let input = Input::open(&args.file)?;
    let file_run = FileRun {
        chunk: args.max_batch_size.max(1) * 4,
        delivery_limit: args.delivery_limit,
        max_job_bytes: args.job_size.bytes()?,
        retry_pause: Duration::from_millis(500),
        model_id: args.model.model_id.clone(),
        revision: args.model.revision.clone(),
    };
    // First pass: how many jobs are left, for the progress bar.
    let left = file_run.pending(&input, &args.out)?;
    let settings = ModelSettings {
        device: args.device.clone(),
        runs: Runs::Batches(args.max_batch_size),
        image_cache_bytes: 0,
    };
    let loaded = startup::load_for_cli(&args.model, &settings)?;
    let engine = startup::start_engine(
        loaded.pipeline.clone(),
        args.images
            .engine_config(args.max_batch_size, file_run.chunk, Duration::from_secs(5)),
        Arc::new(EngineMetrics::default()),
        Arc::new(Drain::default()),
        false,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let metrics = Arc::new(StoreMetrics::default());
    let store = runtime.block_on(args.store.open(
        &args.model,
        &loaded.dir,
        &loaded.pipeline,
        &loaded.device,
        metrics.clone(),
    ))?;
    let mut runner = Runner::new(engine, args.images.fetcher()?, Duration::from_secs(3600));
    if let Some(store) = store {
        runner = runner.with_store(store);
    }
    let mut progress = Shown {
        bar: Progress::new(left, "jobs"),
        from_store: 0,
        store: args.store.location().is_some(),
    };
    let summary = file_run.run(&runner, runtime.handle(), &input, &args.out, &mut progress)?;
    let bar = progress.bar;
    bar.finish();
    let FileSummary {
        ok,
        from_store,
        errors,
        skipped,
        not_jobs,
    } = summary;
    let stored = if args.store.location().is_some() {
        let not_modified = metrics.not_modified.get();
        format!(" ({from_store} from the result store, {not_modified} images not modified)")
    } else {
        String::new()
    };
    eprintln!(
        "{ok} ok{stored}, {errors} errors, {skipped} already answered, {not_jobs} lines not jobs; results in {}",
        args.out.display()
    );
    Ok(())
}

/// The run's steps on the terminal: a progress bar (with how many the store answered), and
/// skipped lines by number.
struct Shown {
    bar: Progress,
    from_store: usize,
    store: bool,
}

impl files::Progress for Shown {
    fn answered(&mut self, from_store: bool) {
        if from_store {
            self.from_store += 1;
            self.bar
                .set_note(format!("{} from the result store", self.from_store));
        } else if self.store && self.from_store == 0 {
            self.bar.set_note("0 from the result store".into());
        }
        self.bar.tick(1);
    }

    fn line_skipped(&mut self, number: usize, problem: &str) {
        eprintln!("line {number}: {problem}");
    }
}
