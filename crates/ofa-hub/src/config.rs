//! Where the hub is, how to reach it, and where the cache lives: the Python client's environment
//! variables, so an operator's existing settings keep working.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://modelscope.cn";

#[derive(Clone)]
pub struct HubConfig {
    /// API base URL, without a trailing slash.
    pub endpoint: String,
    /// Access token for private models; sent as `Authorization: Bearer` and the `m_session_id`
    /// cookie, as the Python client does. Never printed.
    pub token: Option<String>,
    /// Cache root: models land in `models/{owner}--{name}/snapshots/{revision}` under it.
    pub cache_dir: PathBuf,
    /// No network at all: resolve from the cache or fail.
    pub offline: bool,
    /// Offline, also re-hash the cached files against the manifest of their download (sizes
    /// are always checked).
    pub verify: bool,
    /// Transport retries per file (after the first attempt).
    pub max_retries: u32,
    /// Cap on a backoff delay and on an honoured `Retry-After`.
    pub retry_max_delay: Duration,
    pub connect_timeout: Duration,
    /// A read that waits longer than this for the next bytes fails and is retried (resuming).
    pub read_timeout: Duration,
    /// Budget for one file, retries included.
    pub file_timeout: Duration,
    /// How long to wait on another process's lock while its download makes no progress.
    pub lock_timeout: Duration,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("verify", &self.verify)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// A URL with a scheme and no trailing slash (`MODELSCOPE_ENDPOINT` may be a bare host).
pub fn normalize_endpoint(v: &str) -> String {
    let v = v.trim().trim_end_matches('/');
    if v.starts_with("http://") || v.starts_with("https://") {
        v.to_string()
    } else {
        format!("https://{v}")
    }
}

impl HubConfig {
    /// The Python client's defaults, with the cache at `cache_dir`. The binary maps its flags
    /// and environment variables (the Python client's names) onto the fields.
    pub fn new(cache_dir: PathBuf) -> HubConfig {
        HubConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            cache_dir,
            offline: false,
            verify: false,
            max_retries: 5,
            retry_max_delay: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            file_timeout: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(600),
        }
    }

    /// Host of the endpoint, for messages.
    pub fn endpoint_host(&self) -> &str {
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_normalised_like_the_python_client() {
        assert_eq!(
            normalize_endpoint("mirror.example.org/"),
            "https://mirror.example.org"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:9/"),
            "http://127.0.0.1:9"
        );
        let mut c = HubConfig::new(PathBuf::from("/models"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        c.endpoint = normalize_endpoint("www.modelscope.ai");
        assert_eq!(c.endpoint_host(), "www.modelscope.ai");
    }

    #[test]
    fn debug_hides_the_token() {
        let mut c = HubConfig::new(PathBuf::from("/models"));
        c.token = Some("ms-secret".into());
        assert!(!format!("{c:?}").contains("ms-secret"));
    }
}
