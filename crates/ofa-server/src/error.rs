//! API errors: one JSON shape `{"error": "...", "error_type": "..."}` everywhere, one status per
//! kind, and `Retry-After` whenever waiting helps. The kinds are a closed set: logs, the
//! `ofa_rejections_total` label and the OpenAPI document list the same names.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ofa_engine::EngineError;
use ofa_model::OfaError;

/// Defines the kinds once: the enum, the list of all, their names and their statuses.
macro_rules! error_types {
    ($($(#[$doc:meta])* $kind:ident => $name:literal, $status:ident;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorType {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorType {
            /// Every kind, for the documents that list them.
            pub const ALL: &[ErrorType] = &[$(ErrorType::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorType::$kind => $name,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorType::$kind => StatusCode::$status,)*
                }
            }
        }
    };
}

error_types! {
    // The request itself.
    MissingImage => "missing_image", BAD_REQUEST;
    MissingText => "missing_text", BAD_REQUEST;
    InvalidBase64 => "invalid_base64", BAD_REQUEST;
    InvalidJson => "invalid_json", BAD_REQUEST;
    InvalidMultipart => "invalid_multipart", BAD_REQUEST;
    InvalidUtf8 => "invalid_utf8", BAD_REQUEST;
    InvalidBody => "invalid_body", BAD_REQUEST;
    InvalidInferenceRequest => "invalid_inference_request", BAD_REQUEST;
    InvalidRerankRequest => "invalid_rerank_request", BAD_REQUEST;
    EmptyBatch => "empty_batch", BAD_REQUEST;
    UnsupportedContentType => "unsupported_content_type", UNSUPPORTED_MEDIA_TYPE;
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE;
    BatchTooLarge => "batch_too_large", PAYLOAD_TOO_LARGE;
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT;
    NotFound => "not_found", NOT_FOUND;
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    ModelNotFound => "model_not_found", NOT_FOUND;
    // Its content, judged by the engine.
    InvalidImage => "invalid_image", BAD_REQUEST;
    UnsupportedImage => "unsupported_image", UNSUPPORTED_MEDIA_TYPE;
    ImageTooLarge => "image_too_large", PAYLOAD_TOO_LARGE;
    InvalidText => "invalid_text", UNPROCESSABLE_ENTITY;
    InvalidInput => "invalid_input", BAD_REQUEST;
    // Access and load.
    Unauthorized => "unauthorized", UNAUTHORIZED;
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    QuotaExceeded => "quota_exceeded", TOO_MANY_REQUESTS;
    TooManyConcurrent => "too_many_concurrent", TOO_MANY_REQUESTS;
    QueueFull => "queue_full", TOO_MANY_REQUESTS;
    BreakerOpen => "breaker_open", SERVICE_UNAVAILABLE;
    ModelLoading => "model_loading", SERVICE_UNAVAILABLE;
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE;
    DeadlineExceeded => "deadline_exceeded", GATEWAY_TIMEOUT;
    // Ours.
    ModelFailure => "model_failure", INTERNAL_SERVER_ERROR;
    Internal => "internal", INTERNAL_SERVER_ERROR;
}

impl ErrorType {
    pub fn of(e: &EngineError) -> ErrorType {
        match e {
            EngineError::Input(OfaError::ImageTooLarge { .. } | OfaError::ImageTooCostly(_)) => {
                ErrorType::ImageTooLarge
            }
            EngineError::Input(OfaError::UnsupportedImage(_)) => ErrorType::UnsupportedImage,
            EngineError::Input(OfaError::Image(_)) => ErrorType::InvalidImage,
            EngineError::Input(OfaError::Text(_)) | EngineError::InvalidText(_) => {
                ErrorType::InvalidText
            }
            EngineError::Input(_) => ErrorType::InvalidInput,
            EngineError::BatchTooLarge { .. } => ErrorType::BatchTooLarge,
            EngineError::QueueFull { .. } => ErrorType::QueueFull,
            EngineError::BreakerOpen { .. } => ErrorType::BreakerOpen,
            EngineError::DeadlineExceeded => ErrorType::DeadlineExceeded,
            EngineError::ShuttingDown => ErrorType::ShuttingDown,
            EngineError::ModelFailure(_) => ErrorType::ModelFailure,
            EngineError::Internal(_) => ErrorType::Internal,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Prefixes the message with where in the request the problem is (`item 3: `).
    pub fn at(mut self, place: &str) -> Self {
        self.message = format!("{place}{}", self.message);
        self
    }

    pub fn loading() -> Self {
        Self::new(ErrorType::ModelLoading, "the model is still loading")
            .retry_after(Duration::from_secs(5))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError {
            kind: ErrorType::of(&e),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

impl From<ofa_engine::Refused> for ApiError {
    fn from(r: ofa_engine::Refused) -> Self {
        let e = ApiError::from(r.error);
        match r.item {
            Some(i) => e.at(&format!("item {i}: ")),
            None => e,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "error_type": self.kind.as_str()});
        let mut resp = (self.kind.status(), axum::Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == ErrorType::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(self.kind);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_error_kinds_with_their_statuses() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../assets/openapi.json")).unwrap();
        let listed: Vec<&str> = spec["components"]["schemas"]["Error"]["properties"]["error_type"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let kinds: Vec<&str> = ErrorType::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, kinds);
        let predict = &spec["paths"]["/predict"]["post"]["responses"];
        for k in ErrorType::ALL {
            let code = k.status().as_u16().to_string();
            // Auth-free and model-free kinds appear on other routes; the rest on /predict.
            if !matches!(
                k,
                ErrorType::InvalidInferenceRequest
                    | ErrorType::InvalidRerankRequest
                    | ErrorType::ModelNotFound
            ) {
                assert!(
                    predict.get(&code).is_some(),
                    "{} ({code}) undocumented",
                    k.as_str()
                );
            }
        }
    }
}
