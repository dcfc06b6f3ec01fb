//! The one list of error kinds: each one's `error_type` name, its HTTP status, whether a
//! retry may succeed, and where it can occur. HTTP, KServe, the job runner and the queue
//! worker all classify through it, so a kind cannot mean one thing on one path and another
//! elsewhere. Logs, the `ofa_rejections_total` label and the OpenAPI document use the names.

/// Where a kind can be reported: every front end, or only in job results (bulk jobs name
/// their image by path or URL, which the HTTP routes do not take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Http,
    Jobs,
}

/// Defines the kinds once: the enum, the list of all, their names, statuses and classes.
macro_rules! error_types {
    ($($(#[$doc:meta])* $kind:ident => $name:literal, $status:literal, $class:ident, $surface:ident;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorType {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorType {
            /// Every kind, in the order the documents list them.
            pub const ALL: &[ErrorType] = &[$(ErrorType::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorType::$kind => $name,)*
                }
            }

            /// The HTTP status this kind is answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorType::$kind => $status,)*
                }
            }

            /// Whether another try of the same input may succeed: the service's or a
            /// source's passing trouble, not the input's own fault (nor a bug, which a retry
            /// would repeat).
            pub fn is_transient(self) -> bool {
                match self {
                    $(ErrorType::$kind => error_types!(@class $class),)*
                }
            }

            pub fn surface(self) -> Surface {
                match self {
                    $(ErrorType::$kind => Surface::$surface,)*
                }
            }
        }
    };
    (@class transient) => { true };
    (@class permanent) => { false };
}

error_types! {
    // The request itself.
    MissingImage => "missing_image", 400, permanent, Http;
    MissingText => "missing_text", 400, permanent, Http;
    InvalidBase64 => "invalid_base64", 400, permanent, Http;
    InvalidJson => "invalid_json", 400, permanent, Http;
    InvalidMultipart => "invalid_multipart", 400, permanent, Http;
    InvalidUtf8 => "invalid_utf8", 400, permanent, Http;
    InvalidBody => "invalid_body", 400, permanent, Http;
    InvalidInferenceRequest => "invalid_inference_request", 400, permanent, Http;
    InvalidRerankRequest => "invalid_rerank_request", 400, permanent, Http;
    EmptyBatch => "empty_batch", 400, permanent, Http;
    UnsupportedContentType => "unsupported_content_type", 415, permanent, Http;
    PayloadTooLarge => "payload_too_large", 413, permanent, Http;
    BatchTooLarge => "batch_too_large", 413, permanent, Http;
    RequestTimeout => "request_timeout", 408, permanent, Http;
    NotFound => "not_found", 404, permanent, Http;
    MethodNotAllowed => "method_not_allowed", 405, permanent, Http;
    ModelNotFound => "model_not_found", 404, permanent, Http;
    // Its content, judged by the engine.
    InvalidImage => "invalid_image", 400, permanent, Http;
    UnsupportedImage => "unsupported_image", 415, permanent, Http;
    ImageTooLarge => "image_too_large", 413, permanent, Http;
    InvalidText => "invalid_text", 422, permanent, Http;
    InvalidInput => "invalid_input", 400, permanent, Http;
    // Access and load.
    Unauthorized => "unauthorized", 401, permanent, Http;
    RateLimited => "rate_limited", 429, transient, Http;
    QuotaExceeded => "quota_exceeded", 429, transient, Http;
    TooManyConcurrent => "too_many_concurrent", 429, transient, Http;
    QueueFull => "queue_full", 429, transient, Http;
    BreakerOpen => "breaker_open", 503, transient, Http;
    ModelLoading => "model_loading", 503, transient, Http;
    ShuttingDown => "shutting_down", 503, transient, Http;
    DeadlineExceeded => "deadline_exceeded", 504, transient, Http;
    // Ours.
    ModelFailure => "model_failure", 500, transient, Http;
    Internal => "internal", 500, permanent, Http;
    // An image named by URL (the routes' JSON bodies and bulk jobs).
    InvalidImageUrl => "invalid_image_url", 400, permanent, Http;
    /// The URL policy refused the URL or an address it led to; nothing was connected to.
    ImageUrlForbidden => "image_url_forbidden", 403, permanent, Http;
    /// No connection, no answer in time, a 5xx or 429: the source may recover.
    ImageFetchFailed => "image_fetch_failed", 502, transient, Http;
    /// The source answered with a client error (or too many redirects): it will again.
    ImageUrlFailed => "image_url_failed", 502, permanent, Http;
    // Bulk jobs: the job line or message, and the image it names by path.
    InvalidJob => "invalid_job", 400, permanent, Jobs;
    InvalidJobId => "invalid_job_id", 400, permanent, Jobs;
    ImagePathRefused => "image_path_refused", 403, permanent, Jobs;
    ImageNotFound => "image_not_found", 404, permanent, Jobs;
}

impl ErrorType {
    /// The kinds a surface reports, in the documents' order.
    pub fn on(surface: Surface) -> impl Iterator<Item = ErrorType> {
        ErrorType::ALL
            .iter()
            .copied()
            .filter(move |k| k.surface() == surface)
    }

    /// The kind of a name, as results and responses carry it.
    pub fn from_name(name: &str) -> Option<ErrorType> {
        ErrorType::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for k in ErrorType::ALL {
            assert_eq!(ErrorType::from_name(k.as_str()), Some(*k));
        }
        let mut names: Vec<&str> = ErrorType::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorType::ALL.len());
    }

    #[test]
    fn only_waiting_helps_with_transient_kinds() {
        let transient: Vec<&str> = ErrorType::ALL
            .iter()
            .filter(|k| k.is_transient())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            transient,
            [
                "rate_limited",
                "quota_exceeded",
                "too_many_concurrent",
                "queue_full",
                "breaker_open",
                "model_loading",
                "shutting_down",
                "deadline_exceeded",
                "model_failure",
                "image_fetch_failed"
            ]
        );
        // A client error never asks for a retry, a refusal for load always may.
        for k in ErrorType::ALL {
            if k.is_transient() {
                assert!(matches!(k.status(), 429 | 500..=599), "{k}");
            }
        }
    }
}
