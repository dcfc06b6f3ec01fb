//! `ofa-entail submit FILE`: publish a JSONL file of jobs to the jobs queue with publisher
//! confirms. Lines that are not jobs are reported by line number and skipped (`--strict`:
//! nothing is published); exits non-zero if any publish was not confirmed.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ofa_jobs::Job;
use ofa_queue::Submitter;

use crate::job_args::AmqpArgs;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Jobs, one JSON object per line (`-` for stdin).
    file: PathBuf,
    /// Fail before publishing anything if any line is not a valid job.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    amqp: AmqpArgs,
}

pub fn run(args: SubmitArgs) -> Result<()> {
    let mut text = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut text)?;
    } else {
        text = std::fs::read(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
    }
    let mut jobs: Vec<(String, &[u8])> = Vec::new();
    let mut bad = 0usize;
    let mut seen = HashSet::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match Job::parse(line) {
            Ok(job) if !seen.insert(job.id.clone()) => {
                bad += 1;
                eprintln!("line {}: duplicate id {:?}, skipped", n + 1, job.id);
            }
            Ok(job) => jobs.push((job.id, line)),
            Err(e) => {
                bad += 1;
                eprintln!("line {}: not a job: {e}", n + 1);
            }
        }
    }
    if args.strict && bad > 0 {
        anyhow::bail!("{bad} line(s) are not valid jobs; nothing published (--strict)");
    }
    let broker = args.amqp.broker("submit")?;
    let runtime = crate::model_source::runtime()?;
    let report = runtime.block_on(async {
        let mut submitter = Submitter::open(&broker).await?;
        let mut progress = Progress::new(jobs.len(), "jobs published");
        let mut confirmed = 0;
        for (id, body) in &jobs {
            let now = submitter.send(id, body).await?;
            progress.tick((now - confirmed) as usize);
            confirmed = now;
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
