//! Why an input or the tokenizer's files could not be used. Messages name the file or the input
//! at fault, as the model crate's errors do (it converts these one for one).

use std::path::PathBuf;

use ofa_api::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("{path}: missing required file")]
    MissingFile { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: unsupported option {option} = {value}: {why}")]
    Unsupported {
        file: PathBuf,
        option: String,
        value: String,
        why: String,
    },
    #[error("{file}: tokenizer: {message}")]
    Tokenizer { file: PathBuf, message: String },
    /// The caller's image or text, in the kinds every front end reports.
    #[error(transparent)]
    Input(#[from] BackendError),
}

pub type Result<T> = std::result::Result<T, PreprocessError>;

impl PreprocessError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            PreprocessError::MissingFile { path }
        } else {
            PreprocessError::Io { path, source }
        }
    }
}
