//! Images as JSON bodies name them: base64 (a `data:image/…;base64,` URI too), or an
//! `http(s)://` URL. URLs are fetched through `ofa-fetch`'s hardened fetcher (the address policy of
//! `IMAGE_URL_ALLOW`, the checked address connected to, redirects checked, size and time
//! bounded) once the request is let in, within its deadline, a few at a time, each distinct
//! URL once; what a fetch brings counts against the upload budget like a body would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::stream::{self, StreamExt};
use ofa_api::Failure;
use ofa_engine::Pair;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{ApiError, ErrorType};
use crate::AppState;

/// Fetches of one request in flight at once: enough to hide a slow host, few enough that one
/// request cannot open a hundred connections.
pub const FETCHES_PER_REQUEST: usize = 8;

/// An image as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Inline(Bytes),
    Url(String),
}

impl ImageRef {
    /// A JSON string: an `http(s)` URL, or base64 (a `data:…;base64,` prefix allowed).
    pub fn parse(s: &str, what: &str) -> Result<ImageRef, ApiError> {
        let head = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if head.starts_with("http://") || head.starts_with("https://") {
            return Ok(ImageRef::Url(s.to_owned()));
        }
        Ok(ImageRef::Inline(decode(s, what)?.into()))
    }

    /// A string that names an image rather than being a text: an `http(s)` URL or a
    /// `data:image/` URI (what rerank's `documents` and `query` go by).
    pub fn looks_like_image(s: &str) -> bool {
        let head = s.get(..11).unwrap_or(s).to_ascii_lowercase();
        head.starts_with("http://")
            || head.starts_with("https://")
            || head.starts_with("data:image/")
    }
}

fn decode(s: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    Ok(ofa_api::base64::decode(s, what)?)
}

/// A pair as parsed, its image perhaps still to be fetched.
#[derive(Debug, Clone)]
pub struct PendingPair {
    pub image: ImageRef,
    pub text: String,
    pub premise: Option<String>,
}

/// A request's pairs with their images, and the upload budget their fetched images hold
/// (keep it until the answer is sent).
pub struct Resolved {
    pub pairs: Vec<Pair>,
    pub fetch: Duration,
    pub held: Vec<OwnedSemaphorePermit>,
}

/// The pairs with their images; a failed fetch fails the request, naming the item when there
/// are several.
pub async fn resolve(
    state: &AppState,
    pending: Vec<PendingPair>,
    cache_scope: u64,
    deadline: Instant,
) -> Result<Resolved, ApiError> {
    let several = pending.len() > 1;
    let refs = pending.iter().map(|p| p.image.clone()).collect();
    let fetched = fetch_all(state, refs, deadline).await;
    let pairs = pending
        .into_iter()
        .zip(fetched.images)
        .enumerate()
        .map(|(i, (p, image))| {
            let image = image.map_err(|f| {
                let e = ApiError::from(f);
                if several {
                    e.at(&format!("item {i}: "))
                } else {
                    e
                }
            })?;
            Ok(Pair {
                image,
                text: p.text,
                premise: p.premise,
                cache_scope,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Resolved {
        pairs,
        fetch: fetched.time,
        held: fetched.permits,
    })
}

/// The images of one request, and what holding them costs.
pub struct Fetched {
    /// One per reference, in order: the bytes, or why there are none.
    pub images: Vec<Result<Bytes, Failure>>,
    /// Wall time of the fetches (zero when nothing was fetched).
    pub time: Duration,
    /// Upload budget held for the fetched bytes, until the answer is sent.
    pub permits: Vec<OwnedSemaphorePermit>,
}

/// Every reference's bytes: inline ones as they are, each distinct URL fetched once.
pub async fn fetch_all(state: &AppState, refs: Vec<ImageRef>, deadline: Instant) -> Fetched {
    let started = Instant::now();
    let mut urls: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in &refs {
        if let ImageRef::Url(u) = r {
            if !index.contains_key(u) {
                index.insert(u.clone(), urls.len());
                urls.push(u.clone());
            }
        }
    }
    if urls.is_empty() {
        let images = refs
            .into_iter()
            .map(|r| match r {
                ImageRef::Inline(b) => Ok(b),
                ImageRef::Url(_) => unreachable!("no URL among them"),
            })
            .collect();
        return Fetched {
            images,
            time: Duration::ZERO,
            permits: Vec::new(),
        };
    }
    let got: Vec<Result<(Bytes, OwnedSemaphorePermit), Failure>> = stream::iter(urls)
        .map(|url| async move { fetch_one(state, &url, deadline).await })
        .buffered(FETCHES_PER_REQUEST)
        .collect()
        .await;
    let time = started.elapsed();
    state.http_metrics.record_fetch(time.as_secs_f64());
    let mut permits = Vec::new();
    let mut by_url: Vec<Result<Bytes, Failure>> = Vec::with_capacity(got.len());
    for g in got {
        by_url.push(g.map(|(bytes, permit)| {
            permits.push(permit);
            bytes
        }));
    }
    let images = refs
        .into_iter()
        .map(|r| match r {
            ImageRef::Inline(b) => Ok(b),
            ImageRef::Url(u) => by_url[index[&u]].clone(),
        })
        .collect();
    Fetched {
        images,
        time,
        permits,
    }
}

async fn fetch_one(
    state: &AppState,
    url: &str,
    deadline: Instant,
) -> Result<(Bytes, OwnedSemaphorePermit), Failure> {
    let Some(fetcher) = &state.config.image_urls else {
        return Err(Failure::new(
            ErrorType::InvalidImageUrl,
            "this server takes images inline only (base64 or a data URI), not by URL",
        ));
    };
    let bytes = fetcher.get(url, deadline).await.map_err(|e| e.failure())?;
    let permit = state
        .reserve_upload(bytes.len())
        .map_err(|e| Failure::transient(e.kind, e.message))?;
    Ok((bytes, permit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_a_url_a_data_uri_or_base64() {
        assert_eq!(
            ImageRef::parse("https://example.com/a.jpg", "x").unwrap(),
            ImageRef::Url("https://example.com/a.jpg".into())
        );
        assert_eq!(
            ImageRef::parse("HTTP://example.com/a.jpg", "x").unwrap(),
            ImageRef::Url("HTTP://example.com/a.jpg".into())
        );
        assert_eq!(
            ImageRef::parse("data:image/png;base64,aGk=", "x").unwrap(),
            ImageRef::Inline(Bytes::from_static(b"hi"))
        );
        assert_eq!(
            ImageRef::parse("aGk=", "x").unwrap(),
            ImageRef::Inline(Bytes::from_static(b"hi"))
        );
        let e = ImageRef::parse("ftp://example.com/a.jpg", "\"image\"").unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidBase64);
        assert!(e.message.starts_with("\"image\""), "{}", e.message);
        assert!(ImageRef::looks_like_image("https://x/y.png"));
        assert!(ImageRef::looks_like_image("data:image/jpeg;base64,AAAA"));
        assert!(!ImageRef::looks_like_image("a photo of https://x"));
        assert!(!ImageRef::looks_like_image("data: the numbers"));
    }
}
