//! `ofa-entail download`: fetch and verify a model into the cache, for init containers and image
//! builds; prints the model directory on stdout.

use anyhow::{Context, Result};
use clap::Args;

use crate::model_source::{describe_source, fetch, runtime, HubArgs, Reporter, DEFAULT_MODEL_ID};

#[derive(Args)]
pub struct DownloadArgs {
    /// ModelScope model id (owner/name).
    #[arg(env = "MODEL_ID", default_value = DEFAULT_MODEL_ID)]
    model_id: String,
    /// Branch, tag or commit of the model repo.
    #[arg(long, alias = "model-revision", env = "MODEL_REVISION", default_value = ofa_hub::DEFAULT_REVISION)]
    revision: String,
    #[command(flatten)]
    hub: HubArgs,
    /// Also write model.safetensors next to pytorch_model.bin, so every later start
    /// memory-maps the weights instead of unpickling them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    convert: bool,
}

pub fn run(args: DownloadArgs) -> Result<()> {
    let progress = Reporter::stderr();
    let t = std::time::Instant::now();
    let snap = runtime()?.block_on(fetch(&args.model_id, &args.revision, &args.hub, &progress))?;
    eprintln!(
        "{}@{}: {} in {:.1} s",
        args.model_id,
        args.revision,
        describe_source(&snap.source),
        t.elapsed().as_secs_f64()
    );
    if args.convert && !args.hub.config().offline {
        convert_if_needed(&snap.dir)?;
    }
    println!("{}", snap.dir.display());
    Ok(())
}

/// Writes model.safetensors unless an up-to-date one is there already. Locked, so init
/// containers of several pods finishing together convert once.
fn convert_if_needed(dir: &std::path::Path) -> Result<()> {
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
    let current = ofa_model::ModelDir::pick_weights(dir)?;
    if matches!(current, ofa_model::config::WeightsFile::Safetensors(_)) {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let (path, n) = ofa_model::weights::convert_pytorch_to_safetensors(dir)
        .with_context(|| format!("cannot convert the weights in {}", dir.display()))?;
    eprintln!(
        "wrote {} ({n} tensors) in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
