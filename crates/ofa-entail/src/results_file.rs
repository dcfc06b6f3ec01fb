//! A JSONL file of results, one line per job id, shared by `batch` and `collect`: reading which
//! ids are already answered, so a rerun continues where a killed one stopped.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};

/// Ids that already have a result in `out`. A last line cut short by a kill is removed: that
/// job is answered again, and the file stays one JSON object per line.
pub fn finished(out: &Path) -> Result<HashSet<String>> {
    let mut done = HashSet::new();
    let Ok(text) = std::fs::read(out) else {
        return Ok(done);
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .with_context(|| format!("cannot repair {}", out.display()))?;
        f.set_len(whole as u64)?;
    }
    for line in text[..whole].split(|&b| b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
            if let Some(id) = v["id"].as_str() {
                done.insert(id.to_owned());
            }
        }
    }
    Ok(done)
}

pub fn open_append(out: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("cannot open {}", out.display()))
}
