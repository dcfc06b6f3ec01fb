use std::path::PathBuf;

use ofa_api::BackendError;

/// Every way loading or running the model can fail. Messages name the file, tensor or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum OfaError {
    #[error("model directory {0} does not exist or is not a directory")]
    ModelDirMissing(PathBuf),
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
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{file}: unsupported option {option} = {value}: {why}")]
    Unsupported {
        file: PathBuf,
        option: String,
        value: String,
        why: String,
    },
    #[error("{file}: {message}")]
    Weights { file: PathBuf, message: String },
    #[error("{file}: tokenizer: {message}")]
    Tokenizer { file: PathBuf, message: String },
    /// The caller's image or text, in the kinds every front end reports.
    #[error(transparent)]
    Input(#[from] BackendError),
    #[error("model: produced non-finite scores {0:?}")]
    NonFinite(Vec<f32>),
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("precision: {0}")]
    Precision(String),
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, OfaError>;

impl OfaError {
    /// True when the error comes from the caller's input rather than from the model or its files.
    pub fn is_input_error(&self) -> bool {
        matches!(self, OfaError::Input(b) if b.is_input_error())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            OfaError::MissingFile { path }
        } else {
            OfaError::Io { path, source }
        }
    }
}

/// Preprocessing's errors are the model's, message for message.
impl From<ofa_preprocess::PreprocessError> for OfaError {
    fn from(e: ofa_preprocess::PreprocessError) -> Self {
        use ofa_preprocess::PreprocessError as P;
        match e {
            P::MissingFile { path } => OfaError::MissingFile { path },
            P::Io { path, source } => OfaError::Io { path, source },
            P::Json { path, source } => OfaError::Json { path, source },
            P::Unsupported {
                file,
                option,
                value,
                why,
            } => OfaError::Unsupported {
                file,
                option,
                value,
                why,
            },
            P::Tokenizer { file, message } => OfaError::Tokenizer { file, message },
            P::Input(b) => OfaError::Input(b),
        }
    }
}

/// The engine's view of a model error: input faults keep their kind, the rest is the model's.
impl From<OfaError> for BackendError {
    fn from(e: OfaError) -> Self {
        match e {
            OfaError::Input(b) => b,
            other => BackendError::Model(other.to_string()),
        }
    }
}
