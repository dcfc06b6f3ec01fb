//! Why an image could not be had, in classes the front ends map to their error types: the
//! caller's own fault (never worth a retry) or the source's passing trouble (worth one).

use ofa_api::{ErrorType, Failure};

/// A sentence for the caller in each case; none distinguishes a closed port from an open one
/// or a silent host from a slow one, so a fetch cannot be used to scan a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The address policy refused the URL or an address it led to; nothing was connected to.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidUrl(String),
    /// No connection, no answer in time, or not an HTTP answer: worth another try.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with a status other than success.
    #[error("{message}")]
    Status { status: u16, message: String },
    #[error("{0}")]
    TooManyRedirects(String),
    #[error("{0}")]
    TooLarge(String),
    /// A path outside the root, without a root, or not a regular file.
    #[error("{0}")]
    PathRefused(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller's deadline passed first.
    #[error("{0}")]
    TimedOut(String),
}

impl FetchError {
    /// The `error_type` results and responses carry.
    pub fn error_type(&self) -> ErrorType {
        match self {
            FetchError::Forbidden(_) => ErrorType::ImageUrlForbidden,
            FetchError::InvalidUrl(_) => ErrorType::InvalidImageUrl,
            FetchError::Unreachable(_) | FetchError::TimedOut(_) => ErrorType::ImageFetchFailed,
            FetchError::Status { .. } if self.is_transient() => ErrorType::ImageFetchFailed,
            FetchError::Status { .. } | FetchError::TooManyRedirects(_) => {
                ErrorType::ImageUrlFailed
            }
            FetchError::TooLarge(_) => ErrorType::PayloadTooLarge,
            FetchError::PathRefused(_) => ErrorType::ImagePathRefused,
            FetchError::NotFound(_) => ErrorType::ImageNotFound,
        }
    }

    /// The shared failure: the kind, this sentence, and whether another try may help.
    pub fn failure(&self) -> Failure {
        Failure {
            kind: self.error_type(),
            message: self.to_string(),
            transient: self.is_transient(),
        }
    }

    /// Whether another try may succeed: the source's trouble (no connection, a 5xx or 429, a
    /// time-out), not the request's.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable(_) | FetchError::TimedOut(_) => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
