use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ofa_model::{PairInput, DEFAULT_MAX_PIXELS};

use ofa_api::Answer;

use crate::args::model::ModelArgs;
use crate::startup::{self, ModelSettings, Runs};

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: crate::args::device::DeviceArgs,
    /// Image file (JPEG, PNG, GIF, WebP, BMP, TIFF).
    #[arg(long)]
    image: PathBuf,
    /// The hypothesis: the sentence the image should support.
    #[arg(long)]
    text: String,
    /// Optional premise text, read together with the image.
    #[arg(long)]
    premise: Option<String>,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
}

pub fn run(args: PredictArgs) -> Result<()> {
    // Read the input before the model, so a bad path fails fast.
    let image = std::fs::read(&args.image)
        .with_context(|| format!("cannot read image {}", args.image.display()))?;
    let settings = ModelSettings {
        device: args.device.clone(),
        runs: Runs::Once,
        image_cache_bytes: 0,
    };
    let pipeline = startup::load_for_cli(&args.model, &settings)?.pipeline;
    let input = PairInput {
        image: &image,
        hypothesis: &args.text,
        premise: args.premise.as_deref(),
    };
    let scores = pipeline
        .predict(&[input], args.max_image_pixels)
        .with_context(|| format!("{}", args.image.display()))?
        .remove(0);
    println!("{}", serde_json::to_string(&Answer::from_scores(&scores))?);
    Ok(())
}
