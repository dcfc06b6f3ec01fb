//! Bulk jobs: "does this image support this sentence?" for every row of a file or a queue.
//! A job is one JSON object (`id`, `text`, optional `premise` and `meta`, exactly one image
//! source); its result is one JSON object with the `/predict` answer or an error. Every front
//! end for jobs (the file runner in [`files`], the broker worker) parses, fetches and classifies
//! failures here, and scores through the same engine as the HTTP service.

mod acquire;
pub mod fetch;
pub mod files;
pub mod job;
pub mod outcome;
pub mod runner;
pub mod store;

pub use fetch::{Fetcher, ImageSettings};
pub use job::{ImageSource, Job, NotAJob};
pub use outcome::{Failure, JobResult};
pub use runner::Runner;
