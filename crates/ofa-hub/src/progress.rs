//! What a download reports as it goes; the caller draws a bar or writes log lines.

use std::time::Duration;

#[derive(Debug)]
pub enum Event<'a> {
    /// The listing arrived: this many files, this many bytes in all.
    Listed {
        files: usize,
        bytes: u64,
    },
    /// Already in the cache and verified: re-hashed (`hashed`), or vouched for by the manifest
    /// of an earlier verified download (same hash listed, file untouched since).
    Cached {
        path: &'a str,
        hashed: bool,
    },
    /// Another process holds this file's lock; waiting for it.
    Waiting {
        path: &'a str,
    },
    /// Fetching, from `from` bytes (non-zero when resuming).
    Start {
        path: &'a str,
        size: Option<u64>,
        from: u64,
    },
    Bytes {
        path: &'a str,
        n: u64,
    },
    /// Verified and renamed into place.
    Done {
        path: &'a str,
        bytes: u64,
    },
    Retry {
        path: &'a str,
        error: String,
        delay: Duration,
    },
    /// The hub could not be reached; the cached copy is used instead.
    UsingCache {
        error: String,
    },
}

pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}
