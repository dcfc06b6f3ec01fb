//! JSONL files of jobs and results, streamed with bounded lines (`batch`, `submit`, `collect`).

pub mod job_lines;
pub mod results;
