//! A job's image bytes from its source: inline base64, a path under the image root, or a URL
//! fetched with timeouts, a body limit, bounded redirects and an optional host allow-list.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::job::ImageSource;
use crate::outcome::Failure;

#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// `image_path` is resolved under it; unset, paths are refused.
    pub root: Option<PathBuf>,
    /// Hosts `image_url` may name (and redirect to); empty: any.
    pub url_allow: Vec<String>,
    /// Largest image accepted, from any source.
    pub max_bytes: usize,
    pub connect_timeout: Duration,
    /// Whole-download limit for one URL.
    pub read_timeout: Duration,
    pub max_redirects: usize,
}

#[derive(Debug, Clone)]
pub struct Fetcher {
    settings: ImageSettings,
    client: reqwest::Client,
}

fn host_allowed(allow: &[String], host: Option<&str>) -> bool {
    allow.is_empty() || host.is_some_and(|h| allow.iter().any(|a| a.eq_ignore_ascii_case(h)))
}

impl Fetcher {
    pub fn new(settings: ImageSettings) -> Result<Fetcher, reqwest::Error> {
        let allow = settings.url_allow.clone();
        let max = settings.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max {
                attempt.error(format!("more than {max} redirects"))
            } else if !host_allowed(&allow, attempt.url().host_str()) {
                let to = attempt.url().to_string();
                attempt.error(format!("redirect to a host not in IMAGE_URL_ALLOW: {to}"))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.read_timeout)
            .redirect(policy)
            .build()?;
        Ok(Fetcher { settings, client })
    }

    pub async fn fetch(&self, source: &ImageSource) -> Result<Bytes, Failure> {
        match source {
            ImageSource::Inline(b64) => ofa_server::parse::decode_base64(b64, "\"image\"")
                .map(Bytes::from)
                .map_err(|e| Failure::input(e.kind.as_str(), e.message)),
            ImageSource::Path(p) => self.read_path(p).await,
            ImageSource::Url(u) => self.download(u).await,
        }
    }

    async fn read_path(&self, p: &str) -> Result<Bytes, Failure> {
        let refused = |m: String| Failure::input("image_path_refused", m);
        let root = self
            .settings
            .root
            .as_ref()
            .ok_or_else(|| refused("image_path needs IMAGE_ROOT, which is not set".into()))?;
        let rel = Path::new(p);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refused(format!("image_path {p:?} leaves IMAGE_ROOT")));
        }
        let full = root.join(rel);
        let not_found =
            |e: std::io::Error| Failure::input("image_not_found", format!("image_path {p:?}: {e}"));
        // Symbolic links may point anywhere: the resolved file must still be under the root.
        let real = tokio::fs::canonicalize(&full).await.map_err(not_found)?;
        let real_root = tokio::fs::canonicalize(root)
            .await
            .map_err(|e| refused(format!("IMAGE_ROOT {}: {e}", root.display())))?;
        if !real.starts_with(&real_root) {
            return Err(refused(format!("image_path {p:?} leaves IMAGE_ROOT")));
        }
        let size = tokio::fs::metadata(&real).await.map_err(not_found)?.len();
        if size > self.settings.max_bytes as u64 {
            return Err(Failure::input(
                "payload_too_large",
                format!(
                    "image_path {p:?} has {size} bytes, more than the limit of {}",
                    self.settings.max_bytes
                ),
            ));
        }
        tokio::fs::read(&real)
            .await
            .map(Bytes::from)
            .map_err(not_found)
    }

    async fn download(&self, url: &str) -> Result<Bytes, Failure> {
        let refused = |m: String| Failure::input("image_url_refused", m);
        let parsed =
            reqwest::Url::parse(url).map_err(|e| refused(format!("image_url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refused(format!(
                "image_url must be http or https, got {url:?}"
            )));
        }
        if !host_allowed(&self.settings.url_allow, parsed.host_str()) {
            return Err(refused(format!(
                "image_url host is not in IMAGE_URL_ALLOW: {url:?}"
            )));
        }
        let transient = |e: reqwest::Error| {
            Failure::transient(
                "image_fetch_failed",
                format!("image_url {url:?}: {}", with_causes(&e)),
            )
        };
        let mut resp = self.client.get(parsed).send().await.map_err(|e| {
            if e.is_redirect() {
                refused(format!("image_url {url:?}: {}", with_causes(&e)))
            } else {
                transient(e)
            }
        })?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::transient(
                "image_fetch_failed",
                format!("image_url {url:?} answered {status}"),
            ));
        }
        if !status.is_success() {
            return Err(Failure::input(
                "image_url_failed",
                format!("image_url {url:?} answered {status}"),
            ));
        }
        let max = self.settings.max_bytes;
        let too_big = || {
            Failure::input(
                "payload_too_large",
                format!("image_url {url:?} is larger than the limit of {max} bytes"),
            )
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transient)? {
            if body.len() + chunk.len() > max {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }
}

/// An error with its causes ("error sending request: … Connection refused"): the HTTP client's
/// own message names neither the refusal nor the time-out.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}
