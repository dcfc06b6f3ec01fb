//! Reading checkpoints: `model.safetensors` (memory-mapped, each tensor copied out and its pages
//! released at once, so resident memory never holds the file and the model together; an
//! engine-layout file's dense weights stay mapped, see `mapped`) or
//! `pytorch_model.bin` (PyTorch zip/pickle). Names are normalised to the ModelScope layout.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{OfaError, Result};
use crate::load::files::{
    mtime_ns, META_CONVERTED_FROM, META_SOURCE_MTIME, META_SOURCE_SIZE, PYTORCH_FILE,
    SAFETENSORS_FILE,
};
use crate::load::mapped::{MappedTensor, MappedTensors};
use crate::load::model_dir::WeightsFile;
use crate::network::dense_form::DenseForm;

/// The three names of OFA's one shared embedding matrix.
pub const EMBED_ALIASES: [&str; 3] = [
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.output_projection.weight",
];

/// Loads every float tensor of a checkpoint, names normalised (see [`normalize`]).
pub fn load(file: &WeightsFile) -> Result<HashMap<String, Tensor>> {
    load_with(file, DenseForm::Stored)
}

/// The dense layers' weights in `form`, transposed or quantised as they are read
/// (`dense_form::dense_entries`): the model is never resident twice.
pub fn load_with(file: &WeightsFile, form: DenseForm) -> Result<HashMap<String, Tensor>> {
    let raw = match file {
        WeightsFile::Safetensors(p) => read_safetensors(p, form, false)?.0,
        WeightsFile::Pytorch(p) => {
            candle_core::pickle::read_all(p).map_err(|e| OfaError::Weights {
                file: p.clone(),
                message: format!("cannot read PyTorch checkpoint: {e}"),
            })?
        }
    };
    normalize(raw, form).map_err(|e| OfaError::Weights {
        file: file.path().to_path_buf(),
        message: e.to_string(),
    })
}

/// An engine-layout file (`engine_layout`): the dense layers' weights left where the file
/// maps them (`mapped`), everything else read as [`load_with`] reads it.
pub fn load_mapped(path: &Path) -> Result<(HashMap<String, Tensor>, MappedTensors)> {
    let (raw, mapped) = read_safetensors(path, DenseForm::Stored, true)?;
    let tensors = normalize(raw, DenseForm::Stored).map_err(|e| OfaError::Weights {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((tensors, mapped))
}

/// Index buffers the model recomputes, and BatchNorm counters: never needed.
fn is_ignored(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
        || name.ends_with("_rp_bucket")
        || name.ends_with("image_position_idx")
}

/// Strips a `model.` prefix, drops ignored buffers, converts floats to f32, and stores the
/// shared embedding once under `encoder.embed_tokens.weight` whichever alias the file used.
pub fn normalize(
    raw: Vec<(String, Tensor)>,
    form: DenseForm,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        let name = name.strip_prefix("model.").unwrap_or(&name).to_owned();
        if crate::network::dense_form::is_int8_entry(&name) {
            out.insert(name, t);
            continue;
        }
        if is_ignored(&name) || !t.dtype().is_float() {
            continue;
        }
        let t = if t.dtype() == DType::F32 {
            t
        } else {
            t.to_dtype(DType::F32)?
        };
        out.extend(crate::network::dense_form::dense_entries(name, t, form)?);
    }
    let shared = EMBED_ALIASES.iter().find_map(|n| out.get(*n).cloned());
    for alias in &EMBED_ALIASES[1..] {
        out.remove(*alias);
    }
    if let Some(t) = shared {
        out.insert(EMBED_ALIASES[0].to_owned(), t);
    }
    Ok(out)
}

/// Every tensor of a safetensors file, copied out of its mapping; with `map_dense`, the dense
/// layers' weights the engine runs as they are stored (`dense_form::runs_mapped`) stay in it.
fn read_safetensors(
    path: &Path,
    form: DenseForm,
    map_dense: bool,
) -> Result<(Vec<(String, Tensor)>, MappedTensors)> {
    let bad = |message: String| OfaError::Weights {
        file: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| OfaError::io(path, e))?;
    // SAFETY: the mapping is read-only and private; a file truncated underneath us is the one
    // hazard, as for every mmap-based loader.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| OfaError::io(path, e))?;
    let mmap = std::sync::Arc::new(mmap);
    if mmap.len() < 8 {
        return Err(bad(
            "not a safetensors file (shorter than its header length)".into(),
        ));
    }
    let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes")) as usize;
    let data_start = 8usize
        .checked_add(header_len)
        .filter(|&e| e <= mmap.len())
        .ok_or_else(|| bad("safetensors header length exceeds the file".into()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&mmap[8..data_start])
            .map_err(|e| bad(format!("invalid safetensors header: {e}")))?;
    let data = &mmap[data_start..];
    // Checked first, then read in parallel: each tensor's copy out of the mapping (and the page
    // faults of its new memory) is a third of a start from the engine's layout.
    let mut entries = Vec::with_capacity(header.len());
    for (name, info) in &header {
        if name == "__metadata__" || is_ignored(name) {
            continue;
        }
        let dtype = match info["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            // Quantised weights of an engine-layout file (`engine_layout`).
            Some("U8") if crate::network::dense_form::is_int8_entry(name) => DType::U8,
            Some("I32") if crate::network::dense_form::is_int8_entry(name) => DType::I32,
            Some(_) => continue, // integer buffers are recomputed, not read
            None => return Err(bad(format!("tensor {name}: missing dtype"))),
        };
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
            .map_err(|e| bad(format!("tensor {name}: bad shape: {e}")))?;
        let offsets: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())
            .map_err(|e| bad(format!("tensor {name}: bad data_offsets: {e}")))?;
        let expected = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if offsets[0] > offsets[1] || offsets[1] > data.len() || offsets[1] - offsets[0] != expected
        {
            return Err(bad(format!(
                "tensor {name}: data_offsets {offsets:?} do not fit shape {shape:?} {dtype:?} in a file of {} data bytes",
                data.len()
            )));
        }
        entries.push((name, dtype, shape, offsets));
    }
    let mut mapped = MappedTensors::default();
    if map_dense {
        entries.retain(|(name, dtype, shape, offsets)| {
            let name = name.strip_prefix("model.").unwrap_or(name);
            if !crate::network::dense_form::runs_mapped(name) {
                return true;
            }
            let range = data_start + offsets[0]..data_start + offsets[1];
            match MappedTensor::new(mmap.clone(), range, *dtype, shape.clone()) {
                Some(t) => {
                    mapped.insert(name.to_owned(), t);
                    false
                }
                None => true, // misaligned: copied out like the rest
            }
        });
    }
    use rayon::prelude::*;
    let read: Vec<Vec<(String, Tensor)>> = entries
        .into_par_iter()
        .map(|(name, dtype, shape, offsets)| {
            let bytes = &data[offsets[0]..offsets[1]];
            let t = Tensor::from_raw_buffer(bytes, dtype, &shape, &Device::Cpu)
                .map_err(|e| bad(format!("tensor {name}: {e}")))?;
            // SAFETY: read-only file mapping; dropped pages are re-read from the file if
            // touched.
            unsafe {
                let _ = mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    data_start + offsets[0],
                    offsets[1] - offsets[0],
                );
            }
            crate::network::dense_form::dense_entries(name.clone(), t, form)
                .map_err(|e| bad(format!("tensor {name}: {e}")))
        })
        .collect::<Result<_>>()?;
    let out: Vec<(String, Tensor)> = read.into_iter().flatten().collect();
    Ok((out, mapped))
}

/// Writes `model.safetensors` next to `pytorch_model.bin`: the same tensor names, dtypes and
/// values, so later starts memory-map instead of unpickling. Written to a temporary file and
/// renamed, so an interrupted conversion never leaves a file a later run would trust.
/// Returns the new file and its tensor count.
pub fn convert_pytorch_to_safetensors(dir: &Path) -> Result<(std::path::PathBuf, usize)> {
    let src = dir.join(PYTORCH_FILE);
    let size = std::fs::metadata(&src)
        .map_err(|e| OfaError::io(&src, e))?
        .len();
    let mtime = mtime_ns(&src).unwrap_or_default();
    let tensors = candle_core::pickle::read_all(&src).map_err(|e| OfaError::Weights {
        file: src.clone(),
        message: format!("cannot read PyTorch checkpoint: {e}"),
    })?;
    let info = std::collections::HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (META_CONVERTED_FROM.to_owned(), PYTORCH_FILE.to_owned()),
        (META_SOURCE_SIZE.to_owned(), size.to_string()),
        (META_SOURCE_MTIME.to_owned(), mtime),
    ]);
    let named = tensors.iter().map(|(n, t)| (n.as_str(), t));
    let dst = save_atomically(named, info, dir, SAFETENSORS_FILE)?;
    Ok((dst, tensors.len()))
}

/// Writes `tensors` with `info` as `dir/name` through a temporary file renamed into place, so
/// an interrupted write never leaves a file a later start would trust. Returns the file.
pub(crate) fn save_atomically<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    info: std::collections::HashMap<String, String>,
    dir: &Path,
    name: &str,
) -> Result<std::path::PathBuf> {
    let dst = dir.join(name);
    // Per process: two conversions of one directory must never write the same file.
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    if let Err(e) = safetensors::serialize_to_file(tensors, Some(info), &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(OfaError::Weights {
            file: dst,
            message: format!("cannot write: {e}"),
        });
    }
    std::fs::rename(&tmp, &dst).map_err(|e| OfaError::io(&dst, e))?;
    Ok(dst)
}
