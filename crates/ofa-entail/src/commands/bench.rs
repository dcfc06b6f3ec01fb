//! `ofa-entail bench`: where the time goes, per stage and per batch size, and peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use ofa_model::internal::network::dense_form::DenseForm;
use ofa_model::{Entailment, PairInput, DEFAULT_MAX_PIXELS};
use ofa_model::{Prepared, StageTimes};
use serde::Serialize;

use ofa_engine::prom::process_memory as resident_bytes;

#[derive(Args)]
pub struct BenchArgs {
    /// Model directory; without it or --model-id, OFA-large with random weights (built-in
    /// configuration).
    #[arg(long, env = "MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// ModelScope model id to fetch (into the cache) and time.
    #[arg(long)]
    model_id: Option<String>,
    #[arg(long, default_value = ofa_hub::DEFAULT_REVISION)]
    revision: String,
    #[command(flatten)]
    hub: crate::args::model::HubArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// Image to use; without it, a synthetic 640x480 photo-like PNG.
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long, default_value = "a woman in a military uniform.")]
    text: String,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    batch_sizes: Vec<usize>,
    /// Timed runs per batch size (the median is reported), after one warm-up run (on a GPU,
    /// one per batch size).
    #[arg(long, default_value_t = 2)]
    iterations: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// After the timed runs of each batch size, one more with every operation timed between
    /// two synchronisations with the device (on a GPU, stages then run without CUDA graphs):
    /// which operations a stage's time goes to.
    #[arg(long)]
    profile_ops: bool,
}

#[derive(Args)]
pub struct RandomModelArgs {
    /// Directory to write (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct BatchReport {
    batch_size: usize,
    preprocess_ms: f64,
    resnet_ms: f64,
    encoder_ms: f64,
    decoder_ms: f64,
    total_ms: f64,
    per_pair_ms: f64,
    /// Pairs per second through the network alone (ResNet, encoder, decoder): what a server
    /// whose preprocessing pool keeps up reaches.
    model_pairs_per_s: f64,
    /// `--profile-ops`: each stage's time per kind of operation (one more run).
    #[serde(skip_serializing_if = "Option::is_none")]
    ops: Option<Vec<ofa_model::profile::OpTime>>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    precision: ofa_model::Precision,
    /// How the dense layers' weights are held: `stored` (`[out, in]`, GPUs), `transposed`
    /// (`[in, out]`, the CPU's f32) or `int8` (quantised, with scales).
    dense_layout: &'static str,
    /// Where the weights came from: `random` (built in memory), the checkpoint's name
    /// (`pytorch_model.bin`, `model.safetensors`: transformed as read), or an engine-layout
    /// file `convert` wrote (`engine-cpu-int8.safetensors (converted)`: used as it is).
    weights: String,
    resnet_layout: ofa_model::ResNetLayout,
    /// Both layouts' ResNet times at the largest batch, where `--resnet-layout auto` chose
    /// between them (a GPU).
    resnet_layout_tuning: Option<ofa_model::LayoutTuning>,
    gpu: Option<ofa_model::gpu::GpuInfo>,
    /// Device memory in use after the runs (the allocator keeps what the largest batch took).
    gpu_memory_used_bytes: Option<u64>,
    threads: usize,
    load_ms: f64,
    rss_after_load_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    encoder_tokens: usize,
    /// The CUDA graphs (`--cuda-graphs-max-batch`): the shapes replayed, each with its check,
    /// and those that run plain, with why.
    cuda_graphs: ofa_model::GraphSummary,
    batches: Vec<BatchReport>,
}

fn synthetic_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        let v = ((x * 7 + y * 3) % 256) as u8;
        image::Rgb([v, ((x ^ y) % 256) as u8, (255 - v / 2)])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding in memory");
    out.into_inner()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(
        args.batch_sizes.iter().all(|&b| b > 0),
        "batch sizes must be positive"
    );
    let image = match &args.image {
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read image {}", p.display()))?
        }
        None => synthetic_png(),
    };
    let (device, precision) = args.device.open_for_cli()?;
    let dir = match (&args.model_dir, &args.model_id) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(id)) => Some(crate::args::model::fetch_blocking(
            id,
            &args.revision,
            &args.hub,
        )?),
        (None, None) => None,
    };
    let t = Instant::now();
    let (pipeline, model) = match &dir {
        Some(dir) => (
            Entailment::load_with(dir, &device, precision)?,
            dir.display().to_string(),
        ),
        None => (
            ofa_model::random::large_pipeline(&device, precision)?,
            "OFA-large, random weights (built-in configuration)".to_owned(),
        ),
    };
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let largest = args.batch_sizes.iter().copied().max().unwrap_or(1);
    let pipeline = args
        .device
        .configure(pipeline, largest)?
        .with_stage_timing(true);
    let rss_after_load = resident_bytes().map(|(rss, _)| rss);
    let input = PairInput {
        image: &image,
        hypothesis: &args.text,
        premise: None,
    };

    let run_once = |b: usize| -> Result<StageTimes> {
        let t = Instant::now();
        let prepared: Vec<Prepared> = (0..b)
            .map(|_| pipeline.prepare(&input, DEFAULT_MAX_PIXELS))
            .collect::<ofa_model::Result<_>>()?;
        let prep_ms = t.elapsed().as_secs_f64() * 1e3;
        let refs: Vec<&Prepared> = prepared.iter().collect();
        let mut times = pipeline.score_batch(&refs)?.1.times;
        times.preprocess_ms += prep_ms;
        Ok(times)
    };
    run_once(1)?; // warm-up: first-touch allocations, thread pool start
    let mut batches = Vec::new();
    for &b in &args.batch_sizes {
        if !device.is_cpu() {
            // A GPU's first batch of a size picks cuBLAS algorithms, grows the memory pool and,
            // with CUDA graphs, records them: steady state is what a served size runs at.
            run_once(b)?;
        }
        let runs = (0..args.iterations)
            .map(|_| run_once(b))
            .collect::<Result<Vec<_>>>()?;
        let pick = |f: fn(&StageTimes) -> f64| median(runs.iter().map(f).collect());
        let total = pick(StageTimes::total_ms);
        batches.push(BatchReport {
            batch_size: b,
            preprocess_ms: pick(|t| t.preprocess_ms),
            resnet_ms: pick(|t| t.resnet_ms),
            encoder_ms: pick(|t| t.encoder_ms),
            decoder_ms: pick(|t| t.decoder_ms),
            total_ms: total,
            per_pair_ms: total / b as f64,
            model_pairs_per_s: b as f64 * 1e3
                / pick(|t| t.resnet_ms + t.encoder_ms + t.decoder_ms).max(1e-9),
            ops: match args.profile_ops {
                true => Some(crate::commands::bench_profile::profiled(|| run_once(b))?),
                false => None,
            },
        });
    }
    let encoder_tokens = {
        let g = pipeline.runtime.patch_image_size / 16;
        g * g + pipeline.encode_text(&args.text, None)?.len()
    };
    let report = Report {
        model,
        device: crate::args::device::name(&device),
        precision,
        dense_layout: match precision.dense_form(&device) {
            DenseForm::Stored => "stored",
            DenseForm::Transposed => "transposed",
            DenseForm::Int8 => "int8",
        },
        weights: pipeline.weight_source().describe(),
        resnet_layout: pipeline.model().resnet_layout(),
        resnet_layout_tuning: pipeline.model().resnet_layout_tuning(),
        gpu: ofa_model::gpu::info(&device),
        gpu_memory_used_bytes: ofa_model::gpu::memory(&device).map(|(used, _)| used),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_ms,
        rss_after_load_bytes: rss_after_load,
        peak_rss_bytes: resident_bytes().map(|(_, peak)| peak),
        encoder_tokens,
        cuda_graphs: pipeline.model().cuda_graphs(),
        batches,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let gb = |b: Option<u64>| b.map_or("n/a".to_owned(), |v| format!("{:.2} GB", v as f64 / 1e9));
    println!("model: {}", r.model);
    println!(
        "device: {}  precision: {} ({} dense weights, from {})  ResNet: {}",
        r.device, r.precision, r.dense_layout, r.weights, r.resnet_layout
    );
    if let Some(t) = &r.resnet_layout_tuning {
        println!(
            "ResNet at batch {}: channels-last {:.1} ms, channels-first {:.1} ms",
            t.batch_size, t.channels_last_ms, t.channels_first_ms
        );
    }
    if let Some(g) = &r.gpu {
        println!(
            "GPU: {} (compute {}), {} used of {}",
            g.name,
            g.compute_capability,
            gb(r.gpu_memory_used_bytes),
            gb(Some(g.memory_total_bytes))
        );
    }
    println!(
        "threads: {}  load: {:.0} ms  RSS after load: {}  peak RSS: {}  encoder tokens: {}",
        r.threads,
        r.load_ms,
        gb(r.rss_after_load_bytes),
        gb(r.peak_rss_bytes),
        r.encoder_tokens
    );
    println!(
        "{:>5} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "batch", "preprocess", "resnet", "encoder", "decoder", "total", "per pair"
    );
    for b in &r.batches {
        println!(
            "{:>5} {:>9.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            b.batch_size,
            b.preprocess_ms,
            b.resnet_ms,
            b.encoder_ms,
            b.decoder_ms,
            b.total_ms,
            b.per_pair_ms
        );
    }
    let g = &r.cuda_graphs;
    if g.max_batch > 0 {
        println!(
            "CUDA graphs (batches up to {}): {} shapes replayed, {} plain",
            g.max_batch,
            g.recorded,
            g.plain.len()
        );
        for line in g.checks.iter().chain(&g.plain) {
            println!("  {line}");
        }
    }
    for b in &r.batches {
        if let Some(ops) = &b.ops {
            crate::commands::bench_profile::print(b.batch_size, ops);
        }
    }
}

pub fn random_model(args: RandomModelArgs) -> Result<()> {
    ofa_model::random::write_large_model_dir(&args.out)?;
    eprintln!(
        "wrote OFA-large with random weights to {}",
        args.out.display()
    );
    Ok(())
}
