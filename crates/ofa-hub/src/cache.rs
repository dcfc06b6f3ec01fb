//! The cache layout the Python client (modelscope ≥ 1.38) reads and writes, so either client
//! reuses what the other downloaded: `{root}/models/{owner}--{name}/snapshots/{revision}/{path}`,
//! `{target}.incomplete` partials, and `{root}/.lock/file_{sha256}.lock` per-file locks.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::hash::hex;
use crate::repo::{check_revision, RepoId};
use crate::HubError;

#[derive(Clone, Debug)]
pub struct Cache {
    pub root: PathBuf,
}

fn non_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.root
            .join("models")
            .join(format!("{}--{}", repo.owner, repo.name))
    }

    pub fn snapshot_dir(&self, repo: &RepoId, revision: &str) -> Result<PathBuf, HubError> {
        check_revision(revision)?;
        Ok(self.repo_dir(repo).join("snapshots").join(revision))
    }

    /// Directories of the pre-1.38 layout (`.` in the name masked as `___`). The Python client
    /// keeps using one of these when it is non-empty, so we must too or the two would disagree
    /// about which copy is live.
    pub fn legacy_dirs(&self, repo: &RepoId) -> [PathBuf; 2] {
        let masked = repo.name.replace('.', "___");
        [
            self.root.join("models").join(&repo.owner).join(&masked),
            self.root.join("hub/models").join(&repo.owner).join(&masked),
        ]
    }

    fn live_legacy_dir(&self, repo: &RepoId) -> Option<PathBuf> {
        self.legacy_dirs(repo)
            .into_iter()
            .find(|d| non_empty_dir(d))
    }

    /// Where files for this revision go: a live legacy directory, else the snapshot directory.
    pub fn download_dir(&self, repo: &RepoId, revision: &str) -> Result<PathBuf, HubError> {
        match self.live_legacy_dir(repo) {
            Some(d) => Ok(d),
            None => self.snapshot_dir(repo, revision),
        }
    }

    /// The lock file the Python client takes for the same file, so the two exclude each other.
    pub fn lock_path(&self, repo: &RepoId, path: &str) -> PathBuf {
        let mut h = Sha256::new();
        for part in [
            "modelscope-hub-download-lock-v2",
            "file",
            "model",
            &repo.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.update(path.as_bytes());
        self.root
            .join(".lock")
            .join(format!("file_{}.lock", hex(&h.finalize())))
    }

    /// Offline resolution: a live legacy directory, else a non-empty snapshot of `revision`.
    /// Touches nothing and makes no request.
    pub fn find(&self, repo: &RepoId, revision: &str) -> Result<PathBuf, HubError> {
        if let Some(d) = self.live_legacy_dir(repo) {
            return Ok(d);
        }
        let snap = self.snapshot_dir(repo, revision)?;
        if non_empty_dir(&snap) {
            return Ok(snap);
        }
        let mut looked: Vec<String> = self
            .legacy_dirs(repo)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        looked.push(snap.display().to_string());
        let mut others: Vec<String> = std::fs::read_dir(self.repo_dir(repo).join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| non_empty_dir(&e.path()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        others.sort();
        let found = if others.is_empty() {
            String::new()
        } else {
            format!(
                "; the cache has revision(s) {} of it: set MODEL_REVISION to use one",
                others.join(", ")
            )
        };
        Err(HubError::NotCached {
            repo: repo.to_string(),
            revision: revision.to_string(),
            cache: self.root.clone(),
            looked,
            found,
        })
    }
}

/// `{target}.incomplete`, the partial file both clients resume from.
pub fn incomplete_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_os_string();
    s.push(".incomplete");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_python_client() {
        let c = Cache::new("/c");
        let id: RepoId = "iic/ofa_visual-entailment_snli-ve_large_en"
            .parse()
            .unwrap();
        assert_eq!(
            c.snapshot_dir(&id, "master").unwrap(),
            PathBuf::from("/c/models/iic--ofa_visual-entailment_snli-ve_large_en/snapshots/master")
        );
        let dotted: RepoId = "Qwen/Qwen3.5-0.8B".parse().unwrap();
        assert_eq!(
            c.legacy_dirs(&dotted)[0],
            PathBuf::from("/c/models/Qwen/Qwen3___5-0___8B")
        );
        assert_eq!(
            c.legacy_dirs(&dotted)[1],
            PathBuf::from("/c/hub/models/Qwen/Qwen3___5-0___8B")
        );
        let lock = c.lock_path(&id, "config.json");
        let name = lock.file_name().unwrap().to_str().unwrap();
        assert!(lock.starts_with("/c/.lock"));
        assert!(name.starts_with("file_") && name.ends_with(".lock") && name.len() == 5 + 64 + 5);
        assert_ne!(lock, c.lock_path(&id, "vocab.json"));
        assert_eq!(
            incomplete_path(Path::new("/c/x/pytorch_model.bin")),
            PathBuf::from("/c/x/pytorch_model.bin.incomplete")
        );
    }
}
