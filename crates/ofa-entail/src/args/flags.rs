//! Flag values every command parses the same way: sizes with suffixes and seconds, overflow
//! refused as an error.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ofa_api::logging::{LogFormat, LogGuard, LogSettings};

/// A size in bytes: `10MB`, `768M`, `1GB`, `512KB`, `1.5 GiB` or plain bytes; the units are
/// binary (`MB` is 2^20), as they always were here. Too large for this machine is an error.
pub fn parse_bytes(name: &str, s: &str) -> Result<usize> {
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .with_context(|| format!("{name} {s:?} is not a size"))?;
    usize::try_from(n).with_context(|| format!("{name} {s:?} is too large"))
}

/// A non-negative number of seconds, named in the error when it is not.
pub fn seconds(name: &str, v: f64) -> Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v >= 0.0,
        "{name} must be a non-negative number of seconds, got {v}"
    );
    Duration::try_from_secs_f64(v).with_context(|| format!("{name} {v} s is too long"))
}

/// The event log for the process: JSON (or text) lines on stdout, JSON lines in `LOG_PATH`
/// when set, events filtered by `RUST_LOG`-style directives. Keep the guard until the end.
pub fn logger(format: &str, path: Option<&Path>, filter: &str) -> Result<LogGuard> {
    let format = match format {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => anyhow::bail!("LOG_FORMAT must be json or text, got {other:?}"),
    };
    Ok(ofa_api::logging::init(&LogSettings {
        format,
        path: path.map(Path::to_path_buf),
        filter: filter.to_owned(),
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_overflow_is_an_error() {
        assert_eq!(parse_bytes("X", "10MB").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("X", "768m").unwrap(), 768 << 20);
        assert_eq!(parse_bytes("X", "1GB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("X", "512KB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("X", "4096").unwrap(), 4096);
        let e = parse_bytes("PAYLOAD_LIMIT", "17179869184G").unwrap_err();
        assert!(format!("{e:#}").contains("PAYLOAD_LIMIT"), "{e:#}");
        assert!(parse_bytes("X", "ten MB").is_err());
        assert!(parse_bytes("X", "-1MB").is_err());
    }

    #[test]
    fn seconds_must_be_finite_non_negative_and_representable() {
        assert_eq!(seconds("X", 1.5).unwrap(), Duration::from_millis(1500));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e30] {
            assert!(seconds("TIMEOUT", bad).is_err(), "{bad}");
        }
    }
}
