//! `ofa-entail submit FILE`: publish a JSONL file of jobs to the jobs queue with publisher
//! confirms. Lines that are not jobs (or repeat an id) are reported by line number and skipped
//! (`--strict`: nothing is published); exits non-zero if any publish was not confirmed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ofa_queue::Submitter;

use crate::args::jobs::{AmqpArgs, JobSizeArgs};
use crate::observe::progress::Progress;
use ofa_jobs::files::{Input, Line};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Jobs, one JSON object per line (`-` for stdin).
    file: PathBuf,
    /// Fail before publishing anything if any line is not a valid job.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    job_size: JobSizeArgs,
}

/// A line as `submit` takes it: a job to publish, or a problem to report. A job whose id
/// cannot be published is a problem here (`batch` answers it with an error result instead).
fn checked(line: Line) -> Line {
    match line {
        Line::Job { number, job, body } => match ofa_jobs::job::check_id(&job.id) {
            // Named by line number only: the id itself may be what is wrong with it.
            Err(problem) => Line::Skipped {
                number,
                problem: format!("{problem}, skipped"),
            },
            Ok(()) => Line::Job { number, job, body },
        },
        other => other,
    }
}

pub fn run(args: SubmitArgs) -> Result<()> {
    let input = Input::open(&args.file)?;
    let max_job_bytes = args.job_size.bytes()?;
    // First pass: count for the progress bar; with --strict, refuse before publishing.
    let (mut total, mut bad) = (0usize, 0usize);
    for line in input.jobs(max_job_bytes)? {
        match checked(line?) {
            Line::Job { .. } => total += 1,
            Line::Skipped { number, problem } => {
                bad += 1;
                if args.strict {
                    eprintln!("line {number}: {problem}");
                }
            }
        }
    }
    if args.strict && bad > 0 {
        anyhow::bail!("{bad} line(s) are not valid jobs; nothing published (--strict)");
    }
    let broker = args.amqp.broker("submit")?;
    let runtime = crate::args::model::runtime()?;
    let report = runtime.block_on(async {
        let mut submitter = Submitter::open(&broker).await?;
        let mut progress = Progress::new(total, "jobs published");
        let mut confirmed = 0;
        for line in input.jobs(max_job_bytes)? {
            match checked(line?) {
                Line::Job { job, body, .. } => {
                    let now = submitter.send(&job.id, &body).await?;
                    progress.tick((now - confirmed) as usize);
                    confirmed = now;
                }
                Line::Skipped { number, problem } => eprintln!("line {number}: {problem}"),
            }
        }
        let report = submitter.finish().await;
        progress.tick((report.confirmed - confirmed) as usize);
        progress.finish();
        anyhow::Ok(report)
    })?;
    for (id, e) in report.failed.iter().take(10) {
        eprintln!("job {id:?}: {e}");
    }
    println!(
        "published {} jobs to {} ({bad} lines skipped)",
        report.confirmed, args.amqp.jobs_queue
    );
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} job(s) were not confirmed by the broker",
        report.failed.len()
    );
    Ok(())
}
