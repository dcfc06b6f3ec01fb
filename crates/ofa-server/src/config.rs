use std::time::Duration;

/// HTTP-level settings (the engine has its own). Only the binary reads flags and the
/// environment; it builds this.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Whole-request deadline: past it the request gets 504 and is never run.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond, before reading when `Content-Length` says so).
    pub payload_limit: usize,
    /// Bytes all request bodies being read and parsed may hold together (each counts three
    /// times its size: the body, its parsed form, the decoded image); past it, 429.
    pub upload_memory: usize,
    /// Longest text or premise, in characters (the engine enforces it; the contract says it).
    pub max_text_chars: usize,
    /// Most items in one `/predict/batch` or KServe request.
    pub max_batch_items: usize,
    /// Fetches images named by URL in JSON bodies, under its address policy
    /// (`IMAGE_URL_ALLOW`); `None`: images are taken inline only.
    pub image_urls: Option<ofa_fetch::UrlFetcher>,
    /// Most candidates in one `/rerank` request, and the most of any rerank request scored at
    /// once (a chunk, which also takes at most half the engine's queue).
    pub max_rerank_candidates: usize,
    /// Most documents in one `/v1/rerank` or `/v2/rerank` request, scored chunk by chunk.
    pub max_rerank_documents: usize,
    /// Most inference requests handled at once, counted from a complete body (429 beyond);
    /// `None`: the engine's queue bounds it.
    pub max_concurrency: Option<usize>,
    /// Who may call the inference routes, who they are, and how much they may.
    pub access: crate::access::AccessConfig,
    /// After SIGTERM, keep serving (readiness false) this long before closing the listener.
    pub drain_delay: Duration,
    /// Bound on finishing in-flight and queued work after the listener closes.
    pub shutdown_timeout: Duration,
    /// Connection limits and timeouts.
    pub connections: crate::conn::ConnLimits,
    /// What `/info` reports about the model.
    pub model_id: String,
    pub model_revision: String,
    /// Where request spans go (OTLP); `None`: no spans, though an incoming trace id is still
    /// logged.
    pub tracing: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// Test-only `POST /debug/fault` route (drives the circuit breaker in tests).
    pub fault_route: bool,
}
