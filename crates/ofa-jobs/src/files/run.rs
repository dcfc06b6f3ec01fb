//! The file runner: new jobs of a job file in chunks through the [`Runner`], transient
//! failures going round again (up to the delivery limit) before new work, each chunk's
//! results appended and synced before the next, so a killed run loses at most the chunk in
//! flight and a rerun skips what was answered.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{FileError, Input, Line};
use crate::{Job, JobResult, Runner};

/// How a file run goes; the paths and the runner are its arguments.
#[derive(Debug, Clone)]
pub struct FileRun {
    /// Jobs handed to the runner at once.
    pub chunk: usize,
    /// Attempts for a job whose failure is transient before it is answered with that error.
    pub delivery_limit: u32,
    /// Lines longer than this are skipped unread.
    pub max_job_bytes: usize,
    /// Wait before a chunk of retries only, so a flaky source gets a moment.
    pub retry_pause: Duration,
    /// Written into each result.
    pub model_id: String,
    pub revision: String,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    pub ok: usize,
    pub errors: usize,
    /// Of `ok`: answered from the result store.
    pub from_store: usize,
    /// Jobs whose id already had a result.
    pub skipped: usize,
    /// Lines that were not jobs (or too long, or repeated an id).
    pub not_jobs: usize,
}

/// Told of each step, for a progress bar and the operator's messages.
pub trait Progress {
    /// One job answered; `from_store` when the result store gave its answer.
    fn answered(&mut self, from_store: bool);
    fn line_skipped(&mut self, number: usize, problem: &str);
}

impl FileRun {
    /// Jobs in `input` that have no result in `out` yet.
    pub fn pending(&self, input: &Input, out: &Path) -> Result<usize, FileError> {
        let done = super::results::finished(out)?;
        let mut left = 0usize;
        for line in input.jobs(self.max_job_bytes)? {
            if let Line::Job { job, .. } = line? {
                left += usize::from(!done.contains(&job.id));
            }
        }
        Ok(left)
    }

    /// Runs every job of `input` without a result in `out`, appending results to `out`.
    /// Blocks; the runner's futures run on `runtime`.
    pub fn run(
        &self,
        runner: &Runner,
        runtime: &tokio::runtime::Handle,
        input: &Input,
        out: &Path,
        progress: &mut dyn Progress,
    ) -> Result<FileSummary, FileError> {
        let done: HashSet<String> = super::results::finished(out)?;
        let mut file = super::results::open_append(out)?;
        let chunk = self.chunk.max(1);
        // Nothing stops a file run half-way but the process's end.
        let (_running, never_stop) = tokio::sync::watch::channel(false);
        let mut summary = FileSummary::default();
        let mut lines = input.jobs(self.max_job_bytes)?;
        let mut retries: VecDeque<(Job, u32)> = VecDeque::new();
        loop {
            let mut take: Vec<(Job, u32)> = retries.drain(..chunk.min(retries.len())).collect();
            let only_retries = !take.is_empty();
            while take.len() < chunk {
                match lines.next().transpose()? {
                    None => break,
                    Some(Line::Skipped { number, problem }) => {
                        summary.not_jobs += 1;
                        progress.line_skipped(number, &problem);
                    }
                    Some(Line::Job { job, .. }) if done.contains(&job.id) => summary.skipped += 1,
                    Some(Line::Job { job, .. }) => take.push((job, 1)),
                }
            }
            if take.is_empty() {
                break;
            }
            if only_retries && take.iter().all(|(_, a)| *a > 1) {
                std::thread::sleep(self.retry_pause);
            }
            let attempts: Vec<u32> = take.iter().map(|(_, a)| *a).collect();
            let originals: Vec<Job> = take.iter().map(|(j, _)| j.clone()).collect();
            let results: Vec<JobResult> = runtime.block_on(runner.run(
                take.into_iter().map(|(j, _)| j).collect(),
                never_stop.clone(),
            ));
            for ((result, job), attempt) in results.into_iter().zip(originals).zip(attempts) {
                if result.is_transient() && attempt < self.delivery_limit {
                    retries.push_back((job, attempt + 1));
                    continue;
                }
                if result.outcome.is_ok() {
                    summary.ok += 1;
                    summary.from_store += usize::from(result.cached);
                } else {
                    summary.errors += 1;
                }
                writeln!(file, "{}", result.to_json(&self.model_id, &self.revision))
                    .map_err(|e| FileError::write(out, e))?;
                progress.answered(result.cached);
            }
            // Results are on disk before the next chunk: a kill loses at most work in flight.
            file.flush()
                .and_then(|()| file.sync_data())
                .map_err(|e| FileError::write(out, e))?;
        }
        Ok(summary)
    }
}
