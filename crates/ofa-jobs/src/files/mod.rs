//! Jobs from a file rather than a broker: the JSONL job file read as a stream, the results
//! file that makes a run resumable, and the file runner `batch` drives. The same job format,
//! engine and failure classes as the queue worker.

pub mod job_lines;
pub mod results;
pub mod run;

use std::path::{Path, PathBuf};

pub use job_lines::{Input, Line};
pub use run::{FileRun, FileSummary, Progress};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FileError {
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        FileError::Read {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        FileError::Write {
            path: path.to_owned(),
            source,
        }
    }
}
