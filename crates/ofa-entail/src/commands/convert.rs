//! `ofa-entail convert`, and the same conversion after `download`: `model.safetensors` next to
//! `pytorch_model.bin`, so later starts memory-map the weights instead of unpickling them; and
//! with `--precision`, the engine's own layout for the CPU (dense weights transposed, or
//! quantised to int8 with their scales), so a start runs them with no transformation at all.
//! The writing is `crate::conversion`'s; this says on stderr what was written.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ofa_model::Precision;

use crate::args::device::parse_precision;
use crate::conversion::{self, Written};

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
    report(conversion::safetensors_if_needed(dir)?.as_ref());
    if matches!(before, ofa_model::WeightsFile::Safetensors(_)) {
        eprintln!("{} is up to date", before.path().display());
    }
    if let Some(precision) = args.precision {
        report(Some(&conversion::layout(dir, precision)?));
    }
    Ok(())
}

/// A file written, with how long it took, on stderr.
pub fn report(written: Option<&Written>) {
    if let Some(w) = written {
        eprintln!(
            "wrote {} ({} tensors) in {:.1} s",
            w.path.display(),
            w.tensors,
            w.seconds
        );
    }
}
