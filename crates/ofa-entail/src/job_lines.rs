//! A JSONL file of jobs, streamed: `batch` and `submit` read it twice (count, then run or
//! publish), holding one line and the ids at a time, so millions of jobs with inline images fit
//! in little memory. stdin cannot be read twice and is read into memory.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ofa_jobs::Job;

/// The input, readable twice: once to check and count, once to run or publish.
pub enum Input {
    File(PathBuf),
    Memory(Vec<u8>),
}

pub enum Line {
    Job { job: Job, body: Vec<u8> },
    Skipped { number: usize, problem: String },
}

impl Input {
    /// A file, or `-` for stdin.
    pub fn open(path: &Path) -> Result<Input> {
        Ok(if path.as_os_str() == "-" {
            let mut text = Vec::new();
            std::io::stdin().lock().read_to_end(&mut text)?;
            Input::Memory(text)
        } else {
            Input::File(path.to_owned())
        })
    }

    /// Every non-blank line: a job (parsed, and as it was written) or a line skipped and why.
    pub fn jobs(&self) -> Result<impl Iterator<Item = Result<Line>> + '_> {
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
                    Ok(job) => Some(Ok(Line::Job { job, body: line })),
                    Err(e) => skipped(format!("not a job: {e}")),
                }
            }))
    }
}
