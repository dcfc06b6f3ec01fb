//! A JSONL file of results, one line per job id, shared by `batch` and `collect`: reading which
//! ids are already answered, so a rerun continues where a killed one stopped.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use super::FileError;

/// Ids that already have a result in `out`, read line by line (the file may hold millions). A
/// last line cut short by a kill is removed: that job is answered again, and the file stays
/// one JSON object per line.
pub fn finished(out: &Path) -> Result<HashSet<String>, FileError> {
    let mut done = HashSet::new();
    let Ok(file) = std::fs::File::open(out) else {
        return Ok(done);
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut whole, mut line) = (0u64, Vec::new());
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| FileError::read(out, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        whole += n as u64;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            if let Some(id) = v["id"].as_str() {
                done.insert(id.to_owned());
            }
        }
    }
    if !line.is_empty() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .and_then(|f| f.set_len(whole))
            .map_err(|e| FileError::write(out, e))?;
    }
    Ok(done)
}

pub fn open_append(out: &Path) -> Result<std::fs::File, FileError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| FileError::write(out, e))
}
