//! What `convert`, `download` and a start write into a model directory: `model.safetensors`
//! next to `pytorch_model.bin`, and the CPU engine's own layout. Each write holds the
//! directory's lock, so init containers of several pods finishing together (or a server
//! starting beside them) convert once, and each goes through a file renamed into place, so a
//! server running from the old file keeps its mapping.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ofa_model::internal::load::engine_layout;
use ofa_model::{Device, ModelDir, Precision, WeightsFile};

/// A file written, for the caller to report.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub tensors: usize,
    pub seconds: f64,
}

/// Writes model.safetensors unless an up-to-date one is there already (or there is no
/// `pytorch_model.bin` to convert).
pub fn safetensors_if_needed(dir: &Path) -> Result<Option<Written>> {
    if !dir.join("pytorch_model.bin").is_file() {
        return Ok(None);
    }
    let _lock = lock(dir)?;
    if let WeightsFile::Safetensors(_) = ModelDir::pick_weights(dir)? {
        return Ok(None);
    }
    let t = Instant::now();
    let (path, tensors) = ofa_model::convert_pytorch_to_safetensors(dir)
        .with_context(|| format!("cannot convert the weights in {}", dir.display()))?;
    Ok(Some(Written {
        path,
        tensors,
        seconds: t.elapsed().as_secs_f64(),
    }))
}

/// Writes the CPU engine's layout for `precision`, whether or not a current one is there.
pub fn layout(dir: &Path, precision: Precision) -> Result<Written> {
    let _lock = lock(dir)?;
    write_layout(dir, precision)
}

/// Writes the CPU engine's layout for `precision` unless a current one is there (made from
/// these weights by a build that transforms as this one does).
pub fn layout_if_needed(dir: &Path, precision: Precision) -> Result<Option<Written>> {
    let _lock = lock(dir)?;
    let form = precision.dense_form(&Device::Cpu);
    let source = ModelDir::pick_weights(dir)?;
    match engine_layout::find(dir, &source, form) {
        Ok(Some(_)) => Ok(None),
        _ => write_layout(dir, precision).map(Some),
    }
}

/// Why the engine layout a start on `device` in `precision` would read is there but must not
/// be used (made from other weights, or by a build that transforms otherwise); `None` when
/// there is none, it is current, or the device runs no layout.
pub fn stale_layout(dir: &Path, device: &Device, precision: Precision) -> Option<String> {
    let form = precision.dense_form(device);
    engine_layout::file_name(form)?;
    let source = ModelDir::pick_weights(dir).ok()?;
    engine_layout::find(dir, &source, form).err()
}

fn write_layout(dir: &Path, precision: Precision) -> Result<Written> {
    let form = precision.dense_form(&Device::Cpu);
    anyhow::ensure!(
        engine_layout::file_name(form).is_some(),
        "the CPU runs f32 or int8; {} has no CPU layout",
        precision.name()
    );
    let t = Instant::now();
    let (path, tensors) = engine_layout::write(dir, form)
        .with_context(|| format!("cannot write the engine layout in {}", dir.display()))?;
    Ok(Written {
        path,
        tensors,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The directory's conversion lock, held until dropped.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let lock_path = dir.join(".model.safetensors.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    Ok(lock)
}
