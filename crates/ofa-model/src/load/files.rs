//! File names of a model directory and the small readers shared by its loaders.

use std::path::Path;

use serde_json::Value;

use crate::error::{OfaError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const CONFIGURATION_FILE: &str = "configuration.json";
pub use ofa_preprocess::tokenizer::{MERGES_FILE, VOCAB_FILE};
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

/// `__metadata__` keys `convert` writes, so a later load can tell whether the safetensors file
/// still matches the `pytorch_model.bin` it was made from.
pub const META_CONVERTED_FROM: &str = "converted_from";
pub const META_SOURCE_SIZE: &str = "source_size";
/// Nanoseconds since the epoch: a re-downloaded `.bin` of the same size (a retrained model of
/// the same shape) is a new file with a new mtime.
pub const META_SOURCE_MTIME: &str = "source_mtime_ns";

/// The modification time of `path` as [`META_SOURCE_MTIME`] records it.
pub fn mtime_ns(path: &Path) -> Option<String> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_nanos().to_string())
}

/// The `__metadata__` of a safetensors file, from its header alone.
pub fn safetensors_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    use std::io::Read;
    let bad = |message: String| OfaError::Weights {
        file: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| OfaError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| OfaError::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(bad(format!(
            "safetensors header of {n} bytes is implausible"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| OfaError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default())
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| OfaError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| OfaError::Json {
        path: path.to_path_buf(),
        source,
    })
}
