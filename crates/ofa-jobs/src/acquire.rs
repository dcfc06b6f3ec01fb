//! A chunk's images, and what the result store already knows of them. Without a store every
//! image is fetched. With one: a URL whose last fetch left validators, and whose result for
//! this text is stored, is fetched conditionally, and a `304` answers from the store with no
//! download; every image fetched is hashed and looked up, and a hit answers from the store.
//! What misses goes on to the model with its key, to be stored once scored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ofa_api::Scores;
use ofa_fetch::{Fetched, Validators};
use tokio::task::JoinSet;

use crate::fetch::Fetcher;
use crate::job::ImageSource;
use crate::outcome::Failure;
use crate::store::{ImageDigest, ResultKey, ResultStore, TextKey, UrlRecord};
use ofa_api::ErrorType;

/// One job's image source, and its text's key when the store may answer it.
pub(crate) struct Wanted {
    pub source: ImageSource,
    pub text: Option<TextKey>,
}

pub(crate) enum Got {
    /// Answered from the store.
    Stored {
        scores: Scores,
        fetch: Duration,
    },
    /// To be scored; `key` is where its result goes in the store.
    Image {
        bytes: Bytes,
        fetch: Duration,
        key: Option<ResultKey>,
    },
    Failed(Failure),
}

pub(crate) struct Acquired {
    /// One per [`Wanted`], in order.
    pub got: Vec<Got>,
    /// What the URLs fetched with validators served, to be stored with the results.
    pub urls: Vec<(String, UrlRecord)>,
}

/// A fetch's outcome before the store has looked at the bytes.
enum Fetch {
    Bytes {
        bytes: Bytes,
        digest: Option<ImageDigest>,
        validators: Validators,
        fetch: Duration,
    },
    NotModified(Duration),
    Failed(Failure),
}

pub(crate) async fn acquire(
    fetcher: &Arc<Fetcher>,
    store: Option<&ResultStore>,
    wanted: &[Wanted],
    deadline: Instant,
) -> Acquired {
    // A URL's record and the stored result it leads to, for conditional fetches.
    let mut known: Vec<Option<(UrlRecord, Scores)>> = vec![None; wanted.len()];
    if let Some(store) = store {
        known = conditional(store, wanted).await;
    }
    let mut fetched: Vec<Option<Fetch>> = (0..wanted.len()).map(|_| None).collect();
    let mut tasks = JoinSet::new();
    for (i, w) in wanted.iter().enumerate() {
        let fetcher = fetcher.clone();
        let source = w.source.clone();
        let validators = known[i].as_ref().map(|(r, _)| r.validators.clone());
        let hash = store.is_some() && w.text.is_some();
        tasks.spawn(async move {
            let t = Instant::now();
            let got = match &source {
                ImageSource::Url(u) => fetcher.fetch_url(u, validators.as_ref(), deadline).await,
                other => fetcher
                    .fetch(other, deadline)
                    .await
                    .map(|bytes| Fetched::Body {
                        bytes,
                        validators: Validators::default(),
                    }),
            };
            let fetch = t.elapsed();
            let got = match got {
                Ok(Fetched::NotModified) => Fetch::NotModified(fetch),
                Ok(Fetched::Body { bytes, validators }) => Fetch::Bytes {
                    digest: hash.then(|| ImageDigest::of(&bytes)),
                    bytes,
                    validators,
                    fetch,
                },
                Err(f) => Fetch::Failed(f),
            };
            (i, got)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, got)) = joined {
            fetched[i] = Some(got);
        }
    }
    // Keys of the fetched images, looked up in one call.
    let keys: Vec<Option<ResultKey>> = wanted
        .iter()
        .zip(&fetched)
        .map(|(w, f)| match (store, w.text, f) {
            (
                Some(s),
                Some(text),
                Some(Fetch::Bytes {
                    digest: Some(d), ..
                }),
            ) => Some(ResultKey::new(s.scope(), d, &text)),
            _ => None,
        })
        .collect();
    let mut stored: Vec<Option<Scores>> = vec![None; wanted.len()];
    if let Some(store) = store {
        let (at, lookup): (Vec<usize>, Vec<ResultKey>) = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (i, k)))
            .unzip();
        for (i, found) in at.into_iter().zip(store.results(&lookup).await) {
            if found.is_none() {
                store.metrics().misses.inc();
            }
            stored[i] = found;
        }
    }
    let mut urls = Vec::new();
    let mut got = Vec::with_capacity(wanted.len());
    for (i, f) in fetched.into_iter().enumerate() {
        got.push(match f {
            Some(Fetch::NotModified(fetch)) => {
                let metrics = store.map(|s| s.metrics());
                metrics.inspect(|m| m.not_modified.inc());
                match known[i].take() {
                    Some((_, scores)) => {
                        metrics.inspect(|m| m.hits.inc());
                        Got::Stored { scores, fetch }
                    }
                    // A 304 to a request that named no version cannot be used.
                    None => Got::Failed(Failure::transient(
                        ErrorType::ImageFetchFailed,
                        "the image server answered 304 Not Modified to a plain request",
                    )),
                }
            }
            Some(Fetch::Bytes {
                bytes,
                digest,
                validators,
                fetch,
            }) => {
                if let (ImageSource::Url(u), Some(d), false) =
                    (&wanted[i].source, digest, validators.is_empty())
                {
                    urls.push((
                        u.clone(),
                        UrlRecord {
                            validators,
                            image: d,
                        },
                    ));
                }
                match stored[i].take() {
                    Some(scores) => {
                        store.inspect(|s| s.metrics().hits.inc());
                        Got::Stored { scores, fetch }
                    }
                    None => Got::Image {
                        bytes,
                        fetch,
                        key: keys[i],
                    },
                }
            }
            Some(Fetch::Failed(f)) => Got::Failed(f),
            None => Got::Failed(Failure::transient(
                ErrorType::Internal,
                "the image fetch stopped",
            )),
        });
    }
    Acquired { got, urls }
}

/// For each URL job: its last record and the result stored for that image and this text,
/// when both are there (two lookups for the whole chunk).
async fn conditional(store: &ResultStore, wanted: &[Wanted]) -> Vec<Option<(UrlRecord, Scores)>> {
    let mut out: Vec<Option<(UrlRecord, Scores)>> = vec![None; wanted.len()];
    let (at, urls): (Vec<usize>, Vec<&str>) = wanted
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match (&w.source, w.text) {
            (ImageSource::Url(u), Some(_)) => Some((i, u.as_str())),
            _ => None,
        })
        .unzip();
    let records = store.urls(&urls).await;
    let mut candidates = Vec::new();
    for (i, record) in at.into_iter().zip(records) {
        if let (Some(r), Some(text)) = (record, wanted[i].text) {
            candidates.push((i, ResultKey::new(store.scope(), &r.image, &text), r));
        }
    }
    let keys: Vec<ResultKey> = candidates.iter().map(|(_, k, _)| *k).collect();
    for ((i, _, record), scores) in candidates.into_iter().zip(store.results(&keys).await) {
        out[i] = scores.map(|s| (record, s));
    }
    out
}
