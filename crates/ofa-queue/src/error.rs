use thiserror::Error;

/// What went wrong talking to the broker. Messages never carry the URL's credentials: every
/// message is built through [`crate::address::Address::scrub`].
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BrokerError {
    #[error("invalid broker URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to the broker at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("cannot declare {queue}: {reason}")]
    Declare { queue: String, reason: String },
    /// The queue exists with other arguments (another DELIVERY_LIMIT, say): a setting to fix,
    /// not something a retry can mend.
    #[error("queue {queue} exists with different settings ({detail}); start every command with the settings it was declared with (DELIVERY_LIMIT, queue names), or delete the queue")]
    Mismatch { queue: String, detail: String },
    /// The connection or channel failed while in use (a reconnect follows, for the worker).
    #[error("broker connection lost: {0}")]
    Lost(String),
    /// The broker refused or returned a publish, or never confirmed it.
    #[error("publish to {queue} not confirmed: {reason}")]
    NotConfirmed { queue: String, reason: String },
}
