//! Consumers and their keys. The key file holds one consumer a line:
//!
//! ```text
//! # NAME   KEYS (comma-separated)          LIMITS (optional)
//! acme     sha256:9f86d081884c7d65...       rate=600/minute quota=100000/day
//! beta     a-plain-key,another-plain-key
//! ```
//!
//! A key is written as `sha256:` and the hex digest of the key (so the file or Secret need not
//! hold the key itself), or plainly; `-` for none, for a consumer a gateway names and
//! authenticates, listed only for its limits (`gamma - quota=5000/day`). Keys are kept only as SHA-256 digests and compared in
//! constant time against every digest, so neither the comparison nor the lookup's timing tells
//! how much of a guess was right.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AccessError, Quota, Rate};

/// A name with its own limits (defaults apply where `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub rate: Option<Rate>,
    pub quota: Option<Quota>,
}

impl Consumer {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rate: None,
            quota: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Consumers {
    digests: Vec<([u8; 32], usize)>,
    consumers: Vec<Arc<Consumer>>,
}

/// A key holds no `#` (it would read as a comment's start) and no whitespace or control
/// characters (a header cannot carry them faithfully).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.contains('#') {
        return Err("a key may not contain '#'".into());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a key may not contain whitespace or control characters".into());
    }
    Ok(())
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Consumers {
    /// `API_KEYS`: each key its own consumer, `key-1`, `key-2`, … in the order given.
    pub fn from_keys(keys: &[String]) -> Result<Self, AccessError> {
        let mut c = Consumers::default();
        for (i, k) in keys.iter().enumerate() {
            check_key(k).map_err(|e| AccessError::Limit(format!("API_KEYS key {}: {e}", i + 1)))?;
            c.push(Consumer::named(format!("key-{}", i + 1)), vec![digest(k)]);
        }
        Ok(c)
    }

    /// Parses a key file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AccessError> {
        let mut out = Consumers::default();
        let mut seen = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| AccessError::KeyFile {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            // A comment is a line, or the rest of one, from a field that starts with `#`; a
            // `#` inside a field is part of it, and a key may not hold one (below), so a key
            // is never cut short where a comment seems to start.
            let mut fields = raw
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .peekable();
            if fields.peek().is_none() {
                continue;
            }
            let name = fields.next().unwrap_or_default();
            check_name(name).map_err(&err)?;
            let keys = fields
                .next()
                .ok_or_else(|| err(format!("consumer {name:?} has no key")))?;
            let mut consumer = Consumer::named(name);
            for opt in fields {
                match opt.split_once('=') {
                    Some(("rate", v)) => {
                        consumer.rate = Some(v.parse().map_err(|e| err(format!("{e}")))?)
                    }
                    Some(("quota", v)) => {
                        consumer.quota = Some(v.parse().map_err(|e| err(format!("{e}")))?)
                    }
                    _ => return Err(err(format!("{opt:?} is not rate=N/unit or quota=N/unit"))),
                }
            }
            let mut digests = Vec::new();
            for key in keys.split(',').filter(|k| !k.is_empty() && *k != "-") {
                check_key(key).map_err(&err)?;
                let d = match key.strip_prefix("sha256:") {
                    Some(hex) => parse_hex(hex).ok_or_else(|| {
                        err("a sha256: key needs 64 hexadecimal digits".to_owned())
                    })?,
                    None => digest(key),
                };
                if !seen.insert(d) {
                    return Err(err("a key appears twice in the file".to_owned()));
                }
                digests.push(d);
            }
            if out.by_name(name).is_some() {
                return Err(err(format!("consumer {name:?} appears twice")));
            }
            out.push(consumer, digests);
        }
        Ok(out)
    }

    fn push(&mut self, consumer: Consumer, digests: Vec<[u8; 32]>) {
        let index = self.consumers.len();
        self.consumers.push(Arc::new(consumer));
        self.digests.extend(digests.into_iter().map(|d| (d, index)));
    }

    /// Both sets; a name in both keeps the first's limits and gets both sets of keys.
    pub fn merged(mut self, other: &Consumers) -> Self {
        for (i, c) in other.consumers.iter().enumerate() {
            let digests: Vec<[u8; 32]> = other
                .digests
                .iter()
                .filter(|(_, j)| *j == i)
                .map(|(d, _)| *d)
                .collect();
            match self.consumers.iter().position(|m| m.name == c.name) {
                Some(at) => self.digests.extend(digests.into_iter().map(|d| (d, at))),
                None => self.push((**c).clone(), digests),
            }
        }
        self
    }

    /// The consumer holding `key`: every digest is compared, with no early exit.
    pub fn identify(&self, key: &str) -> Option<Arc<Consumer>> {
        let d = digest(key);
        let mut found = usize::MAX;
        for (candidate, index) in &self.digests {
            let hit = candidate.ct_eq(&d).unwrap_u8() as usize;
            // Branch-free select: keeps `found` unless this digest matched.
            found = (found & hit.wrapping_sub(1)) | (*index & hit.wrapping_neg());
        }
        self.consumers.get(found).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Consumer>> {
        self.consumers.iter().find(|c| c.name == name).cloned()
    }

    /// No keys at all (consumers listed only for their limits hold none).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }
}

/// Names appear in logs and metric labels: short and plain.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "consumer name {name:?} must be 1-64 characters of letters, digits, '.', '_', '-', '@'"
        ))
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn plain_and_hashed_keys_identify_their_consumer() {
        let text = format!(
            "# comment\nacme  sha256:{},k2  rate=5/minute quota=10/day\n\nbeta k3 # trailing\n",
            hex(digest("k1"))
        );
        let c = Consumers::parse(&(text + "gamma - quota=3/day\n"), Path::new("keys")).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.by_name("gamma").unwrap().quota.unwrap().requests, 3);
        assert!(c.identify("-").is_none());
        let acme = c.identify("k1").unwrap();
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.quota.unwrap().requests, 10);
        assert_eq!(c.identify("k2").unwrap().name, "acme");
        assert_eq!(c.identify("k3").unwrap().name, "beta");
        assert!(c.identify("k4").is_none());
        assert!(c.identify("").is_none());
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, needle) in [
            ("acme\n", "has no key"),
            ("a b\nbad/name k\n", "line 2"),
            ("a k1\nb k1\n", "twice"),
            ("a sha256:abc\n", "64 hexadecimal"),
            ("a k rate=fast\n", "not N/unit"),
            ("a k colour=blue\n", "rate=N/unit"),
            (
                "ok k1\nacme ab#cdef0123\n",
                "line 2: a key may not contain '#'",
            ),
            ("acme k1,ab#c\n", "'#'"),
        ] {
            let e = Consumers::parse(text, Path::new("keys")).unwrap_err();
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn api_keys_become_numbered_consumers_and_merge() {
        let inline = Consumers::from_keys(&["x".into(), "y".into()]).unwrap();
        assert!(Consumers::from_keys(&["a b".into()]).is_err());
        let file = Consumers::parse("acme k1\n", Path::new("f")).unwrap();
        let all = file.merged(&inline);
        assert_eq!(all.identify("y").unwrap().name, "key-2");
        assert_eq!(all.identify("k1").unwrap().name, "acme");
    }
}
