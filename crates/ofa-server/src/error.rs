//! API errors: one JSON shape `{"error": "...", "error_type": "..."}` everywhere, one status per
//! kind, and `Retry-After` whenever waiting helps. The kinds are a closed set: logs, the
//! `ofa_rejections_total` label and the OpenAPI document list the same names.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ofa_engine::EngineError;
use ofa_model::OfaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    // The request itself.
    MissingImage,
    MissingText,
    InvalidBase64,
    InvalidJson,
    InvalidMultipart,
    InvalidUtf8,
    InvalidBody,
    InvalidInferenceRequest,
    InvalidRerankRequest,
    EmptyBatch,
    UnsupportedContentType,
    PayloadTooLarge,
    BatchTooLarge,
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    ModelNotFound,
    // Its content, judged by the engine.
    InvalidImage,
    UnsupportedImage,
    ImageTooLarge,
    InvalidText,
    InvalidInput,
    // Access and load.
    Unauthorized,
    RateLimited,
    TooManyConcurrent,
    QueueFull,
    BreakerOpen,
    ModelLoading,
    ShuttingDown,
    DeadlineExceeded,
    // Ours.
    ModelFailure,
    Internal,
}

impl ErrorType {
    /// Every kind, for the documents that list them.
    pub const ALL: [ErrorType; 32] = {
        use ErrorType::*;
        [
            MissingImage,
            MissingText,
            InvalidBase64,
            InvalidJson,
            InvalidMultipart,
            InvalidUtf8,
            InvalidBody,
            InvalidInferenceRequest,
            InvalidRerankRequest,
            EmptyBatch,
            UnsupportedContentType,
            PayloadTooLarge,
            BatchTooLarge,
            RequestTimeout,
            NotFound,
            MethodNotAllowed,
            ModelNotFound,
            InvalidImage,
            UnsupportedImage,
            ImageTooLarge,
            InvalidText,
            InvalidInput,
            Unauthorized,
            RateLimited,
            TooManyConcurrent,
            QueueFull,
            BreakerOpen,
            ModelLoading,
            ShuttingDown,
            DeadlineExceeded,
            ModelFailure,
            Internal,
        ]
    };

    pub fn as_str(self) -> &'static str {
        use ErrorType::*;
        match self {
            MissingImage => "missing_image",
            MissingText => "missing_text",
            InvalidBase64 => "invalid_base64",
            InvalidJson => "invalid_json",
            InvalidMultipart => "invalid_multipart",
            InvalidUtf8 => "invalid_utf8",
            InvalidBody => "invalid_body",
            InvalidInferenceRequest => "invalid_inference_request",
            InvalidRerankRequest => "invalid_rerank_request",
            EmptyBatch => "empty_batch",
            UnsupportedContentType => "unsupported_content_type",
            PayloadTooLarge => "payload_too_large",
            BatchTooLarge => "batch_too_large",
            RequestTimeout => "request_timeout",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            ModelNotFound => "model_not_found",
            InvalidImage => "invalid_image",
            UnsupportedImage => "unsupported_image",
            ImageTooLarge => "image_too_large",
            InvalidText => "invalid_text",
            InvalidInput => "invalid_input",
            Unauthorized => "unauthorized",
            RateLimited => "rate_limited",
            TooManyConcurrent => "too_many_concurrent",
            QueueFull => "queue_full",
            BreakerOpen => "breaker_open",
            ModelLoading => "model_loading",
            ShuttingDown => "shutting_down",
            DeadlineExceeded => "deadline_exceeded",
            ModelFailure => "model_failure",
            Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        use ErrorType::*;
        match self {
            MissingImage
            | MissingText
            | InvalidBase64
            | InvalidJson
            | InvalidMultipart
            | InvalidUtf8
            | InvalidBody
            | InvalidInferenceRequest
            | InvalidRerankRequest
            | EmptyBatch
            | InvalidImage
            | InvalidInput => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            NotFound | ModelNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            PayloadTooLarge | BatchTooLarge | ImageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedContentType | UnsupportedImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidText => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited | TooManyConcurrent | QueueFull => StatusCode::TOO_MANY_REQUESTS,
            BreakerOpen | ModelLoading | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ModelFailure | Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

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
