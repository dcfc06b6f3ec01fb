//! `ofa-entail download`: fetch and verify a model into the cache, for init containers and image
//! builds; prints the model directory on stdout.

use anyhow::Result;
use clap::Args;
use ofa_hub::Source;
use ofa_model::Precision;

use crate::args::model::{describe_source, fetch, runtime, HubArgs, Reporter, DEFAULT_MODEL_ID};
use crate::commands::convert::report;

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
    /// Also write the CPU engine's weight layout for this precision (`f32`, `int8`), unless a
    /// current one is there, so CPU starts of that precision run the weights as they are
    /// (`convert --precision`); `none` for GPU pods.
    #[arg(long, env = "ENGINE_LAYOUT", default_value = "none", value_parser = parse_layout)]
    engine_layout: Layout,
}

/// `ENGINE_LAYOUT`: a CPU precision, or none.
#[derive(Debug, Clone, Copy)]
pub struct Layout(Option<Precision>);

fn parse_layout(s: &str) -> Result<Layout, String> {
    match s.trim() {
        "" | "none" => Ok(Layout(None)),
        "f32" => Ok(Layout(Some(Precision::F32))),
        "int8" => Ok(Layout(Some(Precision::Int8))),
        other => Err(format!(
            "ENGINE_LAYOUT {other:?}: the CPU engine's layouts are f32 and int8 (or none)"
        )),
    }
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
        report(crate::conversion::safetensors_if_needed(&snap.dir)?.as_ref());
        if let Layout(Some(precision)) = args.engine_layout {
            report(crate::conversion::layout_if_needed(&snap.dir, precision)?.as_ref());
        }
    }
    println!("{}", snap.dir.display());
    Ok(())
}
