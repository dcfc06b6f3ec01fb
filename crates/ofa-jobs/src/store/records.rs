//! How entries are written: JSON, each with its expiry (Unix seconds), so the file store can
//! drop what Redis drops on its own. Floats round-trip exactly through JSON, so an answer
//! from the store is the answer that was scored, bit for bit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ofa_api::Scores;
use ofa_fetch::Validators;
use serde::{Deserialize, Serialize};

use super::keys::ImageDigest;

/// What a URL served last time: its validators and the digest of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRecord {
    pub validators: Validators,
    pub image: ImageDigest,
}

#[derive(Serialize, Deserialize)]
struct Stored<T> {
    expires: u64,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize, Deserialize)]
struct StoredScores {
    answers: Vec<String>,
    log_probs: Vec<f32>,
    probs: Vec<f32>,
    argmax: usize,
}

#[derive(Serialize, Deserialize)]
struct StoredUrl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    image: [u8; 32],
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn write<T: Serialize>(value: T, ttl: Duration) -> Vec<u8> {
    let expires = now().saturating_add(ttl.as_secs());
    serde_json::to_vec(&Stored { expires, value }).unwrap_or_default()
}

/// The value, unless it is unreadable (another format) or expired.
fn read<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let s: Stored<T> = serde_json::from_slice(bytes).ok()?;
    (s.expires > now()).then_some(s.value)
}

/// Whether a stored entry has expired (or cannot be read): the file store's sweep.
pub(crate) fn expired(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Expiry {
        expires: u64,
    }
    serde_json::from_slice::<Expiry>(bytes).map_or(true, |e| e.expires <= now())
}

pub(crate) fn write_scores(s: &Scores, ttl: Duration) -> Vec<u8> {
    write(
        StoredScores {
            answers: s.answers.clone(),
            log_probs: s.log_probs.clone(),
            probs: s.probs.clone(),
            argmax: s.argmax,
        },
        ttl,
    )
}

pub(crate) fn read_scores(bytes: &[u8]) -> Option<Scores> {
    let s: StoredScores = read(bytes)?;
    let n = s.answers.len();
    // A damaged entry is a miss, never a wrong answer.
    (s.log_probs.len() == n && s.probs.len() == n && s.argmax < n).then_some(Scores {
        answers: s.answers,
        log_probs: s.log_probs,
        probs: s.probs,
        argmax: s.argmax,
    })
}

pub(crate) fn write_url(r: &UrlRecord, ttl: Duration) -> Vec<u8> {
    write(
        StoredUrl {
            etag: r.validators.etag.clone(),
            last_modified: r.validators.last_modified.clone(),
            image: r.image.0,
        },
        ttl,
    )
}

pub(crate) fn read_url(bytes: &[u8]) -> Option<UrlRecord> {
    let s: StoredUrl = read(bytes)?;
    Some(UrlRecord {
        validators: Validators {
            etag: s.etag,
            last_modified: s.last_modified,
        },
        image: ImageDigest(s.image),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip_bit_for_bit_and_expire() {
        let s = Scores {
            answers: vec!["yes".into(), "no".into(), "maybe".into()],
            log_probs: vec![-0.123_456_79, -3.402_823_5e38, -1e-45],
            probs: vec![0.884_1, 1e-45, 0.115_9],
            argmax: 0,
        };
        let bytes = write_scores(&s, Duration::from_secs(60));
        let back = read_scores(&bytes).unwrap();
        for (a, b) in back.log_probs.iter().zip(&s.log_probs) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(back, s);
        assert!(!expired(&bytes));
        let old = write_scores(&s, Duration::ZERO);
        assert!(read_scores(&old).is_none() && expired(&old));
        assert!(read_scores(b"{\"expires\": 99999999999, \"argmax\": 5}").is_none());
        let damaged = String::from_utf8(bytes)
            .unwrap()
            .replace("\"argmax\":0", "\"argmax\":3");
        assert!(read_scores(damaged.as_bytes()).is_none());
    }

    #[test]
    fn url_records_round_trip() {
        let r = UrlRecord {
            validators: Validators {
                etag: Some("\"abc\"".into()),
                last_modified: None,
            },
            image: ImageDigest::of(b"x"),
        };
        assert_eq!(read_url(&write_url(&r, Duration::from_secs(5))).unwrap(), r);
    }
}
