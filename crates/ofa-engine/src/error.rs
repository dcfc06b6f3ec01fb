use std::time::Duration;

use ofa_model::OfaError;

/// Why a request got no prediction. Each maps to one HTTP status in the server.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller's input is unusable (image, text).
    #[error("{0}")]
    Input(#[from] OfaError),
    #[error("{0}")]
    InvalidText(String),
    #[error("queue is full ({capacity} requests waiting)")]
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
}

impl EngineError {
    /// A stable machine-readable name for logs, metrics labels and API errors.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Input(e) => match e {
                OfaError::ImageTooLarge { .. } => "image_too_large",
                OfaError::UnsupportedImage(_) => "unsupported_image",
                OfaError::Image(_) => "invalid_image",
                _ => "invalid_input",
            },
            EngineError::InvalidText(_) => "invalid_text",
            EngineError::QueueFull { .. } => "queue_full",
            EngineError::BreakerOpen { .. } => "breaker_open",
            EngineError::DeadlineExceeded => "deadline_exceeded",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::ModelFailure(_) => "model_failure",
        }
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
