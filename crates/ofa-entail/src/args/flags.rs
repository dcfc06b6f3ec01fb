//! Flag values every command parses the same way: sizes with suffixes and seconds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ofa_server::logging::{LogFormat, Logger};

/// A size in bytes: `10MB`, `768M`, `1GB`, `512KB` or plain bytes.
pub fn parse_bytes(name: &str, s: &str) -> Result<usize> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("GB").or_else(|| t.strip_suffix('G')) {
        (n, 1 << 30)
    } else if let Some(n) = t.strip_suffix("MB").or_else(|| t.strip_suffix('M')) {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KB").or_else(|| t.strip_suffix('K')) {
        (n, 1 << 10)
    } else {
        (t.strip_suffix('B').unwrap_or(&t), 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .with_context(|| format!("{name} {s:?} is not a size"))?;
    n.checked_mul(mult)
        .with_context(|| format!("{name} {s:?} is too large"))
}

/// A non-negative number of seconds, named in the error when it is not.
pub fn seconds(name: &str, v: f64) -> Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v >= 0.0,
        "{name} must be a non-negative number of seconds, got {v}"
    );
    Duration::try_from_secs_f64(v).with_context(|| format!("{name} {v} s is too long"))
}

/// The JSON (or text) event log on stdout, and in `LOG_PATH` when set.
pub fn logger(format: &str, path: Option<&Path>) -> Result<Arc<Logger>> {
    let format = match format {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => anyhow::bail!("LOG_FORMAT must be json or text, got {other:?}"),
    };
    Ok(Arc::new(
        Logger::new(format, path).context("cannot open LOG_PATH")?,
    ))
}
