//! Random OFA weights, so the real cost of OFA-large is measurable without its 1.9 GB download.
//! Every tensor the model asks for is drawn on demand, scaled so activations stay O(1) like a
//! trained network's (no overflow, no denormals that would distort timings).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::OfaError;
use crate::load::config::OfaConfig;
use crate::load::files::CONFIG_FILE;
use crate::load::precision::Precision;
use crate::load::runtime::RuntimeConfig;
use crate::preprocess::tokenizer::Tokenizer;
use crate::scoring::pipeline::Entailment;

pub const LARGE_CONFIG_JSON: &str = include_str!("../../assets/ofa_large/config.json");
pub const LARGE_CONFIGURATION_JSON: &str =
    include_str!("../../assets/ofa_large/configuration.json");
pub const LARGE_ANSWERS_JSON: &str = include_str!("../../assets/ofa_large/answer2label.json");
/// The BART byte-level BPE files (fairseq GPT-2 BPE with BART ids) the OFA checkpoints use.
pub const BART_VOCAB_JSON: &[u8] = include_bytes!("../../assets/bart/vocab.json");
pub const BART_MERGES_TXT: &str = include_str!("../../assets/bart/merges.txt");

/// Draws tensors at random; when `keep` is set, remembers each so it can be saved.
struct RandomInit {
    keep: Option<Arc<Mutex<HashMap<String, Tensor>>>>,
}

impl candle_nn::var_builder::SimpleBackend for RandomInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = Self::draw(s, name, h, dtype, dev)?;
        if let Some(keep) = &self.keep {
            keep.lock()
                .expect("not poisoned")
                .insert(name.to_owned(), t.clone());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Random weights are f32; `--precision int8` quantises them after construction.
        !crate::network::dense_form::is_int8_entry(name)
    }
}

impl RandomInit {
    fn draw(s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dims = s.dims().to_vec();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let is_norm = name.contains("norm")
            || name.contains("_ln.")
            || name.contains(".bn")
            || name.contains("downsample.1");
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
        } else if dims.len() == 4 {
            let fan_in = (dims[1] * dims[2] * dims[3]) as f32;
            Tensor::randn(0f32, (2.0 / fan_in).sqrt(), s, dev)?
        } else if dims.len() == 2 && (name.contains("embed_") || name.contains("type_embedding")) {
            let d = dims[1] as f32;
            Tensor::randn(0f32, 2.0 / d.sqrt(), s, dev)?
        } else if dims.len() == 2 {
            Tensor::randn(0f32, 1.0 / (dims[1] as f32).sqrt(), s, dev)?
        } else {
            Tensor::randn(0f32, 0.05, s, dev)?
        };
        t.to_dtype(dtype)
    }
}

/// A `VarBuilder` that draws every requested tensor at random.
pub fn random_var_builder(device: &Device, dtype: DType) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomInit { keep: None }), dtype, device.clone())
}

/// Writes a complete ModelScope-layout OFA-large directory with random weights
/// (`model.safetensors`, both configuration files, answers, vocabulary), to measure loading.
pub fn write_large_model_dir(dir: &Path) -> crate::Result<()> {
    let io = |p: &Path, e| OfaError::io(p, e);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (name, bytes) in [
        (CONFIG_FILE, LARGE_CONFIG_JSON.as_bytes()),
        ("configuration.json", LARGE_CONFIGURATION_JSON.as_bytes()),
        ("answer2label.json", LARGE_ANSWERS_JSON.as_bytes()),
        ("vocab.json", BART_VOCAB_JSON),
        ("merges.txt", BART_MERGES_TXT.as_bytes()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
    }
    let keep = Arc::new(Mutex::new(HashMap::new()));
    let vb = VarBuilder::from_backend(
        Box::new(RandomInit {
            keep: Some(keep.clone()),
        }),
        DType::F32,
        Device::Cpu,
    );
    let config = OfaConfig::from_value(
        serde_json::from_str(LARGE_CONFIG_JSON).expect("built-in config is valid JSON"),
        &dir.join(CONFIG_FILE),
    )?;
    drop(crate::network::model::OfaModel::new(&config, vb)?);
    let tensors = std::mem::take(&mut *keep.lock().expect("not poisoned"));
    let path = dir.join(crate::load::files::SAFETENSORS_FILE);
    candle_core::safetensors::save(&tensors, &path).map_err(|e| OfaError::Weights {
        file: path.clone(),
        message: e.to_string(),
    })
}

/// OFA-large (the configuration of `iic/ofa_visual-entailment_snli-ve_large_en`) with random
/// weights and the real BART vocabulary, in `precision`.
pub fn large_pipeline(device: &Device, precision: Precision) -> crate::Result<Entailment> {
    precision.check(device)?;
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
    let vb = random_var_builder(device, precision.dtype());
    Entailment::from_parts(config, runtime, tokenizer, vb, here)?.with_precision_applied(precision)
}
