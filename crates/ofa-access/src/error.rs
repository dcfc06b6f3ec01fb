use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    Limit(String),
    #[error("{path}, line {line}: {message}")]
    KeyFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read the key file {path}: {source}")]
    KeyFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TRUSTED_PROXIES: {0:?} is not an address or CIDR block")]
    Proxy(String),
    #[error("limits backend: {0}")]
    Backend(String),
}
