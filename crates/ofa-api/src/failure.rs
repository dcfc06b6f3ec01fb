//! Why one pair or job got no scores, in the shared vocabulary: a kind, a sentence for the
//! caller, and whether a retry may help.

use crate::ErrorType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorType,
    pub message: String,
    /// Usually the kind's class; a fault outside the input (a panic in a worker's chunk, a
    /// fetch cut short) may be retried whatever its kind.
    pub transient: bool,
}

impl Failure {
    /// A failure classed as its kind is.
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            transient: kind.is_transient(),
        }
    }

    /// A failure worth another try whatever its kind.
    pub fn transient(kind: ErrorType, message: impl Into<String>) -> Self {
        Failure {
            transient: true,
            ..Failure::new(kind, message)
        }
    }

    /// Prefixes the message with where the problem is (`"images"[3]: `).
    pub fn at(mut self, place: &str) -> Self {
        self.message = format!("{place}{}", self.message);
        self
    }
}
