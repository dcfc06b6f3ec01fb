//! `ofa-entail submit FILE`: publish a JSONL file of jobs to the jobs queue with publisher
//! confirms. Lines that are not jobs (or repeat an id) are reported by line number and skipped
//! (`--strict`: nothing is published); exits non-zero if any publish was not confirmed. The
//! file is streamed, so millions of jobs with inline images need no more memory than a line
//! and the ids; stdin is read into memory first (it is read twice).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
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

/// The input, readable twice: once to check and count, once to publish.
enum Input {
    File(PathBuf),
    Memory(Vec<u8>),
}

enum Line {
    Job { id: String, body: Vec<u8> },
    Skipped { number: usize, problem: String },
}

impl Input {
    /// Every non-blank line, as a job to publish or a line skipped and why.
    fn jobs(&self) -> Result<impl Iterator<Item = Result<Line>> + '_> {
        let reader: Box<dyn BufRead + '_> = match self {
            Input::File(p) => Box::new(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
            )),
            Input::Memory(b) => Box::new(&b[..]),
        };
        let mut seen = HashSet::new();
        Ok(reader
            .split(b'\n')
            .enumerate()
            .filter_map(move |(n, line)| {
                let mut line = match line {
                    Ok(l) => l,
                    Err(e) => return Some(Err(e.into())),
                };
                let end = line.trim_ascii_end().len();
                line.truncate(end);
                let start = line.len() - line.trim_ascii_start().len();
                line.drain(..start);
                if line.is_empty() {
                    return None;
                }
                let skipped = |problem| {
                    Some(Ok(Line::Skipped {
                        number: n + 1,
                        problem,
                    }))
                };
                match Job::parse(&line) {
                    Ok(job) if !seen.insert(job.id.clone()) => {
                        skipped(format!("duplicate id {:?}, skipped", job.id))
                    }
                    Ok(job) => Some(Ok(Line::Job {
                        id: job.id,
                        body: line,
                    })),
                    Err(e) => skipped(format!("not a job: {e}")),
                }
            }))
    }
}

pub fn run(args: SubmitArgs) -> Result<()> {
    let input = if args.file.as_os_str() == "-" {
        let mut text = Vec::new();
        std::io::stdin().lock().read_to_end(&mut text)?;
        Input::Memory(text)
    } else {
        Input::File(args.file.clone())
    };
    // First pass: count for the progress bar; with --strict, refuse before publishing.
    let (mut total, mut bad) = (0usize, 0usize);
    for line in input.jobs()? {
        match line? {
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
    let runtime = crate::model_source::runtime()?;
    let report = runtime.block_on(async {
        let mut submitter = Submitter::open(&broker).await?;
        let mut progress = Progress::new(total, "jobs published");
        let mut confirmed = 0;
        for line in input.jobs()? {
            match line? {
                Line::Job { id, body } => {
                    let now = submitter.send(&id, &body).await?;
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
