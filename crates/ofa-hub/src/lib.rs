//! ModelScope hub client: lists a model repository at a revision, downloads each file with
//! resume, retries and SHA-256 verification, and caches it in the layout the Python client
//! shares. Knows nothing of the model it fetches.

mod backoff;
pub mod cache;
mod client;
pub mod config;
pub mod download;
mod error;
pub mod hash;
pub mod listing;
mod lock;
pub mod manifest;
pub mod progress;
pub mod repo;
mod snapshot;

pub use cache::Cache;
pub use config::HubConfig;
pub use error::HubError;
pub use progress::{Event, Progress, Silent};
pub use repo::{RepoId, DEFAULT_REVISION};
pub use snapshot::{fetch, Snapshot, Source};
