//! Per-file inter-process lock (`flock`, as Python's `filelock` takes it), so processes sharing
//! a cache volume download each file once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::incomplete_path;
use crate::HubError;

/// Held until dropped; the kernel releases it if the process dies.
pub struct FileLock {
    _file: File,
}

/// Takes the lock at `lock`, waiting while another process holds it. The wait gives up only
/// after `timeout` passes with no growth of that process's partial file at `target`, so a slow
/// but live download of a large file is waited for.
pub async fn acquire(
    lock: &Path,
    target: &Path,
    timeout: Duration,
    mut on_wait: impl FnMut(),
) -> Result<FileLock, HubError> {
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).map_err(HubError::io(dir))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(HubError::io(lock))?;
    let partial: PathBuf = incomplete_path(target);
    let size = || std::fs::metadata(&partial).map(|m| m.len()).ok();
    let mut last = (size(), Instant::now());
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(HubError::Io {
                    path: lock.to_path_buf(),
                    error: e,
                })
            }
        }
        if !told {
            on_wait();
            told = true;
        }
        let now = size();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= timeout {
            return Err(HubError::LockTimeout {
                path: target.display().to_string(),
                lock: lock.to_path_buf(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
