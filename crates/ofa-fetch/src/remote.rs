//! `image_url`: an http(s) URL fetched under the [`AllowList`]: checked before any connection,
//! names resolved by [`CheckedResolver`] (the checked address is the one connected to), every
//! redirect checked the same way and counted, no proxy, no credentials, and the body read
//! within the size limit and the time limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Url;

use crate::allow::{AllowList, Forbidden};
use crate::resolver::CheckedResolver;
use crate::FetchError;

#[derive(Debug, Clone)]
pub struct UrlSettings {
    pub allow: AllowList,
    /// Largest body accepted.
    pub max_bytes: usize,
    /// The whole fetch, redirects and body included.
    pub timeout: Duration,
    pub max_redirects: usize,
}

#[derive(Debug, Clone)]
pub struct UrlFetcher {
    allow: Arc<AllowList>,
    client: reqwest::Client,
    max_bytes: usize,
    timeout: Duration,
}

impl UrlFetcher {
    pub fn new(settings: UrlSettings) -> Result<Self, ClientError> {
        let allow = Arc::new(settings.allow);
        let max = settings.max_redirects;
        let policy_allow = allow.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the URLs before this one, the first request's included.
            if attempt.previous().len() > max {
                return attempt.error(TooManyRedirects(max));
            }
            match policy_allow.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(f) => {
                    let why = Forbidden(format!("a redirect was refused: {f}"));
                    attempt.error(why)
                }
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver {
                allow: allow.clone(),
            }))
            // A proxy from the environment would connect on our behalf, past every check.
            .no_proxy()
            .redirect(redirects)
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(UrlFetcher {
            allow,
            client,
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
        })
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// The body at `url`, by `deadline` at the latest.
    pub async fn get(&self, url: &str, deadline: Instant) -> Result<Bytes, FetchError> {
        let parsed = Url::parse(url).map_err(|e| {
            let shown: String = url.chars().take(100).collect();
            FetchError::InvalidUrl(format!("image_url {shown:?} is not a URL: {e}"))
        })?;
        let shown = shown(&parsed);
        self.allow
            .check_url(&parsed)
            .map_err(|f| FetchError::Forbidden(format!("image_url {shown}: {f}")))?;
        let until = deadline.min(Instant::now() + self.timeout);
        match tokio::time::timeout_at(until.into(), self.download(parsed, &shown)).await {
            Ok(got) => got,
            Err(_) => Err(unreachable(&shown)),
        }
    }

    async fn download(&self, url: Url, shown: &str) -> Result<Bytes, FetchError> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| classify(&e, shown))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                message: format!("image_url {shown} answered {status}"),
            });
        }
        let max = self.max_bytes;
        let too_big = || {
            FetchError::TooLarge(format!(
                "image_url {shown} is larger than the limit of {max} bytes"
            ))
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, shown))? {
            if body.len() + chunk.len() > max {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }
}

/// The HTTP client could not be set up (its TLS roots, say): a start-up error.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the image URL client: {0}")]
pub struct ClientError(String);

#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
struct TooManyRedirects(usize);

/// The URL as errors and logs show it: without its query and fragment, which may carry a
/// signed URL's token.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// One message for every way a connection can fail (refused, reset, silent, not HTTP), so a
/// result cannot tell a closed port from an open one.
fn unreachable(shown: &str) -> FetchError {
    FetchError::Unreachable(format!(
        "image_url {shown} could not be fetched (no connection, no answer in time, or not an HTTP answer)"
    ))
}

fn classify(e: &reqwest::Error, shown: &str) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<Forbidden>() {
            return FetchError::Forbidden(format!("image_url {shown}: {f}"));
        }
        if let Some(r) = s.downcast_ref::<TooManyRedirects>() {
            return FetchError::TooManyRedirects(format!("image_url {shown}: {r}"));
        }
        source = s.source();
    }
    unreachable(shown)
}
