//! How a model backend reports a failure without its tensor library in the type: the caller's
//! input at fault (with the kind that names it), or the model itself.

use crate::ErrorType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("image: {0}")]
    Image(String),
    #[error("image: unsupported format ({0})")]
    UnsupportedImage(String),
    #[error("image: {width}x{height} = {pixels} pixels exceeds the limit of {limit}")]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    /// An image within the pixel limit whose shape would make preprocessing cost far more than
    /// its pixel count (extreme aspect ratios): the message names the limit.
    #[error("image: {0}")]
    ImageTooCostly(String),
    #[error("text: {0}")]
    Text(String),
    /// Not the input: the model's files, its numerics or its device, in the model's words.
    #[error("{0}")]
    Model(String),
}

impl BackendError {
    /// The kind a front end reports when preparing an input failed this way.
    pub fn error_type(&self) -> ErrorType {
        match self {
            BackendError::ImageTooLarge { .. } | BackendError::ImageTooCostly(_) => {
                ErrorType::ImageTooLarge
            }
            BackendError::UnsupportedImage(_) => ErrorType::UnsupportedImage,
            BackendError::Image(_) => ErrorType::InvalidImage,
            BackendError::Text(_) => ErrorType::InvalidText,
            BackendError::Model(_) => ErrorType::InvalidInput,
        }
    }

    /// True when the caller's input is at fault rather than the model or its files.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, BackendError::Model(_))
    }
}
