//! The result store: answers already scored, so a nightly scan pays only for what changed. A
//! result is keyed by what decides it ([`keys`]); before a pair is scored the store is asked,
//! and a hit answers the job with no model time. For `image_url` jobs it also keeps each URL's
//! validators with the digest of the image they named, so the next fetch is conditional and a
//! `304` answers from the store without a download.
//!
//! Off unless configured. A file ([`StoreLocation::File`], one process) or Redis
//! ([`StoreLocation::Redis`], shared by replicas). The store is an optimisation, never a
//! dependency: a failing call is logged and counted, and its jobs are scored as usual.

mod file;
pub mod keys;
mod metrics;
mod records;
mod redis_store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ofa_api::Scores;

use file::{FileStore, Table};
pub use keys::{digest_files, ImageDigest, ModelIdentity, ResultKey, Scope, TextKey};
pub use metrics::StoreMetrics;
pub use records::UrlRecord;
use redis_store::RedisStore;

/// Where results are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    File(PathBuf),
    /// A `redis://` or `rediss://` URL.
    Redis(String),
}

impl StoreLocation {
    /// A Redis URL by its scheme; anything else is a file path.
    pub fn parse(setting: &str) -> Self {
        if setting.starts_with("redis://") || setting.starts_with("rediss://") {
            StoreLocation::Redis(setting.to_owned())
        } else {
            StoreLocation::File(PathBuf::from(setting))
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub location: StoreLocation,
    /// How long an entry is kept after it is written.
    pub ttl: Duration,
    pub model: ModelIdentity,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("result store {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("result store {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error("result store: {0}")]
    Stopped(String),
}

impl StoreError {
    pub(crate) fn file(path: &Path, e: impl std::fmt::Display) -> Self {
        StoreError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

#[derive(Clone)]
enum Backend {
    File(FileStore),
    Redis(RedisStore),
}

pub struct ResultStore {
    backend: Backend,
    scope: Scope,
    ttl: Duration,
    metrics: Arc<StoreMetrics>,
}

impl ResultStore {
    /// Opens the store (a file is created, and swept of expired entries; Redis is connected
    /// to), counting into `metrics`.
    pub async fn open(
        settings: StoreSettings,
        metrics: Arc<StoreMetrics>,
    ) -> Result<Self, StoreError> {
        let backend = match &settings.location {
            StoreLocation::File(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || FileStore::open(&path)).await;
                Backend::File(opened.map_err(|e| StoreError::Stopped(e.to_string()))??)
            }
            StoreLocation::Redis(url) => Backend::Redis(RedisStore::open(url).await?),
        };
        Ok(ResultStore {
            backend,
            scope: Scope::new(&settings.model),
            ttl: settings.ttl,
            metrics,
        })
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn metrics(&self) -> &Arc<StoreMetrics> {
        &self.metrics
    }

    /// Each key's stored scores; a failed call is logged and reads as all missing.
    pub async fn results(&self, keys: &[ResultKey]) -> Vec<Option<Scores>> {
        let raw: Vec<[u8; 32]> = keys.iter().map(|k| k.0).collect();
        self.get(Table::Results, raw)
            .await
            .into_iter()
            .map(|v| v.and_then(|b| records::read_scores(&b)))
            .collect()
    }

    /// What each URL served last time; a failed call is logged and reads as all missing.
    pub async fn urls(&self, urls: &[&str]) -> Vec<Option<UrlRecord>> {
        let raw: Vec<[u8; 32]> = urls.iter().map(|u| keys::url_key(u)).collect();
        self.get(Table::Urls, raw)
            .await
            .into_iter()
            .map(|v| v.and_then(|b| records::read_url(&b)))
            .collect()
    }

    /// Stores scored results and what URLs served, durably (in one transaction or one
    /// pipeline) before it returns; a failure is logged.
    pub async fn save(&self, results: &[(ResultKey, Scores)], urls: &[(String, UrlRecord)]) {
        let mut entries: Vec<(Table, [u8; 32], Vec<u8>)> = results
            .iter()
            .map(|(k, s)| (Table::Results, k.0, records::write_scores(s, self.ttl)))
            .collect();
        entries.extend(urls.iter().map(|(u, r)| {
            (
                Table::Urls,
                keys::url_key(u),
                records::write_url(r, self.ttl),
            )
        }));
        if entries.is_empty() {
            return;
        }
        let saved = match &self.backend {
            Backend::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.put_many(&entries))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Stopped(e.to_string())))
            }
            Backend::Redis(r) => r.put_many(&entries, self.ttl).await,
        };
        if let Err(e) = saved {
            self.failed("save", &e);
        }
    }

    /// Entries in a file store's results table (`None` for Redis).
    pub async fn file_entries(&self) -> Option<u64> {
        match &self.backend {
            Backend::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.len().ok())
                    .await
                    .ok()
                    .flatten()
            }
            Backend::Redis(_) => None,
        }
    }

    async fn get(&self, table: Table, keys: Vec<[u8; 32]>) -> Vec<Option<Vec<u8>>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let n = keys.len();
        let got = match &self.backend {
            Backend::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.get_many(table, &keys))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Stopped(e.to_string())))
            }
            Backend::Redis(r) => r.get_many(table, &keys).await,
        };
        match got {
            Ok(v) if v.len() == n => v,
            Ok(_) => {
                self.failed("lookup", &StoreError::Stopped("a short answer".into()));
                vec![None; n]
            }
            Err(e) => {
                self.failed("lookup", &e);
                vec![None; n]
            }
        }
    }

    fn failed(&self, call: &str, e: &StoreError) {
        self.metrics.errors.inc();
        tracing::warn!(call, error = %e, "result_store_failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path: &Path, ttl: Duration) -> StoreSettings {
        StoreSettings {
            location: StoreLocation::File(path.to_owned()),
            ttl,
            model: ModelIdentity {
                model_id: "m".into(),
                revision: "r".into(),
                files: [1; 32],
                precision: "f32/cpu".into(),
                answers: vec!["yes".into(), "no".into()],
            },
        }
    }

    fn scores(p: f32) -> Scores {
        Scores {
            answers: vec!["yes".into(), "no".into()],
            log_probs: vec![p.ln(), (1.0 - p).ln()],
            probs: vec![p, 1.0 - p],
            argmax: usize::from(p < 0.5),
        }
    }

    #[tokio::test]
    async fn a_file_store_keeps_what_it_saved_across_opens_and_sweeps_what_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let metrics = Arc::new(StoreMetrics::default());
        let (a, b) = (ResultKey([1; 32]), ResultKey([2; 32]));
        let url = UrlRecord {
            validators: ofa_fetch::Validators {
                etag: Some("\"v1\"".into()),
                last_modified: None,
            },
            image: ImageDigest([3; 32]),
        };
        {
            let s = ResultStore::open(settings(&path, Duration::from_secs(3600)), metrics.clone())
                .await
                .unwrap();
            s.save(&[(a, scores(0.75))], &[("http://h/p".into(), url.clone())])
                .await;
            // One process at a time: a second open is refused with the reason.
            let again =
                ResultStore::open(settings(&path, Duration::from_secs(1)), metrics.clone()).await;
            assert!(matches!(again, Err(e) if e.to_string().contains("in use")));
        }
        {
            // Written already expired: never read back.
            let s = ResultStore::open(settings(&path, Duration::ZERO), metrics.clone())
                .await
                .unwrap();
            s.save(&[(b, scores(0.25))], &[]).await;
            assert_eq!(s.results(&[a, b]).await, [Some(scores(0.75)), None]);
            assert_eq!(
                s.urls(&["http://h/p", "http://h/q"]).await,
                [Some(url), None]
            );
            assert_eq!(s.file_entries().await, Some(2));
        }
        let s = ResultStore::open(settings(&path, Duration::from_secs(3600)), metrics.clone())
            .await
            .unwrap();
        assert_eq!(
            s.file_entries().await,
            Some(1),
            "the expired entry was swept"
        );
        assert_eq!(metrics.errors.get(), 0);
    }

    #[test]
    fn a_location_is_redis_by_its_scheme() {
        assert_eq!(
            StoreLocation::parse("redis://cache:6379/0"),
            StoreLocation::Redis("redis://cache:6379/0".into())
        );
        assert_eq!(
            StoreLocation::parse("rediss://cache"),
            StoreLocation::Redis("rediss://cache".into())
        );
        assert_eq!(
            StoreLocation::parse("/var/lib/ofa/results.redb"),
            StoreLocation::File("/var/lib/ofa/results.redb".into())
        );
    }
}
