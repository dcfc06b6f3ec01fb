//! The two hub API calls a model download needs, with the Python client's auth and error mapping.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use crate::listing::{error_details, parse_listing, Listing};
use crate::repo::{form_encode, RepoId};
use crate::{HubConfig, HubError};

const USER_AGENT: &str = concat!("ofa-entail/", env!("CARGO_PKG_VERSION"));

pub struct HubClient {
    http: reqwest::Client,
    endpoint: String,
    with_token: bool,
}

/// What went wrong with one call, and whether and when to try again.
pub(crate) struct CallError {
    pub error: HubError,
    pub retry_after: Option<Duration>,
}

impl From<HubError> for CallError {
    fn from(error: HubError) -> CallError {
        CallError {
            error,
            retry_after: None,
        }
    }
}

fn request_id_suffix(id: Option<String>) -> String {
    id.map(|id| format!(", request id {id}"))
        .unwrap_or_default()
}

impl HubClient {
    pub fn new(cfg: &HubConfig) -> Result<HubClient, HubError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &cfg.token {
            // Both, as the Python client sends them; redirects to another host drop both.
            let bad = |_| HubError::InvalidId("MODELSCOPE_API_TOKEN has invalid characters".into());
            let mut bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(bad)?;
            bearer.set_sensitive(true);
            let mut cookie =
                HeaderValue::from_str(&format!("m_session_id={token}")).map_err(bad)?;
            cookie.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
            headers.insert(COOKIE, cookie);
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .build()
            .map_err(|e| HubError::Transport {
                path: String::new(),
                url: cfg.endpoint.clone(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(HubClient {
            http,
            endpoint: cfg.endpoint.clone(),
            with_token: cfg.token.is_some(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Lists the repo's files at `revision`.
    pub(crate) async fn list(&self, repo: &RepoId, revision: &str) -> Result<Listing, CallError> {
        let url = format!(
            "{}/api/v1/models/{repo}/repo/files?Revision={}&Recursive=True",
            self.endpoint,
            form_encode(revision)
        );
        let resp = self.send(&url, "file listing", None).await?;
        let resp = self.check(resp, repo, "file listing", &url).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport("file listing", &url, e))?;
        parse_listing(&body).map_err(|message| {
            HubError::BadListing {
                path: format!("{repo}@{revision}"),
                message,
            }
            .into()
        })
    }

    /// Starts downloading `path`, from byte `offset` when resuming. A 416 is returned as is.
    pub(crate) async fn open(
        &self,
        repo: &RepoId,
        revision: &str,
        path: &str,
        offset: u64,
    ) -> Result<Response, CallError> {
        let url = format!(
            "{}/api/v1/models/{repo}/repo?Revision={}&FilePath={}",
            self.endpoint,
            form_encode(revision),
            form_encode(path)
        );
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let resp = self.send(&url, path, range).await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(resp);
        }
        self.check(resp, repo, path, &url).await
    }

    async fn send(
        &self,
        url: &str,
        what: &str,
        range: Option<String>,
    ) -> Result<Response, CallError> {
        let mut req = self.http.get(url).header("Accept-Encoding", "identity");
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        req.send().await.map_err(|e| transport(what, url, e).into())
    }

    /// Maps a non-success status to the error users can act on.
    async fn check(
        &self,
        resp: Response,
        repo: &RepoId,
        what: &str,
        url: &str,
    ) -> Result<Response, CallError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64);
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.unwrap_or_default();
        let (message, body_id) = error_details(&body);
        let request_id = request_id_suffix(body_id.or(header_id));
        let error = match status.as_u16() {
            404 if what == "file listing" => HubError::NotFound {
                repo: repo.to_string(),
                endpoint: self.endpoint.clone(),
                with_token: self.with_token,
                request_id,
            },
            s @ (401 | 403) => HubError::Denied {
                repo: repo.to_string(),
                endpoint: self.endpoint.clone(),
                status: s,
                with_token: self.with_token,
                request_id,
            },
            s => HubError::Http {
                path: what.to_string(),
                url: strip_query(url),
                status: s,
                message,
                request_id,
            },
        };
        Err(CallError { error, retry_after })
    }
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

pub(crate) fn transport(what: &str, url: &str, e: reqwest::Error) -> HubError {
    // The error's own chain says what failed (connect, timeout, reset); keep all of it.
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    HubError::Transport {
        path: what.to_string(),
        url: strip_query(url),
        message,
    }
}
