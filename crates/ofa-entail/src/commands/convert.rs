//! `ofa-entail convert`, and the same conversion after `download`: `model.safetensors` next to
//! `pytorch_model.bin`, so later starts memory-map the weights instead of unpickling them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Model directory holding pytorch_model.bin.
    #[arg(long, env = "MODEL_DIR")]
    model_dir: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    write_safetensors(&args.model_dir)
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
    let lock_path = dir.join(".model.safetensors.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    match ofa_model::ModelDir::pick_weights(dir)? {
        ofa_model::WeightsFile::Safetensors(_) => Ok(()),
        ofa_model::WeightsFile::Pytorch(_) => write_safetensors(dir),
    }
}
