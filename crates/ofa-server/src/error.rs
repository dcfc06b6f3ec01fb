//! API errors: one JSON shape `{"error": "...", "error_type": "..."}` everywhere, one status per
//! kind, and `Retry-After` whenever waiting helps. The kinds are `ofa_api`'s closed list: logs,
//! the `ofa_rejections_total` label and the OpenAPI document name the same kinds.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ofa_api::Failure;
use ofa_engine::EngineError;

pub use ofa_api::ErrorType;

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
            kind: e.error_type(),
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

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        ApiError::new(f.kind, f.message)
    }
}

impl From<&ApiError> for Failure {
    fn from(e: &ApiError) -> Self {
        Failure::new(e.kind, e.message.clone())
    }
}

/// The kind's status as axum's type (the shared list keeps plain numbers).
pub fn status(kind: ErrorType) -> StatusCode {
    StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "error_type": self.kind.as_str()});
        let mut resp = (status(self.kind), axum::Json(body)).into_response();
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
    use ofa_api::error_type::Surface;

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
        let kinds: Vec<&str> = ErrorType::on(Surface::Http).map(|k| k.as_str()).collect();
        assert_eq!(listed, kinds);
        let predict = &spec["paths"]["/predict"]["post"]["responses"];
        for k in ErrorType::on(Surface::Http) {
            let code = k.status().to_string();
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
