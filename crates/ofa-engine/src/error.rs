use std::time::Duration;

use ofa_model::OfaError;

/// Why a pair got no scores. Front ends map each kind to their own status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller's input is unusable (image, text).
    #[error("{0}")]
    Input(#[from] OfaError),
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
    /// A stable machine-readable name for logs, metrics labels and API errors.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Input(e) => match e {
                OfaError::ImageTooLarge { .. } | OfaError::ImageTooCostly(_) => "image_too_large",
                OfaError::UnsupportedImage(_) => "unsupported_image",
                OfaError::Image(_) => "invalid_image",
                OfaError::Text(_) => "invalid_text",
                _ => "invalid_input",
            },
            EngineError::InvalidText(_) => "invalid_text",
            EngineError::BatchTooLarge { .. } => "batch_too_large",
            EngineError::QueueFull { .. } => "queue_full",
            EngineError::BreakerOpen { .. } => "breaker_open",
            EngineError::DeadlineExceeded => "deadline_exceeded",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::ModelFailure(_) => "model_failure",
            EngineError::Internal(_) => "internal",
        }
    }

    /// The same error for another pair that shared its cause (pairs of one image).
    pub fn replicate(&self) -> EngineError {
        match self {
            EngineError::Input(e) => EngineError::Input(match e {
                OfaError::Image(m) => OfaError::Image(m.clone()),
                OfaError::UnsupportedImage(m) => OfaError::UnsupportedImage(m.clone()),
                OfaError::ImageTooCostly(m) => OfaError::ImageTooCostly(m.clone()),
                OfaError::Text(m) => OfaError::Text(m.clone()),
                OfaError::ImageTooLarge {
                    width,
                    height,
                    pixels,
                    limit,
                } => OfaError::ImageTooLarge {
                    width: *width,
                    height: *height,
                    pixels: *pixels,
                    limit: *limit,
                },
                other => return EngineError::Internal(other.to_string()),
            }),
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

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::QueueFull { retry_after, .. }
            | EngineError::BreakerOpen { retry_after } => Some(*retry_after),
            EngineError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
