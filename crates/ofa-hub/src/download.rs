//! One file: resume from `{target}.incomplete`, retry with backoff, verify size and SHA-256, then
//! rename into place. A file that fails verification never reaches the target path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE};
use reqwest::StatusCode;

use crate::cache::{incomplete_path, Cache};
use crate::client::{transport, HubClient};
use crate::hash::sha256_file;
use crate::listing::RepoFile;
use crate::manifest::Verified;
use crate::progress::{Event, Progress};
use crate::repo::RepoId;
use crate::{lock, HubConfig, HubError};

/// Attempts at a file whose bytes fail the hash, each a fresh download (as the Python client).
const CHECKSUM_ATTEMPTS: u32 = 3;
/// Attempts at a file whose announced or received size is wrong.
const SIZE_ATTEMPTS: u32 = 2;

pub enum Outcome {
    /// Already there; `hashed` when that took re-hashing rather than the manifest's word.
    Cached {
        hashed: bool,
    },
    Downloaded(u64),
}

/// Boxed: the error is large and this travels through every `?`.
enum Failure {
    /// Network or hub load: keep the partial file and resume.
    Retry(Box<HubError>, Option<Duration>),
    Checksum(Box<HubError>),
    Size(Box<HubError>),
    Fatal(Box<HubError>),
}

impl Failure {
    fn retry(e: HubError, after: Option<Duration>) -> Failure {
        Failure::Retry(Box::new(e), after)
    }
    fn checksum(e: HubError) -> Failure {
        Failure::Checksum(Box::new(e))
    }
    fn size(e: HubError) -> Failure {
        Failure::Size(Box::new(e))
    }
    fn fatal(e: HubError) -> Failure {
        Failure::Fatal(Box::new(e))
    }
}

impl From<crate::client::CallError> for Failure {
    fn from(c: crate::client::CallError) -> Failure {
        if c.error.is_transient() {
            Failure::Retry(Box::new(c.error), c.retry_after)
        } else {
            Failure::Fatal(Box::new(c.error))
        }
    }
}

/// Whether `path` has the listing's size and hash (where it gave them), and whether that took
/// hashing: `None` when it does not match, `Some(hashed)` when it does.
fn matches(
    path: &Path,
    file: &RepoFile,
    known: Option<&Verified>,
) -> std::io::Result<Option<bool>> {
    let len = std::fs::metadata(path)?.len();
    if file.size.is_some_and(|s| s != len) {
        return Ok(None);
    }
    match &file.sha256 {
        Some(h) if known.is_some_and(|k| k.vouches_for(path, len, h)) => Ok(Some(false)),
        Some(h) => Ok((sha256_file(path)? == *h).then_some(true)),
        None => Ok(Some(false)),
    }
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// `bytes a-b/total` or `bytes */total` → (start, total).
fn content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse().ok());
    Some((start, total))
}

pub struct FileJob<'a> {
    pub client: &'a HubClient,
    pub cfg: &'a HubConfig,
    pub cache: &'a Cache,
    pub repo: &'a RepoId,
    pub revision: &'a str,
    pub file: &'a RepoFile,
    pub target: &'a Path,
    /// The file as an earlier verified download recorded it, if any.
    pub known: Option<&'a Verified>,
    pub progress: &'a dyn Progress,
}

impl FileJob<'_> {
    pub async fn run(&self) -> Result<Outcome, HubError> {
        let path = self.file.path.as_str();
        // A verified hit needs no lock, so a cache mounted read-only still serves online.
        let check =
            || matches(self.target, self.file, self.known).map_err(HubError::io(self.target));
        if self.target.exists() {
            if let Some(hashed) = check()? {
                self.progress.event(Event::Cached { path, hashed });
                return Ok(Outcome::Cached { hashed });
            }
        }
        if let Some(dir) = self.target.parent() {
            std::fs::create_dir_all(dir).map_err(HubError::io(dir))?;
        }
        let _lock = lock::acquire(
            &self.cache.lock_path(self.repo, path),
            self.target,
            self.cfg.lock_timeout,
            || self.progress.event(Event::Waiting { path }),
        )
        .await?;
        // Under the lock: another process may have finished this file while we waited.
        if self.target.exists() {
            if let Some(hashed) = check()? {
                self.progress.event(Event::Cached { path, hashed });
                return Ok(Outcome::Cached { hashed });
            }
            remove(self.target);
        }
        let deadline = Instant::now() + self.cfg.file_timeout;
        let (mut transient, mut checksum, mut size) = (0u32, 0u32, 0u32);
        // urllib3's `Retry(backoff_factor=1)` as the Python client: at once, then 2, 4, 8 s …
        let mut backoff = crate::backoff::delays(Duration::from_secs(2), self.cfg.retry_max_delay);
        loop {
            let (error, delay) = match self.attempt().await {
                Ok(n) => return Ok(Outcome::Downloaded(n)),
                Err(Failure::Fatal(e)) => return Err(*e),
                Err(Failure::Checksum(e)) => {
                    checksum += 1;
                    if checksum >= CHECKSUM_ATTEMPTS {
                        return Err(*e);
                    }
                    (e, Duration::from_secs(1 << (checksum - 1)))
                }
                Err(Failure::Size(e)) => {
                    size += 1;
                    if size >= SIZE_ATTEMPTS {
                        return Err(*e);
                    }
                    (e, Duration::ZERO)
                }
                Err(Failure::Retry(e, after)) => {
                    transient += 1;
                    if transient > self.cfg.max_retries {
                        return Err(HubError::RetriesExhausted {
                            path: path.to_string(),
                            attempts: transient,
                            last: e.to_string(),
                        });
                    }
                    let wait = if transient == 1 {
                        Duration::ZERO
                    } else {
                        backoff.next().unwrap_or(self.cfg.retry_max_delay)
                    };
                    (e, after.unwrap_or(wait))
                }
            };
            let delay = delay.min(self.cfg.retry_max_delay);
            if Instant::now() + delay > deadline {
                return Err(HubError::RetriesExhausted {
                    path: path.to_string(),
                    attempts: transient + checksum + size,
                    last: format!("{error} (MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT reached)"),
                });
            }
            self.progress.event(Event::Retry {
                path,
                error: error.to_string(),
                delay,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// One request: resumes the partial file, or finalises it if it is already whole.
    async fn attempt(&self) -> Result<u64, Failure> {
        let path = self.file.path.as_str();
        let partial = incomplete_path(self.target);
        let io = |e| Failure::fatal(HubError::io(&partial)(e));
        let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = self.file.size {
            if have > size {
                remove(&partial);
                have = 0;
            } else if have == size && size > 0 {
                return self.finalize(&partial, self.file.sha256.as_deref());
            }
        }
        let resp = self
            .client
            .open(self.repo, self.revision, path, have)
            .await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // The partial does not fit the object: start over.
            remove(&partial);
            return Err(Failure::retry(
                HubError::Http {
                    path: path.to_string(),
                    url: resp.url().to_string(),
                    status: 416,
                    message: format!("resume from byte {have} refused; restarting"),
                    request_id: String::new(),
                },
                Some(Duration::ZERO),
            ));
        }
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let range = header(CONTENT_RANGE).and_then(content_range);
        // Trust Content-Range over the status: the hub may answer a range with 200.
        let start = range.and_then(|r| r.0).unwrap_or(0);
        if start != have {
            remove(&partial);
            if start != 0 {
                return Err(Failure::retry(
                    HubError::Http {
                        path: path.to_string(),
                        url: resp.url().to_string(),
                        status: resp.status().as_u16(),
                        message: format!("asked for bytes from {have}, got them from {start}"),
                        request_id: String::new(),
                    },
                    Some(Duration::ZERO),
                ));
            }
            have = 0;
        }
        let linked = resp
            .headers()
            .get("x-linked-etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
        let announced = range.and_then(|r| r.1).or_else(|| {
            header(CONTENT_LENGTH)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|n| n + start)
        });
        if let (Some(expected), Some(actual)) = (self.file.size, announced) {
            if expected != actual {
                remove(&partial);
                return Err(Failure::size(HubError::Size {
                    path: path.to_string(),
                    expected,
                    actual,
                }));
            }
        }
        let mut out = OpenOptions::new()
            .create(true)
            .append(have > 0)
            .write(true)
            .truncate(have == 0)
            .open(&partial)
            .map_err(io)?;
        self.progress.event(Event::Start {
            path,
            size: self.file.size.or(announced),
            from: have,
        });
        let url = resp.url().to_string();
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    out.write_all(&bytes).map_err(io)?;
                    have += bytes.len() as u64;
                    if let Some(expected) = self.file.size.filter(|s| have > *s) {
                        remove(&partial);
                        return Err(Failure::size(HubError::Size {
                            path: path.to_string(),
                            expected,
                            actual: have,
                        }));
                    }
                    self.progress.event(Event::Bytes {
                        path,
                        n: bytes.len() as u64,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    out.flush().map_err(io)?;
                    return Err(Failure::retry(transport(path, &url, e), None));
                }
            }
        }
        out.sync_all().map_err(io)?;
        drop(out);
        if self.file.size.is_some_and(|s| have < s) {
            return Err(Failure::retry(
                HubError::Transport {
                    path: path.to_string(),
                    url,
                    message: format!("the body ended after {have} bytes"),
                },
                None,
            ));
        }
        // Without a hash in the listing, the CDN's X-Linked-ETag (the SHA-256) stands in.
        let expected = self.file.sha256.clone().or(linked);
        self.finalize(&partial, expected.as_deref())
    }

    /// Hash, then rename onto the target: only verified bytes ever sit at the target path.
    fn finalize(&self, partial: &Path, expected: Option<&str>) -> Result<u64, Failure> {
        let path = self.file.path.as_str();
        let io = |e| Failure::fatal(HubError::io(partial)(e));
        let len = std::fs::metadata(partial).map_err(io)?.len();
        if let Some(expected) = expected {
            let actual = sha256_file(partial).map_err(io)?;
            if actual != expected {
                remove(partial);
                return Err(Failure::checksum(HubError::Checksum {
                    path: path.to_string(),
                    expected: expected.to_string(),
                    actual,
                }));
            }
        }
        std::fs::rename(partial, self.target)
            .map_err(HubError::io(self.target))
            .map_err(Failure::fatal)?;
        if let Some(dir) = self.target.parent() {
            // Make the rename durable before anyone is told the file is there.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.progress.event(Event::Done { path, bytes: len });
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(
            content_range("bytes 10-19/100"),
            Some((Some(10), Some(100)))
        );
        assert_eq!(content_range("bytes */100"), Some((None, Some(100))));
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
