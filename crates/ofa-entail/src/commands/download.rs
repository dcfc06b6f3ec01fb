//! `ofa-entail download`: fetch and verify a model into the cache, for init containers and image
//! builds; prints the model directory on stdout.

use anyhow::Result;
use clap::Args;
use ofa_hub::Source;

use crate::args::model::{describe_source, fetch, runtime, HubArgs, Reporter, DEFAULT_MODEL_ID};

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
    // Offline, the cache is taken as it is (it may be read-only).
    if args.convert && snap.source != Source::Offline {
        crate::commands::convert::if_needed(&snap.dir)?;
    }
    println!("{}", snap.dir.display());
    Ok(())
}
