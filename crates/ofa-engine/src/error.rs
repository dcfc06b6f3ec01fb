use std::time::Duration;

use ofa_api::{BackendError, ErrorType};

/// Why a pair got no scores. Front ends map each kind to their own status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller's input is unusable (image, text).
    #[error("{0}")]
    Input(#[from] BackendError),
    #[error("{0}")]
    InvalidText(String),
    #[error("{items} pairs can never be admitted: the queue holds at most {capacity}")]
    BatchTooLarge { items: usize, capacity: usize },
    #[error("queue is full ({capacity} pairs waiting)")]
    QueueFull {
        capacity: usize,
        retry_after: Duration,
    },
    #[error("circuit breaker is open after repeated model failures")]
    BreakerOpen { retry_after: Duration },
    #[error("deadline exceeded before the request could run")]
    DeadlineExceeded,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    ModelFailure(String),
    /// A bug, not the input: preprocessing panicked (caught; the process goes on).
    #[error("internal error while preprocessing: {0}")]
    Internal(String),
}

impl EngineError {
    /// The kind front ends report: its `error_type` name, status and retry class.
    pub fn error_type(&self) -> ErrorType {
        match self {
            EngineError::Input(e) => e.error_type(),
            EngineError::InvalidText(_) => ErrorType::InvalidText,
            EngineError::BatchTooLarge { .. } => ErrorType::BatchTooLarge,
            EngineError::QueueFull { .. } => ErrorType::QueueFull,
            EngineError::BreakerOpen { .. } => ErrorType::BreakerOpen,
            EngineError::DeadlineExceeded => ErrorType::DeadlineExceeded,
            EngineError::ShuttingDown => ErrorType::ShuttingDown,
            EngineError::ModelFailure(_) => ErrorType::ModelFailure,
            EngineError::Internal(_) => ErrorType::Internal,
        }
    }

    /// A stable machine-readable name for logs, metrics labels and API errors.
    pub fn kind(&self) -> &'static str {
        self.error_type().as_str()
    }

    /// The same error for another pair that shared its cause (pairs of one image).
    pub fn replicate(&self) -> EngineError {
        match self {
            EngineError::Input(BackendError::Model(m)) => EngineError::Internal(m.clone()),
            EngineError::Input(e) => EngineError::Input(e.clone()),
            EngineError::InvalidText(m) => EngineError::InvalidText(m.clone()),
            EngineError::BatchTooLarge { items, capacity } => EngineError::BatchTooLarge {
                items: *items,
                capacity: *capacity,
            },
            EngineError::QueueFull {
                capacity,
                retry_after,
            } => EngineError::QueueFull {
                capacity: *capacity,
                retry_after: *retry_after,
            },
            EngineError::BreakerOpen { retry_after } => EngineError::BreakerOpen {
                retry_after: *retry_after,
            },
            EngineError::DeadlineExceeded => EngineError::DeadlineExceeded,
            EngineError::ShuttingDown => EngineError::ShuttingDown,
            EngineError::ModelFailure(m) => EngineError::ModelFailure(m.clone()),
            EngineError::Internal(m) => EngineError::Internal(m.clone()),
        }
    }

    /// The shared failure for this error (its kind, message and retry class).
    pub fn failure(&self) -> ofa_api::Failure {
        ofa_api::Failure::new(self.error_type(), self.to_string())
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::QueueFull { retry_after, .. }
            | EngineError::BreakerOpen { retry_after } => Some(*retry_after),
            EngineError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
