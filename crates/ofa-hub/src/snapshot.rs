//! A whole model repository at a revision: from the cache when it is there and verified,
//! downloaded file by file when it is not, or from the cache alone when offline.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::Cache;
use crate::client::{CallError, HubClient};
use crate::download::{FileJob, Outcome};
use crate::listing::Listing;
use crate::progress::{Event, Progress};
use crate::repo::{check_revision, safe_relative, RepoId};
use crate::{HubConfig, HubError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Offline: taken from the cache without a request.
    Offline,
    /// Every file was already cached and verified against the listing.
    Cached,
    /// This many files (and bytes) were downloaded.
    Downloaded { files: usize, bytes: u64 },
    /// The hub could not be reached; the cached copy was used unverified.
    CacheFallback,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub source: Source,
}

/// The model directory for `repo` at `revision`, downloading what the cache lacks.
pub async fn fetch(
    cfg: &HubConfig,
    repo: &RepoId,
    revision: &str,
    progress: &dyn Progress,
) -> Result<Snapshot, HubError> {
    check_revision(revision)?;
    let cache = Cache::new(&cfg.cache_dir);
    if cfg.offline {
        return Ok(Snapshot {
            dir: from_cache(&cache, cfg, repo, revision)?,
            source: Source::Offline,
        });
    }
    let client = HubClient::new(cfg)?;
    let listing = match client.list(repo, revision).await {
        // The hub down or unreachable: a pod restart comes up from its cache at once, as a pod
        // with nothing cached retries with backoff.
        Err(c) if c.error.is_transient() => match from_cache(&cache, cfg, repo, revision) {
            Ok(dir) => {
                progress.event(Event::UsingCache {
                    error: c.error.to_string(),
                });
                return Ok(Snapshot {
                    dir,
                    source: Source::CacheFallback,
                });
            }
            Err(HubError::NotCached { .. }) => {
                list_with_retries(&client, cfg, repo, revision, progress, c).await
            }
            Err(e) => return Err(e),
        },
        other => other.map_err(|c| c.error),
    };
    let files = match listing? {
        Listing::Files(files) => files,
        Listing::UnknownRevision => {
            return Err(HubError::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                endpoint: client.endpoint().to_string(),
            })
        }
    };
    if files.is_empty() {
        return Err(HubError::EmptyRepo {
            repo: repo.to_string(),
            revision: revision.to_string(),
        });
    }
    if let Some(bad) = files.iter().find(|f| !safe_relative(&f.path)) {
        return Err(HubError::UnsafePath(bad.path.clone()));
    }
    progress.event(Event::Listed {
        files: files.len(),
        bytes: files.iter().filter_map(|f| f.size).sum(),
    });
    let dir = cache.download_dir(repo, revision)?;
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(HubError::io(&dir))?;
    }
    let known = crate::manifest::load(&dir);
    let (mut fetched, mut bytes, mut rehashed) = (0, 0, 0);
    for file in &files {
        let target = dir.join(&file.path);
        let job = FileJob {
            client: &client,
            cfg,
            cache: &cache,
            repo,
            revision,
            file,
            target: &target,
            known: known.get(&file.path),
            progress,
        };
        match job.run().await? {
            Outcome::Downloaded(n) => {
                fetched += 1;
                bytes += n;
            }
            Outcome::Cached { hashed } => rehashed += usize::from(hashed),
        }
    }
    // Only when something was verified anew; best effort: a read-only cache still serves,
    // only without an offline size check.
    if fetched + rehashed > 0 || known.len() != files.len() {
        let _ = crate::manifest::write(&dir, repo, revision, &files);
    }
    let source = if fetched == 0 {
        Source::Cached
    } else {
        Source::Downloaded {
            files: fetched,
            bytes,
        }
    };
    Ok(Snapshot { dir, source })
}

/// The cached snapshot, checked against the manifest of its download; no request.
fn from_cache(
    cache: &Cache,
    cfg: &HubConfig,
    repo: &RepoId,
    revision: &str,
) -> Result<PathBuf, HubError> {
    let dir = cache.find(repo, revision)?;
    crate::manifest::check(&dir, cfg.verify)?;
    Ok(dir)
}

/// The listing, retried on 429, 5xx and network errors after a first failure, with backoff
/// from 0.5 s, doubling (the Python client's API adapter: factor 0.5), with jitter, unless
/// `Retry-After` says.
async fn list_with_retries(
    client: &HubClient,
    cfg: &HubConfig,
    repo: &RepoId,
    revision: &str,
    progress: &dyn Progress,
    first: CallError,
) -> Result<Listing, HubError> {
    let mut last = first;
    let mut backoff = crate::backoff::delays(Duration::from_millis(500), cfg.retry_max_delay);
    for _ in 0..cfg.max_retries {
        let delay = last
            .retry_after
            .or_else(|| backoff.next())
            .unwrap_or(cfg.retry_max_delay)
            .min(cfg.retry_max_delay);
        progress.event(Event::Retry {
            path: "file listing",
            error: last.error.to_string(),
            delay,
        });
        tokio::time::sleep(delay).await;
        match client.list(repo, revision).await {
            Ok(l) => return Ok(l),
            Err(c) if c.error.is_transient() => last = c,
            Err(c) => return Err(c.error),
        }
    }
    Err(last.error)
}
