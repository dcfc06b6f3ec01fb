//! `ofa-entail`: does this image support this sentence? Command-line entry point.

mod bench;
mod device;
mod download;
mod model_source;
mod predict;
mod serve;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ofa-entail",
    version,
    about = "OFA visual entailment: does this image support this sentence?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(Box<serve::ServeArgs>),
    /// Score one image–sentence pair and print the JSON answer.
    Predict(predict::PredictArgs),
    /// Fetch a model from the ModelScope hub into the cache, verify it, and print its directory.
    Download(download::DownloadArgs),
    /// Time preprocessing, ResNet, encoder and decoder, for one pair and for batches.
    Bench(bench::BenchArgs),
    /// Write model.safetensors next to pytorch_model.bin, so later starts memory-map it.
    Convert(ConvertArgs),
    /// Write an OFA-large model directory with random weights (to measure the real cost).
    RandomModel(bench::RandomModelArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Predict(args) => predict::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Download(args) => download::run(args),
        Command::RandomModel(args) => bench::random_model(args),
        Command::Convert(args) => convert(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the problem, with its causes.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Model directory holding pytorch_model.bin.
    #[arg(long, env = "MODEL_DIR")]
    model_dir: std::path::PathBuf,
}

fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let (path, n) = ofa_model::weights::convert_pytorch_to_safetensors(&args.model_dir)
        .with_context(|| format!("cannot convert {}", args.model_dir.display()))?;
    eprintln!(
        "wrote {} ({n} tensors) in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
