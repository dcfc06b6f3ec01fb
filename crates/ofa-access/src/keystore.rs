//! The consumers in force: `API_KEYS` and the key file, swapped whole when the file changes
//! (a Kubernetes Secret update replaces it through a symlink, so the content is what is
//! compared, not a timestamp). A file that no longer parses leaves the previous set in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use crate::{AccessError, Consumers};

pub struct KeyStore {
    path: Option<PathBuf>,
    inline: Consumers,
    current: RwLock<Arc<Consumers>>,
    fingerprint: Mutex<[u8; 32]>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded { consumers: usize },
}

impl KeyStore {
    /// `inline` are `API_KEYS`; `path` the key file, which must parse at start.
    pub fn open(path: Option<&Path>, inline: &[String]) -> Result<Self, AccessError> {
        let inline = Consumers::from_keys(inline)?;
        let store = KeyStore {
            path: path.map(Path::to_owned),
            current: RwLock::new(Arc::new(inline.clone())),
            inline,
            fingerprint: Mutex::new([0; 32]),
        };
        store.reload()?;
        Ok(store)
    }

    pub fn current(&self) -> Arc<Consumers> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads the file again and swaps the set in when its content changed.
    pub fn reload(&self) -> Result<Reload, AccessError> {
        let Some(path) = &self.path else {
            return Ok(Reload::Unchanged);
        };
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::KeyFileRead {
            path: path.clone(),
            source,
        })?;
        let fp: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut last = self.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
        if *last == fp {
            return Ok(Reload::Unchanged);
        }
        let set = Consumers::parse(&text, path)?.merged(&self.inline);
        let consumers = set.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        *last = fp;
        Ok(Reload::Reloaded { consumers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_swaps_in_and_a_broken_one_keeps_the_last() {
        let dir = std::env::temp_dir().join(format!("ofa-keystore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, "acme k1\n").unwrap();
        let store = KeyStore::open(Some(&path), &["inline".into()]).unwrap();
        assert_eq!(store.current().identify("k1").unwrap().name, "acme");
        assert_eq!(store.current().identify("inline").unwrap().name, "key-1");
        assert_eq!(store.reload().unwrap(), Reload::Unchanged);
        std::fs::write(&path, "beta k2\n").unwrap();
        assert_eq!(store.reload().unwrap(), Reload::Reloaded { consumers: 2 });
        assert!(store.current().identify("k1").is_none());
        std::fs::write(&path, "broken\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.current().identify("k2").unwrap().name, "beta");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
