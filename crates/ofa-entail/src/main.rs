//! `ofa-entail`: does this image support this sentence? Command-line entry point: parses the
//! subcommand and hands it to the library's command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ofa_entail::commands::{
    batch, bench, collect, convert, download, eval, predict, rerank, serve, submit, worker,
};

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
    /// Rank sentences against an image (or images against a sentence), as POST /rerank does.
    Rerank(Box<rerank::RerankArgs>),
    /// Run a JSONL file of jobs with no broker; results appended to --out, resumable.
    Batch(Box<batch::BatchArgs>),
    /// Take jobs from RabbitMQ, run them, publish the results (scales with the backlog).
    Worker(Box<worker::WorkerArgs>),
    /// Publish a JSONL file of jobs to RabbitMQ, with publisher confirms.
    Submit(submit::SubmitArgs),
    /// Take results from RabbitMQ into a JSONL file, one line per job id.
    Collect(collect::CollectArgs),
    /// Fetch a model from the ModelScope hub into the cache, verify it, and print its directory.
    Download(download::DownloadArgs),
    /// Accuracy, confusion matrix and throughput on a labelled JSONL set (SNLI-VE layout), and
    /// with --compare how a second precision agrees with the first.
    Eval(Box<eval::EvalArgs>),
    /// Time preprocessing, ResNet, encoder and decoder, for one pair and for batches.
    Bench(bench::BenchArgs),
    /// Write model.safetensors next to pytorch_model.bin, so later starts memory-map it.
    Convert(convert::ConvertArgs),
    /// Write an OFA-large model directory with random weights (to measure the real cost).
    RandomModel(bench::RandomModelArgs),
}

fn main() -> ExitCode {
    quiet_libjpeg_unwinds();
    keep_activations_in_the_heap();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Predict(args) => predict::run(args),
        Command::Batch(args) => batch::run(*args),
        Command::Worker(args) => worker::run(*args),
        Command::Submit(args) => submit::run(args),
        Command::Collect(args) => collect::run(args),
        Command::Rerank(args) => rerank::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Download(args) => download::run(args),
        Command::RandomModel(args) => bench::random_model(args),
        Command::Convert(args) => convert::run(args),
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

/// Keeps the model's activations (up to tens of MB a layer) in malloc's heap, reused from one
/// pass to the next. glibc serves a block over 128 KB with a fresh mapping and unmaps it on
/// free, raising that threshold only after freeing such a block itself; a start from the
/// engine layout frees none, so every layer's output was faulted in anew: int8 passes were a
/// quarter slower (0.82 s a pair instead of 0.65 s for OFA-large on 2 cores).
fn keep_activations_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; no other thread runs yet. 32 MiB
    // is the largest threshold glibc takes on 64-bit targets.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// libjpeg reports a corrupt JPEG by unwinding out of its error handler; the decoder catches
/// that, so the default hook's message would be noise. Every other panic is reported as usual.
fn quiet_libjpeg_unwinds() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !ofa_model::in_libjpeg() {
            previous(info);
        }
    }));
}
