//! Random OFA weights, so the real cost of OFA-large is measurable without its 1.9 GB download.
//! Every tensor the model asks for is drawn on demand, scaled so activations stay O(1) like a
//! trained network's (no overflow, no denormals that would distort timings).

use std::path::Path;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::config::{OfaConfig, RuntimeConfig, CONFIG_FILE};
use crate::error::OfaError;
use crate::pipeline::Entailment;
use crate::tokenizer::Tokenizer;

pub const LARGE_CONFIG_JSON: &str = include_str!("../assets/ofa_large/config.json");
pub const LARGE_CONFIGURATION_JSON: &str = include_str!("../assets/ofa_large/configuration.json");
pub const LARGE_ANSWERS_JSON: &str = include_str!("../assets/ofa_large/answer2label.json");
/// The BART byte-level BPE files (fairseq GPT-2 BPE with BART ids) the OFA checkpoints use.
pub const BART_VOCAB_JSON: &[u8] = include_bytes!("../assets/bart/vocab.json");
pub const BART_MERGES_TXT: &str = include_str!("../assets/bart/merges.txt");

struct RandomInit;

impl candle_nn::var_builder::SimpleBackend for RandomInit {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dims = s.dims().to_vec();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let is_norm = name.contains("norm") || name.contains("_ln.") || name.contains(".bn") || name.contains("downsample.1");
        let t = if leaf == "running_var" {
            Tensor::rand(0.5f32, 1.5, s, dev)?
        } else if leaf == "running_mean" || (is_norm && leaf == "bias") {
            Tensor::randn(0f32, 0.1, s, dev)?
        } else if name.contains("bn3") && leaf == "weight" {
            Tensor::randn(0.2f32, 0.05, s, dev)?
        } else if is_norm || leaf == "c_attn" {
            Tensor::randn(1f32, 0.1, s, dev)?
        } else if name.contains("rel_pos_table") {
            Tensor::randn(0f32, 0.3, s, dev)?
        } else if name.contains("embed") || name.contains("type_embedding") {
            let d = *dims.last().unwrap_or(&1) as f32;
            Tensor::randn(0f32, 2.0 / d.sqrt(), s, dev)?
        } else if dims.len() == 4 {
            let fan_in = (dims[1] * dims[2] * dims[3]) as f32;
            Tensor::randn(0f32, (2.0 / fan_in).sqrt(), s, dev)?
        } else if dims.len() == 2 {
            Tensor::randn(0f32, 1.0 / (dims[1] as f32).sqrt(), s, dev)?
        } else {
            Tensor::randn(0f32, 0.05, s, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A `VarBuilder` that draws every requested tensor at random.
pub fn random_var_builder(device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomInit), DType::F32, device.clone())
}

/// OFA-large (the configuration of `iic/ofa_visual-entailment_snli-ve_large_en`) with random
/// weights and the real BART vocabulary.
pub fn large_pipeline(device: &Device) -> crate::Result<Entailment> {
    let here = Path::new("<built-in OFA-large>");
    let config = OfaConfig::from_value(
        serde_json::from_str(LARGE_CONFIG_JSON).map_err(|source| OfaError::Json {
            path: here.join(CONFIG_FILE),
            source,
        })?,
        &here.join(CONFIG_FILE),
    )?;
    let runtime = RuntimeConfig::from_strs(LARGE_CONFIGURATION_JSON, LARGE_ANSWERS_JSON, here)?;
    let tokenizer = Tokenizer::from_bytes(BART_VOCAB_JSON, BART_MERGES_TXT, here)?;
    Entailment::from_parts(config, runtime, tokenizer, random_var_builder(device), here)
}
