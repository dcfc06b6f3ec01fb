//! `image_path`: a regular file under the image root, read within the size limit. Anything
//! else (a path that leaves the root, a FIFO, a socket, a device) is refused without blocking.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::FetchError;

/// The file `rel` names under `root` (unset: paths are refused), at most `max_bytes`.
pub async fn read_under(
    root: Option<&Path>,
    rel: &str,
    max_bytes: usize,
) -> Result<Bytes, FetchError> {
    let root = root
        .ok_or_else(|| refused("image_path needs IMAGE_ROOT, which is not set".into()))?
        .to_owned();
    let rel = rel.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&root, &rel, max_bytes))
        .await
        .map_err(|e| FetchError::NotFound(format!("image_path: the read did not finish: {e}")))?
}

fn refused(m: String) -> FetchError {
    FetchError::PathRefused(m)
}

fn read_blocking(root: &Path, p: &str, max_bytes: usize) -> Result<Bytes, FetchError> {
    let rel = Path::new(p);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refused(format!("image_path {p:?} leaves IMAGE_ROOT")));
    }
    let not_found = |e: std::io::Error| FetchError::NotFound(format!("image_path {p:?}: {e}"));
    // Symbolic links may point anywhere: the resolved file must still be under the root.
    let real: PathBuf = std::fs::canonicalize(root.join(rel)).map_err(not_found)?;
    let real_root = std::fs::canonicalize(root)
        .map_err(|e| refused(format!("IMAGE_ROOT {}: {e}", root.display())))?;
    if !real.starts_with(&real_root) {
        return Err(refused(format!("image_path {p:?} leaves IMAGE_ROOT")));
    }
    let not_regular = || refused(format!("image_path {p:?} is not a regular file"));
    // Checked before opening, since opening a socket fails and a FIFO can block; and again on
    // what was opened, in case the path was swapped in between.
    if !std::fs::symlink_metadata(&real)
        .map_err(not_found)?
        .is_file()
    {
        return Err(not_regular());
    }
    let file = open_nonblocking(&real).map_err(not_found)?;
    let meta = file.metadata().map_err(not_found)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max_bytes as u64 {
        return Err(FetchError::TooLarge(format!(
            "image_path {p:?} has {} bytes, more than the limit of {max_bytes}",
            meta.len()
        )));
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since: read no more than the limit allows.
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut body)
        .map_err(not_found)?;
    if body.len() > max_bytes {
        return Err(FetchError::TooLarge(format!(
            "image_path {p:?} is larger than the limit of {max_bytes} bytes"
        )));
    }
    Ok(body.into())
}

#[cfg(unix)]
fn open_nonblocking(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO swapped in opens at once instead of waiting for a writer (regular
    // files ignore it); O_NOFOLLOW: no symbolic link swapped in after the check.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(p)
}

#[cfg(not(unix))]
fn open_nonblocking(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(p)
}
