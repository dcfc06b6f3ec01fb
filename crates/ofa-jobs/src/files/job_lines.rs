//! A JSONL file of jobs, streamed: `batch` and `submit` read it twice (count, then run or
//! publish), holding one line and the ids at a time, so millions of jobs with inline images fit
//! in little memory; a line over `MAX_JOB_BYTES` is skipped as it is read, never held whole.
//! stdin cannot be read twice and is read into memory.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::FileError;
use crate::Job;

/// The input, readable twice: once to check and count, once to run or publish.
pub enum Input {
    File(PathBuf),
    Memory(Vec<u8>),
}

pub enum Line {
    Job {
        number: usize,
        job: Job,
        body: Vec<u8>,
    },
    Skipped {
        number: usize,
        problem: String,
    },
}

impl Input {
    /// A file, or `-` for stdin.
    pub fn open(path: &Path) -> Result<Input, FileError> {
        Ok(if path.as_os_str() == "-" {
            let mut text = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut text)
                .map_err(|e| FileError::read(path, e))?;
            Input::Memory(text)
        } else {
            Input::File(path.to_owned())
        })
    }

    /// Every non-blank line: a job (parsed, and as it was written) or a line skipped and why
    /// (not a job, a repeated id, longer than `max_bytes`).
    pub fn jobs(
        &self,
        max_bytes: usize,
    ) -> Result<impl Iterator<Item = Result<Line, FileError>> + '_, FileError> {
        let path = match self {
            Input::File(p) => p.as_path(),
            Input::Memory(_) => Path::new("-"),
        };
        let reader: Box<dyn BufRead + '_> = match self {
            Input::File(p) => Box::new(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(p).map_err(|e| FileError::read(p, e))?,
            )),
            Input::Memory(b) => Box::new(&b[..]),
        };
        let mut seen = HashSet::new();
        Ok(BoundedLines { reader, max_bytes }
            .enumerate()
            .filter_map(move |(n, line)| {
                let mut line = match line {
                    Ok(Bounded::Line(l)) => l,
                    Ok(Bounded::TooLong(len)) => {
                        return Some(Ok(Line::Skipped {
                            number: n + 1,
                            problem: format!(
                                "{len} bytes, longer than MAX_JOB_BYTES ({max_bytes}), skipped"
                            ),
                        }))
                    }
                    Err(e) => return Some(Err(FileError::read(path, e))),
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
                        number: n + 1,
                        job,
                        body: line,
                    })),
                    Err(e) => skipped(format!("not a job: {e}")),
                }
            }))
    }
}

/// A line as read: whole, or only its length once it passed the limit.
enum Bounded {
    Line(Vec<u8>),
    TooLong(usize),
}

/// Lines of at most `max_bytes`: a longer one is read past, not kept, so one huge line costs
/// no more memory than the limit.
struct BoundedLines<R> {
    reader: R,
    max_bytes: usize,
}

impl<R: BufRead> Iterator for BoundedLines<R> {
    type Item = std::io::Result<Bounded>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        let mut len = 0usize;
        let mut any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e)),
            };
            if buf.is_empty() {
                break;
            }
            any = true;
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if len + take <= self.max_bytes {
                line.extend_from_slice(&buf[..take]);
            } else {
                line = Vec::new();
            }
            len += take;
            self.reader.consume(take + usize::from(end));
            if end {
                break;
            }
        }
        if !any {
            return None;
        }
        Some(Ok(if len > self.max_bytes {
            Bounded::TooLong(len)
        } else {
            Bounded::Line(line)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_over_the_limit_is_skipped_by_number_and_the_rest_read() {
        let long = format!(
            r#"{{"id": "b", "text": "{}", "image": "aGk="}}"#,
            "x".repeat(500)
        );
        let text = format!(
            "{}\n{long}\n\n{}\n",
            r#"{"id": "a", "text": "t", "image": "aGk="}"#,
            r#"{"id": "c", "text": "t", "image": "aGk="}"#
        );
        let input = Input::Memory(text.into_bytes());
        let lines: Vec<Line> = input.jobs(100).unwrap().map(Result::unwrap).collect();
        assert_eq!(lines.len(), 3);
        assert!(matches!(&lines[0], Line::Job { job, .. } if job.id == "a"));
        match &lines[1] {
            Line::Skipped { number, problem } => {
                assert_eq!(*number, 2);
                assert!(problem.contains("MAX_JOB_BYTES"), "{problem}");
            }
            _ => panic!("the long line is skipped"),
        }
        assert!(matches!(&lines[2], Line::Job { job, .. } if job.id == "c"));
        // A last line without a newline is still a line.
        let input = Input::Memory(br#"{"id": "z", "text": "t", "image": "aGk="}"#.to_vec());
        assert_eq!(input.jobs(100).unwrap().count(), 1);
    }
}
