//! A ModelScope model directory: which files it must hold and which weight file to load.

use std::path::{Path, PathBuf};

use crate::error::{OfaError, Result};
use crate::load::config::OfaConfig;
use crate::load::engine_layout;
use crate::load::files::{
    mtime_ns, safetensors_metadata, CONFIGURATION_FILE, CONFIG_FILE, MERGES_FILE,
    META_CONVERTED_FROM, META_SOURCE_MTIME, META_SOURCE_SIZE, PYTORCH_FILE, SAFETENSORS_FILE,
    VOCAB_FILE,
};
use crate::load::runtime::RuntimeConfig;
use crate::network::dense_form::DenseForm;

/// Which weight file a directory offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors(PathBuf),
    Pytorch(PathBuf),
}

impl WeightsFile {
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors(p) | WeightsFile::Pytorch(p) => p,
        }
    }
}

/// A ModelScope model directory, its files checked to exist.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub config: OfaConfig,
    pub runtime: RuntimeConfig,
    pub weights: WeightsFile,
}

impl ModelDir {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(OfaError::ModelDirMissing(root));
        }
        let config = OfaConfig::from_file(&root.join(CONFIG_FILE))?;
        let runtime = RuntimeConfig::from_dir(&root)?;
        for f in [VOCAB_FILE, MERGES_FILE] {
            if !root.join(f).is_file() {
                return Err(OfaError::MissingFile { path: root.join(f) });
            }
        }
        let weights = Self::pick_weights(&root)?;
        let grid = runtime.patch_image_size / 16;
        if grid > config.image_bucket_size {
            return Err(OfaError::Config {
                file: root.join(CONFIGURATION_FILE),
                message: format!(
                    "model.patch_image_size = {} gives a {grid}x{grid} grid, larger than image_bucket_size = {} in {CONFIG_FILE}",
                    runtime.patch_image_size, config.image_bucket_size
                ),
            });
        }
        Ok(ModelDir {
            root,
            config,
            runtime,
            weights,
        })
    }

    /// The files whose contents decide the model's outputs, sorted: the weights the model
    /// is loaded from (the `pytorch_model.bin` a current `model.safetensors` was converted
    /// from, so converting changes nothing) and every other regular file in `root` but hidden
    /// ones (locks, the hub client's metadata), other weight files and the engine layouts.
    pub fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
        let weights = match Self::pick_weights(root)? {
            WeightsFile::Safetensors(st) => {
                let meta = safetensors_metadata(&st).unwrap_or_default();
                let from_bin =
                    meta.get(META_CONVERTED_FROM).map(String::as_str) == Some(PYTORCH_FILE);
                match from_bin && root.join(PYTORCH_FILE).is_file() {
                    true => root.join(PYTORCH_FILE),
                    false => st,
                }
            }
            WeightsFile::Pytorch(pt) => pt,
        };
        let mut skip: Vec<&str> = [DenseForm::Transposed, DenseForm::Int8]
            .into_iter()
            .filter_map(engine_layout::file_name)
            .collect();
        skip.extend([SAFETENSORS_FILE, PYTORCH_FILE]);
        let mut files = vec![weights];
        for entry in std::fs::read_dir(root).map_err(|e| OfaError::io(root, e))? {
            let entry = entry.map_err(|e| OfaError::io(root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !skip.contains(&name.as_str()) && entry.path().is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Safetensors is preferred (it loads without unpickling) unless `convert` made it from a
    /// `pytorch_model.bin` that has changed since (size or mtime); `pytorch_model.bin` is what the
    /// real model ships.
    pub fn pick_weights(root: &Path) -> Result<WeightsFile> {
        let st = root.join(SAFETENSORS_FILE);
        let pt = root.join(PYTORCH_FILE);
        if st.is_file() && pt.is_file() {
            // A file `convert` made from a different `pytorch_model.bin` is stale: trust the .bin.
            let pt_size = std::fs::metadata(&pt).map(|m| m.len().to_string()).ok();
            let meta = safetensors_metadata(&st).unwrap_or_default();
            let from_bin = meta.get(META_CONVERTED_FROM).map(String::as_str) == Some(PYTORCH_FILE);
            let changed = meta.get(META_SOURCE_SIZE) != pt_size.as_ref()
                || meta
                    .get(META_SOURCE_MTIME)
                    .is_some_and(|m| Some(m) != mtime_ns(&pt).as_ref());
            let stale = from_bin && changed;
            Ok(if stale {
                WeightsFile::Pytorch(pt)
            } else {
                WeightsFile::Safetensors(st)
            })
        } else if st.is_file() {
            Ok(WeightsFile::Safetensors(st))
        } else if pt.is_file() {
            Ok(WeightsFile::Pytorch(pt))
        } else {
            Err(OfaError::MissingFile {
                path: root.join(format!("{SAFETENSORS_FILE} or {PYTORCH_FILE}")),
            })
        }
    }
}
