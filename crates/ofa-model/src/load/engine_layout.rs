//! The engine's own layout of a model's weights, written once by `convert` so that a start
//! memory-maps the weights and runs them as they are: on the CPU, the dense layers' weights
//! already transposed (f32) or already quantised with their scales and offsets (int8), the
//! ResNet's BatchNorms folded into its convolutions (in int8 its blocks quantised too), names
//! normalised; the dense weights are used where the file maps them (`mapped`).
//! A file is stamped with the checkpoint it was made from (name, size, modification time) and
//! with a fingerprint of the transformation itself (what this build makes of a fixed matrix),
//! so a file made from other weights, or by a build that transposes or quantises otherwise, is
//! ignored, never trusted (the binary rewrites it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::error::{OfaError, Result};
use crate::load::files::{
    mtime_ns, safetensors_metadata, META_CONVERTED_FROM, META_SOURCE_MTIME, META_SOURCE_SIZE,
};
use crate::load::model_dir::{ModelDir, WeightsFile};
use crate::network::dense_form::{dense_entries, DenseForm};

const META_LAYOUT: &str = "engine_layout";
const META_TRANSFORM: &str = "engine_transform";

/// Where the weights of a load came from, for logs and `bench --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    /// Random weights built in memory.
    Random,
    /// The checkpoint, transformed as it was read.
    Checkpoint(PathBuf),
    /// An engine-layout file `convert` wrote, used as it is.
    Converted(PathBuf),
    /// The checkpoint, because the engine-layout file beside it was stale or foreign.
    CheckpointOverStale { checkpoint: PathBuf, why: String },
}

impl WeightSource {
    /// `random`, `pytorch_model.bin`, `model.safetensors`, `engine-cpu-int8.safetensors
    /// (converted)`: the file's name and how it was used.
    pub fn describe(&self) -> String {
        let name = |p: &Path| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        match self {
            WeightSource::Random => "random".into(),
            WeightSource::Checkpoint(p) => name(p),
            WeightSource::Converted(p) => format!("{} (converted)", name(p)),
            WeightSource::CheckpointOverStale { checkpoint, .. } => {
                format!("{} (a stale conversion ignored)", name(checkpoint))
            }
        }
    }
}

/// The engine-layout file for `form` (`None` for [`DenseForm::Stored`]: the checkpoint is
/// already that layout).
pub fn file_name(form: DenseForm) -> Option<&'static str> {
    match form {
        DenseForm::Stored => None,
        DenseForm::Transposed => Some("engine-cpu-f32.safetensors"),
        DenseForm::Int8 => Some("engine-cpu-int8.safetensors"),
    }
}

fn layout_name(form: DenseForm) -> &'static str {
    match form {
        DenseForm::Stored => "stored",
        DenseForm::Transposed => "cpu-f32-transposed",
        DenseForm::Int8 => "cpu-int8",
    }
}

/// What this build's `form` makes of a fixed matrix, hashed: a different transposition or
/// quantisation (a new block size, rounding, packing) gives a different fingerprint.
pub fn transform_fingerprint(form: DenseForm) -> Result<String> {
    let (n, k) = (72, 136);
    let values: Vec<f32> = (0..n * k)
        .map(|i| ((i as u64 * 2_654_435_761) % 2001) as f32 / 97.0 - 10.0)
        .collect();
    let t = Tensor::from_vec(values, (n, k), &Device::Cpu)?;
    let mut h = Sha256::new();
    h.update(layout_name(form));
    let mut sample = dense_entries("encoder.layers.0.fc1.weight".into(), t, form)?;
    let conv = crate::network::conv_bn::fold_sample(form == DenseForm::Int8)?;
    sample.extend(conv.into_iter().map(|t| ("resnet conv".to_owned(), t)));
    for (name, t) in sample {
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype(), t.dims()).as_bytes());
        let bytes: Vec<u8> = match t.dtype() {
            candle_core::DType::U8 => t.flatten_all()?.to_vec1::<u8>()?,
            _ => t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        h.update(&bytes);
    }
    Ok(h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The stamp a file made now from `source` in `form` carries.
fn stamp(source: &WeightsFile, form: DenseForm) -> Result<HashMap<String, String>> {
    let path = source.path();
    let size = std::fs::metadata(path)
        .map_err(|e| OfaError::io(path, e))?
        .len();
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok(HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (META_LAYOUT.to_owned(), layout_name(form).to_owned()),
        (META_TRANSFORM.to_owned(), transform_fingerprint(form)?),
        (META_CONVERTED_FROM.to_owned(), name),
        (META_SOURCE_SIZE.to_owned(), size.to_string()),
        (
            META_SOURCE_MTIME.to_owned(),
            mtime_ns(path).unwrap_or_default(),
        ),
    ]))
}

/// The engine-layout file in `dir` for `form`, when there is one made from `source` by a build
/// that transforms as this one does: `Ok(None)` when there is none, `Err(why)` when there is
/// one that must not be used.
pub fn find(
    dir: &Path,
    source: &WeightsFile,
    form: DenseForm,
) -> std::result::Result<Option<PathBuf>, String> {
    let Some(name) = file_name(form) else {
        return Ok(None);
    };
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let found = safetensors_metadata(&path).map_err(|e| format!("{name}: {e}"))?;
    let want = stamp(source, form).map_err(|e| format!("{name}: {e}"))?;
    for key in [
        META_LAYOUT,
        META_TRANSFORM,
        META_CONVERTED_FROM,
        META_SOURCE_SIZE,
        META_SOURCE_MTIME,
    ] {
        if found.get(key) != want.get(key) {
            return Err(format!(
                "{name} was made from other weights or by another build ({key}: {:?}, expected {:?})",
                found.get(key).map(String::as_str).unwrap_or("none"),
                want.get(key).map(String::as_str).unwrap_or("none"),
            ));
        }
    }
    Ok(Some(path))
}

/// Writes the engine-layout file for `form` beside the checkpoint `dir` loads from, through a
/// temporary file renamed into place (an interrupted write never leaves a file a later start
/// would use). Returns the file and its tensor count.
pub fn write(dir: &Path, form: DenseForm) -> Result<(PathBuf, usize)> {
    let name = file_name(form).ok_or_else(|| OfaError::Weights {
        file: dir.to_path_buf(),
        message: "the stored layout needs no conversion".into(),
    })?;
    let model = ModelDir::open(dir)?;
    let source = model.weights;
    let info = stamp(&source, form)?;
    let mut tensors = crate::load::weights::load_with(&source, form)?;
    let layers = model
        .config
        .resnet_layers()
        .map_err(|message| OfaError::Config {
            file: dir.join(crate::load::files::CONFIG_FILE),
            message,
        })?;
    // Where `Encoder` builds its backbone.
    let int8 = form == DenseForm::Int8;
    crate::network::resnet::fold_into_layout(&mut tensors, "encoder.embed_images", layers, int8)?;
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let named = sorted.into_iter().map(|(n, t)| (n.as_str(), t));
    let dst = crate::load::weights::save_atomically(named, info, dir, name)?;
    Ok((dst, tensors.len()))
}
