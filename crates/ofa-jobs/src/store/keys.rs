//! What a stored result is keyed by: everything that decides it. The model's scope (its id,
//! revision, the digest of its files, the precision and the answer labels), the image's bytes
//! (their SHA-256) and the text as the model reads it (its token ids, so texts that encode
//! alike share a result). A new model, revision or precision makes a new scope, and no key of
//! an old scope is ever looked up again.

use std::fmt;

use sha2::{Digest, Sha256};

/// Bumped when what a key covers or how a record is written changes: old entries are then
/// never read (they expire).
const FORMAT: &str = "ofa-entail result store v1";

/// The model a result came from, as the scope of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub model_id: String,
    pub revision: String,
    /// Digest of the model's files ([`digest_files`]): a branch name moves, and a local
    /// directory has no revision at all.
    pub files: [u8; 32],
    pub precision: String,
    pub answers: Vec<String>,
}

/// The digest of a model's scope; part of every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope([u8; 32]);

impl Scope {
    pub fn new(model: &ModelIdentity) -> Self {
        let mut h = Sha256::new();
        field(&mut h, FORMAT.as_bytes());
        field(&mut h, model.model_id.as_bytes());
        field(&mut h, model.revision.as_bytes());
        field(&mut h, &model.files);
        field(&mut h, model.precision.as_bytes());
        for a in &model.answers {
            field(&mut h, a.as_bytes());
        }
        Scope(h.finalize().into())
    }
}

/// SHA-256 of an image's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDigest(pub [u8; 32]);

impl ImageDigest {
    pub fn of(bytes: &[u8]) -> Self {
        ImageDigest(Sha256::digest(bytes).into())
    }
}

/// A text and premise as the model reads them: the digest of their token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextKey([u8; 32]);

impl TextKey {
    pub fn of(tokens: &[u32]) -> Self {
        let mut h = Sha256::new();
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        TextKey(h.finalize().into())
    }
}

/// One result's key: scope, image and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultKey(pub [u8; 32]);

impl ResultKey {
    pub fn new(scope: &Scope, image: &ImageDigest, text: &TextKey) -> Self {
        let mut h = Sha256::new();
        h.update(scope.0);
        h.update(image.0);
        h.update(text.0);
        ResultKey(h.finalize().into())
    }
}

/// A URL's key for its validators: not scoped by model, since what a URL served does not
/// depend on who reads it.
pub fn url_key(url: &str) -> [u8; 32] {
    Sha256::digest(url.as_bytes()).into()
}

/// SHA-256 over `files` (each as its name, length and contents): the model's files, as the
/// model crate lists them. About a second for OFA-large's 1.8 GB, paid once at start.
pub fn digest_files(files: &[std::path::PathBuf]) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        field(&mut h, name.unwrap_or_default().as_bytes());
        let mut f = std::fs::File::open(path)?;
        h.update(f.metadata()?.len().to_le_bytes());
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().into())
}

/// A length-prefixed field, so no two sequences of fields hash alike.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

pub(crate) struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelIdentity {
        ModelIdentity {
            model_id: "m".into(),
            revision: "r".into(),
            files: [7; 32],
            precision: "f32".into(),
            answers: vec!["yes".into(), "no".into(), "maybe".into()],
        }
    }

    #[test]
    fn every_part_of_the_identity_changes_the_key() {
        let base = model();
        let (image, text) = (ImageDigest::of(b"png"), TextKey::of(&[1, 2, 3]));
        let key = |m: &ModelIdentity| ResultKey::new(&Scope::new(m), &image, &text);
        let changed = [
            ModelIdentity {
                revision: "r2".into(),
                ..base.clone()
            },
            ModelIdentity {
                files: [8; 32],
                ..base.clone()
            },
            ModelIdentity {
                precision: "int8".into(),
                ..base.clone()
            },
            ModelIdentity {
                answers: vec!["yes".into(), "maybe".into(), "no".into()],
                ..base.clone()
            },
            ModelIdentity {
                model_id: "mr".into(),
                revision: String::new(),
                ..base.clone()
            },
        ];
        for m in &changed {
            assert_ne!(key(m), key(&base), "{m:?}");
        }
        assert_eq!(key(&model()), key(&base), "and nothing else does");
        let scope = Scope::new(&base);
        assert_ne!(
            ResultKey::new(&scope, &ImageDigest::of(b"png2"), &text),
            key(&base)
        );
        assert_ne!(
            ResultKey::new(&scope, &image, &TextKey::of(&[1, 2, 4])),
            key(&base)
        );
    }

    #[test]
    fn a_digest_follows_the_files_contents_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("config.json"),
            dir.path().join("weights.bin"),
        );
        std::fs::write(&a, b"{}").unwrap();
        std::fs::write(&b, b"abc").unwrap();
        let both = digest_files(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(digest_files(&[a.clone(), b.clone()]).unwrap(), both);
        assert_ne!(digest_files(std::slice::from_ref(&a)).unwrap(), both);
        std::fs::write(&b, b"abd").unwrap();
        assert_ne!(digest_files(&[a, b]).unwrap(), both);
        assert_eq!(Hex(&[0, 255, 16]).to_string(), "00ff10");
    }
}
