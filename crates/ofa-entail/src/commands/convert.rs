//! `ofa-entail convert`, and the same conversion after `download`: `model.safetensors` next to
//! `pytorch_model.bin`, so later starts memory-map the weights instead of unpickling them; and
//! with `--precision`, the engine's own layout for the CPU (dense weights transposed, or
//! quantised to int8 with their scales), so a start runs them with no transformation at all.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ofa_model::internal::load::engine_layout;
use ofa_model::Precision;

use crate::args::device::parse_precision;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Model directory holding pytorch_model.bin or model.safetensors.
    #[arg(long, env = "MODEL_DIR")]
    model_dir: PathBuf,
    /// Also write the CPU engine's layout for this precision (`f32`: the dense weights
    /// transposed; `int8`: quantised with their scales), so `serve --precision` of the same
    /// value starts without transforming them. Unset: only model.safetensors.
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dir = &args.model_dir;
    let before = ofa_model::ModelDir::pick_weights(dir)
        .with_context(|| format!("no weights to convert in {}", dir.display()))?;
    if_needed(dir)?;
    if matches!(before, ofa_model::WeightsFile::Safetensors(_)) {
        eprintln!("{} is up to date", before.path().display());
    }
    if let Some(precision) = args.precision {
        write_engine_layout(dir, precision)?;
    }
    Ok(())
}

/// The CPU engine's layout for `precision`, written and timed on stderr.
pub fn write_engine_layout(dir: &Path, precision: Precision) -> Result<()> {
    let form = precision.dense_form(&ofa_model::Device::Cpu);
    anyhow::ensure!(
        engine_layout::file_name(form).is_some(),
        "the CPU runs f32 or int8; {} has no CPU layout",
        precision.name()
    );
    let t = std::time::Instant::now();
    let (path, n) = engine_layout::write(dir, form)
        .with_context(|| format!("cannot write the engine layout in {}", dir.display()))?;
    eprintln!(
        "wrote {} ({n} tensors, {} layout) in {:.1} s",
        path.display(),
        precision.name(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Converts, and says what it wrote and how long it took on stderr.
fn write_safetensors(dir: &Path) -> Result<()> {
    let t = std::time::Instant::now();
    let (path, n) = ofa_model::convert_pytorch_to_safetensors(dir)
        .with_context(|| format!("cannot convert the weights in {}", dir.display()))?;
    eprintln!(
        "wrote {} ({n} tensors) in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes model.safetensors unless an up-to-date one is there already. Locked, so init
/// containers of several pods finishing together convert once.
pub fn if_needed(dir: &Path) -> Result<()> {
    if !dir.join("pytorch_model.bin").is_file() {
        return Ok(());
    }
    let _lock = lock(dir)?;
    match ofa_model::ModelDir::pick_weights(dir)? {
        ofa_model::WeightsFile::Safetensors(_) => Ok(()),
        ofa_model::WeightsFile::Pytorch(_) => write_safetensors(dir),
    }
}

/// Writes the CPU engine's layout for `precision` unless a current one is there (made from
/// these weights by a build that transforms as this one does); locked as [`if_needed`].
pub fn layout_if_needed(dir: &Path, precision: Precision) -> Result<()> {
    let _lock = lock(dir)?;
    let form = precision.dense_form(&ofa_model::Device::Cpu);
    let source = ofa_model::ModelDir::pick_weights(dir)?;
    match engine_layout::find(dir, &source, form) {
        Ok(Some(_)) => Ok(()),
        _ => write_engine_layout(dir, precision),
    }
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
