//! A job's image bytes from its source: inline base64 (within the size limit before it is
//! decoded), a regular file under the image root, or a URL fetched under the address policy
//! (`ofa-fetch`); each bounded by the job's deadline and the fetch time limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ofa_fetch::{AllowList, ClientError, FetchError, Fetched, UrlFetcher, UrlSettings, Validators};

use crate::job::ImageSource;
use ofa_api::{ErrorType, Failure};

#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// `image_path` is resolved under it; unset, paths are refused.
    pub root: Option<PathBuf>,
    /// Which URLs may be fetched and which internal addresses are re-admitted; empty: public
    /// addresses only.
    pub url_allow: AllowList,
    /// Largest image accepted, from any source.
    pub max_bytes: usize,
    /// Longest one fetch (a URL with its redirects, or a file) may take.
    pub timeout: Duration,
    pub max_redirects: usize,
}

#[derive(Debug, Clone)]
pub struct Fetcher {
    root: Option<PathBuf>,
    max_bytes: usize,
    timeout: Duration,
    urls: UrlFetcher,
}

impl Fetcher {
    pub fn new(settings: ImageSettings) -> Result<Fetcher, ClientError> {
        let urls = UrlFetcher::new(UrlSettings {
            allow: settings.url_allow,
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
            max_redirects: settings.max_redirects,
        })?;
        Ok(Fetcher {
            root: settings.root,
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
            urls,
        })
    }

    /// The image, by `deadline` (the job's) or within the fetch time limit, whichever is first.
    pub async fn fetch(&self, source: &ImageSource, deadline: Instant) -> Result<Bytes, Failure> {
        let until = deadline.min(Instant::now() + self.timeout);
        match source {
            ImageSource::Inline(b64) => self.inline(b64),
            ImageSource::Url(u) => self.urls.get(u, until).await.map_err(|e| e.failure()),
            ImageSource::Path(p) => {
                let read = ofa_fetch::read_under(self.root.as_deref(), p, self.max_bytes);
                match tokio::time::timeout_at(until.into(), read).await {
                    Ok(got) => got.map_err(|e| e.failure()),
                    Err(_) => Err(FetchError::TimedOut(format!(
                        "image_path {p:?} could not be read in time"
                    ))
                    .failure()),
                }
            }
        }
    }

    /// An `image_url`, conditionally when `known` holds the validators of an earlier fetch:
    /// [`Fetched::NotModified`] then means the image is the one fetched before.
    pub async fn fetch_url(
        &self,
        url: &str,
        known: Option<&Validators>,
        deadline: Instant,
    ) -> Result<Fetched, Failure> {
        // The URL fetcher bounds it by the same fetch time limit itself.
        self.urls
            .get_if_changed(url, known, deadline)
            .await
            .map_err(|e| e.failure())
    }

    fn inline(&self, b64: &str) -> Result<Bytes, Failure> {
        // Base64 holds 3 bytes in 4 characters: refused before decoding what cannot fit.
        let data = b64.split_once(";base64,").map_or(b64, |(_, d)| d);
        let at_least = data.bytes().filter(|b| !b.is_ascii_whitespace()).count() / 4 * 3;
        if at_least > self.max_bytes + 3 {
            return Err(Failure::new(
                ErrorType::PayloadTooLarge,
                format!(
                    "the inline image has about {at_least} bytes, more than the limit of {}",
                    self.max_bytes
                ),
            ));
        }
        let bytes = ofa_api::base64::decode(b64, "\"image\"")?;
        if bytes.len() > self.max_bytes {
            return Err(Failure::new(
                ErrorType::PayloadTooLarge,
                format!(
                    "the inline image has {} bytes, more than the limit of {}",
                    bytes.len(),
                    self.max_bytes
                ),
            ));
        }
        Ok(bytes.into())
    }
}
