use std::path::PathBuf;

/// Everything that can go wrong getting a model from the hub or the cache.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid model id {0:?}: expected owner/name")]
    InvalidId(String),
    #[error(
        "model {repo} not found on {endpoint}{hint} (HTTP 404{request_id})",
        hint = if *.with_token { ", or this MODELSCOPE_API_TOKEN cannot see it" } else { ", or it is private: set MODELSCOPE_API_TOKEN" }
    )]
    NotFound {
        repo: String,
        endpoint: String,
        with_token: bool,
        request_id: String,
    },
    #[error(
        "model {repo} on {endpoint} refused access (HTTP {status}{request_id}): {}",
        if *.with_token { "MODELSCOPE_API_TOKEN is not accepted for it" } else { "it is private: set MODELSCOPE_API_TOKEN" }
    )]
    Denied {
        repo: String,
        endpoint: String,
        status: u16,
        with_token: bool,
        request_id: String,
    },
    #[error("model {repo} has no revision {revision:?} on {endpoint} (branches and tags; the default branch is \"master\")")]
    RevisionNotFound {
        repo: String,
        revision: String,
        endpoint: String,
    },
    #[error("model {repo} at revision {revision:?} lists no files")]
    EmptyRepo { repo: String, revision: String },
    #[error("the hub listed an unsafe file path {0:?}")]
    UnsafePath(String),
    #[error("{path}: HTTP {status} from {url}{request_id}: {message}")]
    Http {
        path: String,
        url: String,
        status: u16,
        message: String,
        request_id: String,
    },
    #[error("{path}: {url}: {message}")]
    Transport {
        path: String,
        url: String,
        message: String,
    },
    #[error("{path}: the hub sent a listing that is not valid: {message}")]
    BadListing { path: String, message: String },
    #[error("{path}: sha256 {actual} does not match the listing's {expected}; the download was discarded")]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: size {actual} bytes does not match the listing's {expected}; the download was discarded")]
    Size {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        path: String,
        attempts: u32,
        last: String,
    },
    #[error("{path}: waited {seconds} s for another process's download lock {} with no progress", lock.display())]
    LockTimeout {
        path: String,
        lock: PathBuf,
        seconds: u64,
    },
    #[error("offline: model {repo} revision {revision:?} is not in the cache {} (looked in {}){found}; fetch it first with `ofa-entail download {repo} --revision {revision}` where the hub is reachable, or point MODEL_DIR at a model directory",
        cache.display(), looked.join(", "))]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        looked: Vec<String>,
        found: String,
    },
    #[error("the cached model in {} no longer matches what was downloaded and verified: {}; fetch it again with `ofa-entail download` where the hub is reachable",
        dir.display(), problems.join("; "))]
    CacheCorrupt { dir: PathBuf, problems: Vec<String> },
    /// The I/O error is in the message, not a `source`: chained reports would say it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |error| HubError::Io { path, error }
    }

    /// Worth another attempt: the network or the hub's load, never the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Transport { .. } => true,
            HubError::Http { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            _ => false,
        }
    }
}
