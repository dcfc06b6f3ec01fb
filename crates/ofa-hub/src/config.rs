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

/// `1`, `true`, `yes` and `on` (any case) are true.
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
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
    /// Settings from the environment, read through `var` so tests need not touch the process's.
    ///
    /// `MODELSCOPE_ENDPOINT` (else the deprecated `MODELSCOPE_DOMAIN`), `MODELSCOPE_API_TOKEN`
    /// (set but empty means "no token"), `MODELSCOPE_CACHE` (else `$HOME/.cache/modelscope`),
    /// offline from `MODEL_OFFLINE` or `HF_HUB_OFFLINE`, and the download tunables
    /// `MODELSCOPE_DOWNLOAD_MAX_RETRIES`, `MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS`,
    /// `MODELSCOPE_API_CONNECT_TIMEOUT`, `MODELSCOPE_DOWNLOAD_TIMEOUT`,
    /// `MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT`, `MODELSCOPE_DOWNLOAD_FILE_LOCK_TIMEOUT_SECONDS`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let endpoint = set("MODELSCOPE_ENDPOINT")
            .or_else(|| set("MODELSCOPE_DOMAIN"))
            .map(|v| normalize_endpoint(&v))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let cache_dir = set("MODELSCOPE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                set("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache/modelscope")
            });
        let secs = |k: &str, default: f64| {
            let v = set(k)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(default);
            Duration::from_secs_f64(v)
        };
        HubConfig {
            endpoint,
            token: set("MODELSCOPE_API_TOKEN").map(|t| t.trim().to_string()),
            cache_dir,
            offline: ["MODEL_OFFLINE", "HF_HUB_OFFLINE"]
                .iter()
                .any(|k| var(k).is_some_and(|v| truthy(&v))),
            verify: var("MODEL_VERIFY").is_some_and(|v| truthy(&v)),
            max_retries: set("MODELSCOPE_DOWNLOAD_MAX_RETRIES")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(5),
            retry_max_delay: secs("MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS", 60.0),
            connect_timeout: secs("MODELSCOPE_API_CONNECT_TIMEOUT", 10.0),
            read_timeout: secs("MODELSCOPE_DOWNLOAD_TIMEOUT", 60.0),
            file_timeout: secs("MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT", 3600.0),
            lock_timeout: secs("MODELSCOPE_DOWNLOAD_FILE_LOCK_TIMEOUT_SECONDS", 600.0),
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

    fn cfg(pairs: &[(&str, &str)]) -> HubConfig {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_env(move |k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn endpoint_is_normalised_like_the_python_client() {
        assert_eq!(cfg(&[]).endpoint, DEFAULT_ENDPOINT);
        let c = cfg(&[("MODELSCOPE_ENDPOINT", "mirror.example.org/")]);
        assert_eq!(c.endpoint, "https://mirror.example.org");
        assert_eq!(c.endpoint_host(), "mirror.example.org");
        let c = cfg(&[("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9/")]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        let c = cfg(&[("MODELSCOPE_DOMAIN", "www.modelscope.ai")]);
        assert_eq!(c.endpoint, "https://www.modelscope.ai");
    }

    #[test]
    fn empty_token_means_none_and_debug_hides_it() {
        assert!(cfg(&[("MODELSCOPE_API_TOKEN", "")]).token.is_none());
        let c = cfg(&[("MODELSCOPE_API_TOKEN", "ms-secret")]);
        assert_eq!(c.token.as_deref(), Some("ms-secret"));
        assert!(!format!("{c:?}").contains("ms-secret"));
    }

    #[test]
    fn offline_switches_and_cache_root() {
        assert!(!cfg(&[]).offline);
        assert!(cfg(&[("HF_HUB_OFFLINE", "1")]).offline);
        assert!(cfg(&[("MODEL_OFFLINE", "true")]).offline);
        assert!(!cfg(&[("MODEL_OFFLINE", "0")]).offline);
        assert_eq!(
            cfg(&[("HOME", "/home/u")]).cache_dir,
            PathBuf::from("/home/u/.cache/modelscope")
        );
        assert_eq!(
            cfg(&[("HOME", "/home/u"), ("MODELSCOPE_CACHE", "/models")]).cache_dir,
            PathBuf::from("/models")
        );
    }
}
