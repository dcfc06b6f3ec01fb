//! Model ids, revisions and repo-relative paths, checked before they become file-system paths.

use std::fmt;
use std::path::{Component, Path};

use crate::HubError;

pub const DEFAULT_REVISION: &str = "master";

/// `owner/name`, as the hub spells it (`iic/ofa_visual-entailment_snli-ve_large_en`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
}

fn plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl std::str::FromStr for RepoId {
    type Err = HubError;

    fn from_str(s: &str) -> Result<RepoId, HubError> {
        match s.trim().split_once('/') {
            Some((owner, name)) if plain_segment(owner) && plain_segment(name) => Ok(RepoId {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(HubError::InvalidId(s.to_string())),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A revision (branch, tag or commit) that is safe as a directory name under `snapshots/`.
pub fn check_revision(rev: &str) -> Result<(), HubError> {
    if !rev.is_empty() && safe_relative(rev) {
        Ok(())
    } else {
        Err(HubError::UnsafePath(rev.to_string()))
    }
}

/// A repo path that stays inside the directory it is joined to: a listing from a hostile or
/// broken mirror must not write outside the cache.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// `application/x-www-form-urlencoded` for one query value, as the Python client sends it.
pub fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_paths_and_encoding() {
        let id: RepoId = "iic/ofa_visual-entailment_snli-ve_large_en"
            .parse()
            .unwrap();
        assert_eq!(id.owner, "iic");
        assert_eq!(id.to_string(), "iic/ofa_visual-entailment_snli-ve_large_en");
        for bad in ["noslash", "a/b/c", "../x", "a/..", "a b/c", "/x", "a/"] {
            assert!(bad.parse::<RepoId>().is_err(), "{bad}");
        }
        assert!(safe_relative("sub/file.json"));
        for bad in ["../etc/passwd", "/abs", "a/../../b", "", "a\\b", "./a"] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert!(check_revision("v1.0.0").is_ok());
        assert!(check_revision("..").is_err());
        assert_eq!(
            form_encode("sub/file name+x.json"),
            "sub%2Ffile+name%2Bx.json"
        );
    }
}
