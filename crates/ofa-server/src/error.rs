//! API errors: one JSON shape `{"error": "...", "error_type": "..."}`, one status each, and
//! `Retry-After` whenever waiting helps.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ofa_engine::EngineError;
use ofa_model::OfaError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(error_type: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_type, message)
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn loading() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_loading",
            "the model is still loading",
        )
        .retry_after(Duration::from_secs(5))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Input(OfaError::ImageTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Input(OfaError::UnsupportedImage(_)) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EngineError::Input(_) => StatusCode::BAD_REQUEST,
            EngineError::InvalidText(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            EngineError::BreakerOpen { .. } | EngineError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EngineError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            EngineError::ModelFailure(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            error_type: e.kind(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "error_type": self.error_type});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(ErrorKind(self.error_type));
        resp
    }
}

/// Lets the request log and metrics see why a request failed.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);
