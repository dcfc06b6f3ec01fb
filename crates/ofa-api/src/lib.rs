//! The vocabulary every part of ofa-entail shares, below the engine and the front ends: what
//! a pair is scored to ([`Scores`], [`Answer`]), what goes into a batch ([`Prepared`]) and
//! what it reports ([`BatchReport`]), the one list of error kinds with their statuses and
//! retry classes ([`ErrorType`], [`Failure`]), the model's input faults ([`BackendError`]),
//! ranking, base64 as clients write it, and the stop signal. No tensors, no HTTP.

pub mod answer;
pub mod backend_error;
pub mod base64;
pub mod batch;
pub mod error_type;
pub mod failure;
pub mod logging;
pub mod panic;
pub mod ranking;
pub mod scores;
pub mod signal;

pub use answer::Answer;
pub use backend_error::BackendError;
pub use batch::{BatchReport, Prepared, StageTimes};
pub use error_type::ErrorType;
pub use failure::Failure;
pub use ranking::{rank, Ranking};
pub use scores::Scores;

/// Pillow's default decompression-bomb error threshold (2 × 89,478,485 pixels): the reference
/// refuses larger images, and so do we unless `MAX_IMAGE_PIXELS` says otherwise.
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;
