//! `image_url`: an http(s) URL fetched under the [`AllowList`]: checked before any connection,
//! names resolved by [`CheckedResolver`] (the checked address is the one connected to), every
//! redirect checked the same way and counted, no proxy, no credentials, and the body read
//! within the size limit and the time limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
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
        match self.get_if_changed(url, None, deadline).await? {
            Fetched::Body { bytes, .. } => Ok(bytes),
            // Only an answer to a conditional request may say "not modified".
            Fetched::NotModified => Err(FetchError::Status {
                status: 304,
                message: format!(
                    "image_url {} answered 304 to a plain request",
                    shown_raw(url)
                ),
            }),
        }
    }

    /// The body at `url`, or [`Fetched::NotModified`] when `known` holds validators from an
    /// earlier fetch and the server says the body has not changed since (the body is then not
    /// sent). A body comes with the validators the server gave for it, for the next time.
    pub async fn get_if_changed(
        &self,
        url: &str,
        known: Option<&Validators>,
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|e| {
            FetchError::InvalidUrl(format!("image_url {:?} is not a URL: {e}", shown_raw(url)))
        })?;
        let shown = shown(&parsed);
        self.allow
            .check_url(&parsed)
            .map_err(|f| FetchError::Forbidden(format!("image_url {shown}: {f}")))?;
        let until = deadline.min(Instant::now() + self.timeout);
        let download = self.download(parsed, known, &shown);
        match tokio::time::timeout_at(until.into(), download).await {
            Ok(got) => got,
            Err(_) => Err(unreachable(&shown)),
        }
    }

    async fn download(
        &self,
        url: Url,
        known: Option<&Validators>,
        shown: &str,
    ) -> Result<Fetched, FetchError> {
        let mut request = self.client.get(url);
        if let Some(v) = known {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag.as_str());
            }
            if let Some(date) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date.as_str());
            }
        }
        let mut resp = request.send().await.map_err(|e| classify(&e, shown))?;
        let status = resp.status();
        let conditional = known.is_some_and(|v| !v.is_empty());
        if status == reqwest::StatusCode::NOT_MODIFIED && conditional {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                message: format!("image_url {shown} answered {status}"),
            });
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
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
        Ok(Fetched::Body {
            bytes: body.into(),
            validators,
        })
    }
}

/// What a server said identifies a body's version (`ETag`, `Last-Modified`), sent back as
/// `If-None-Match` and `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// A fetch's outcome: the body, or the server's word that the known version is current.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Body {
        bytes: Bytes,
        validators: Validators,
    },
    NotModified,
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

/// A string that is not a URL, cut short for an error message.
fn shown_raw(url: &str) -> String {
    url.chars().take(100).collect()
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
