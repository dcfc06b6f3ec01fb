use std::time::Duration;

/// HTTP-level settings (the engine has its own).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Whole-request deadline: past it the request gets 504 and is never run.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub payload_limit: usize,
    /// Most items in one `/predict/batch` request.
    pub max_batch_items: usize,
    /// Most inference requests handled at once (429 beyond); `None`: the queue bounds it.
    pub max_concurrency: Option<usize>,
    /// Requests per window per client (IP, or API key when keys are set); `None` disables.
    pub rate_limit: Option<crate::limit::Rate>,
    /// Accepted API keys; empty means no authentication on inference routes.
    pub api_keys: Vec<String>,
    /// After SIGTERM, keep serving (readiness false) this long before closing the listener.
    pub drain_delay: Duration,
    /// Bound on finishing in-flight and queued work after the listener closes.
    pub shutdown_timeout: Duration,
    /// What `/info` reports about the model.
    pub model_id: String,
    pub model_revision: String,
    /// Test-only `POST /debug/fault` route (drives the circuit breaker in tests).
    pub fault_route: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            payload_limit: 10 * 1024 * 1024,
            max_batch_items: 32,
            max_concurrency: None,
            rate_limit: None,
            api_keys: Vec::new(),
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            model_id: String::new(),
            model_revision: String::new(),
            fault_route: false,
        }
    }
}
