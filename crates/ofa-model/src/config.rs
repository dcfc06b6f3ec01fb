//! The two configuration files of a ModelScope OFA directory: `config.json` (architecture) and
//! `configuration.json` (task and runtime options), plus the answer→label file it names.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{OfaError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const CONFIGURATION_FILE: &str = "configuration.json";
pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

/// Architecture hyper-parameters, read from `config.json` (HF `OFAConfig` field names).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct OfaConfig {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub resnet_type: String,
    pub token_bucket_size: usize,
    pub image_bucket_size: usize,
    #[serde(default = "default_attn_scale")]
    pub attn_scale_factor: f64,
    #[serde(default = "default_gelu")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub normformer: bool,
    #[serde(default = "yes")]
    pub encoder_normalize_before: bool,
    #[serde(default = "yes")]
    pub decoder_normalize_before: bool,
    #[serde(default = "yes")]
    pub layernorm_embedding: bool,
    #[serde(default = "yes")]
    pub patch_layernorm_embedding: bool,
    #[serde(default = "yes")]
    pub add_type_embedding: bool,
    #[serde(default = "yes")]
    pub share_decoder_input_output_embed: bool,
    #[serde(default)]
    pub entangle_position_embedding: bool,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default)]
    pub share_attn_bias: bool,
    #[serde(default)]
    pub use_ofasys: bool,
    #[serde(default = "yes")]
    pub use_image_feature: bool,
    #[serde(default = "pad_id")]
    pub pad_token_id: u32,
    #[serde(default)]
    pub bos_token_id: u32,
    #[serde(default = "eos_id")]
    pub eos_token_id: u32,
}

fn default_attn_scale() -> f64 {
    2.0
}
fn default_gelu() -> String {
    "gelu".into()
}
fn yes() -> bool {
    true
}
fn pad_id() -> u32 {
    1
}
fn eos_id() -> u32 {
    2
}

/// Activations `config.json` may name; `gelu` is the exact erf form (HF `GELUActivation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

impl OfaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        Self::from_value(value, path)
    }

    pub fn from_value(value: Value, path: &Path) -> Result<Self> {
        let cfg: OfaConfig = serde_json::from_value(value).map_err(|e| OfaError::Config {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let unsupported = |option: &str, value: String, why: &str| {
            Err(OfaError::Unsupported {
                file: path.to_path_buf(),
                option: option.into(),
                value,
                why: why.into(),
            })
        };
        let must = |option: &str, got: bool, want: bool| {
            if got != want {
                unsupported(
                    option,
                    got.to_string(),
                    "only the OFA visual-entailment layout is implemented",
                )
            } else {
                Ok(())
            }
        };
        must("use_ofasys", self.use_ofasys, false)?;
        must("use_image_feature", self.use_image_feature, true)?;
        must("normformer", self.normformer, true)?;
        must(
            "encoder_normalize_before",
            self.encoder_normalize_before,
            true,
        )?;
        must(
            "decoder_normalize_before",
            self.decoder_normalize_before,
            true,
        )?;
        must("layernorm_embedding", self.layernorm_embedding, true)?;
        must(
            "patch_layernorm_embedding",
            self.patch_layernorm_embedding,
            true,
        )?;
        must("add_type_embedding", self.add_type_embedding, true)?;
        must(
            "share_decoder_input_output_embed",
            self.share_decoder_input_output_embed,
            true,
        )?;
        must(
            "entangle_position_embedding",
            self.entangle_position_embedding,
            false,
        )?;
        must("share_attn_bias", self.share_attn_bias, false)?;
        self.activation().map_err(|why| OfaError::Unsupported {
            file: path.to_path_buf(),
            option: "activation_function".into(),
            value: self.activation_function.clone(),
            why,
        })?;
        self.resnet_layers().map_err(|why| OfaError::Unsupported {
            file: path.to_path_buf(),
            option: "resnet_type".into(),
            value: self.resnet_type.clone(),
            why,
        })?;
        for (name, dim, heads) in [
            (
                "encoder_attention_heads",
                self.d_model,
                self.encoder_attention_heads,
            ),
            (
                "decoder_attention_heads",
                self.d_model,
                self.decoder_attention_heads,
            ),
        ] {
            if heads == 0 || dim % heads != 0 {
                return Err(OfaError::Config {
                    file: path.to_path_buf(),
                    message: format!("{name} = {heads} does not divide d_model = {dim}"),
                });
            }
        }
        if self.token_bucket_size < 2 || self.image_bucket_size == 0 {
            return Err(OfaError::Config {
                file: path.to_path_buf(),
                message: "token_bucket_size and image_bucket_size must be positive".into(),
            });
        }
        Ok(())
    }

    pub fn activation(&self) -> std::result::Result<Activation, String> {
        match self.activation_function.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "activation {other:?} is not implemented (gelu, gelu_new, relu are)"
            )),
        }
    }

    /// Bottleneck blocks in each of the three ResNet stages OFA uses (its resnet18/34/50 are
    /// bottleneck nets too; `BasicBlock` is never used).
    pub fn resnet_layers(&self) -> std::result::Result<[usize; 3], String> {
        match self.resnet_type.as_str() {
            "resnet18" => Ok([2, 2, 2]),
            "resnet34" | "resnet50" => Ok([3, 4, 6]),
            "resnet101" => Ok([3, 4, 23]),
            "resnet152" => Ok([3, 8, 36]),
            other => Err(format!(
                "{other:?} is not one of resnet18, resnet34, resnet50, resnet101, resnet152"
            )),
        }
    }
}

/// How the source prompt is fed to the decoder (`model.prompt_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptType {
    /// Decoder prompt = source without its final `</s>` (the VE recipe).
    PrevOutput,
    /// Decoder prompt = the whole source, `</s>` included.
    Src,
}

/// Runtime options from `configuration.json` → `model.*`, with ModelScope's code defaults.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeConfig {
    pub task: Option<String>,
    pub prompt_type: PromptType,
    pub max_src_length: usize,
    pub patch_image_size: usize,
    pub imagenet_default_mean_and_std: bool,
    pub prompt: Option<String>,
    pub answer2label_file: String,
    /// Candidate answers in the answer→label file's key order.
    pub answers: Vec<String>,
}

impl RuntimeConfig {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIGURATION_FILE);
        let value = read_json(&path)?;
        Self::parse(value, &path, |file| {
            let p = dir.join(file);
            read_json(&p).map(|v| (v, p))
        })
    }

    /// From the text of `configuration.json` and of its answer→label file; `dir` names where
    /// they came from, for error messages.
    pub fn from_strs(configuration: &str, answers: &str, dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIGURATION_FILE);
        let value = serde_json::from_str(configuration).map_err(|source| OfaError::Json {
            path: path.clone(),
            source,
        })?;
        Self::parse(value, &path, |file| {
            let p = dir.join(file);
            serde_json::from_str(answers)
                .map(|v| (v, p.clone()))
                .map_err(|source| OfaError::Json { path: p, source })
        })
    }

    fn parse(
        value: Value,
        path: &Path,
        read_answers: impl Fn(&str) -> Result<(Value, PathBuf)>,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        let unsupported = |option: &str, value: &Value, why: &str| OfaError::Unsupported {
            file: path.clone(),
            option: option.into(),
            value: value.to_string(),
            why: why.into(),
        };
        let bad = |message: String| OfaError::Config {
            file: path.clone(),
            message,
        };
        let task = value.get("task").and_then(Value::as_str).map(str::to_owned);
        if let Some(t) = &task {
            if t != "visual-entailment" && t != "visual_entailment" {
                return Err(unsupported(
                    "task",
                    &value["task"],
                    "this model serves visual-entailment only",
                ));
            }
        }
        let model = value
            .get("model")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing the \"model\" object".into()))?;
        let get = |k: &str| model.get(k).filter(|v| !v.is_null());

        if let Some(v) = get("use_ofasys") {
            if v.as_bool() != Some(false) {
                return Err(unsupported(
                    "model.use_ofasys",
                    v,
                    "only the OFA (non-OFASys) model is implemented",
                ));
            }
        }
        if let Some(v) = get("language") {
            if v.as_str() != Some("en") {
                return Err(unsupported(
                    "model.language",
                    v,
                    "only the English BPE tokenizer is implemented",
                ));
            }
        }
        let gen_type = get("gen_type")
            .cloned()
            .unwrap_or(Value::from("generation"));
        if gen_type.as_str() != Some("traverse") {
            return Err(unsupported(
                "model.gen_type",
                &gen_type,
                "only traverse scoring of the candidate answers is implemented",
            ));
        }
        let prompt_type_v = get("prompt_type").cloned().unwrap_or(Value::from("none"));
        let prompt_type = match prompt_type_v.as_str() {
            Some("prev_output") => PromptType::PrevOutput,
            Some("src") => PromptType::Src,
            _ => {
                return Err(unsupported(
                    "model.prompt_type",
                    &prompt_type_v,
                    "expected prev_output or src (the reference pipeline cannot run \"none\")",
                ))
            }
        };
        let usize_opt = |k: &str, default: usize| -> Result<usize> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(format!("model.{k} must be a positive integer, got {v}"))),
            }
        };
        let max_src_length = usize_opt("max_src_length", 256)?;
        let patch_image_size = usize_opt("patch_image_size", 480)?;
        if patch_image_size % 16 != 0 {
            return Err(bad(format!(
                "model.patch_image_size = {patch_image_size} must be a multiple of 16 (the ResNet stride)"
            )));
        }
        let imagenet_default_mean_and_std = match get("imagenet_default_mean_and_std") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                bad(format!(
                    "model.imagenet_default_mean_and_std must be a boolean, got {v}"
                ))
            })?,
        };
        let prompt = match get("prompt") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| bad(format!("model.prompt must be a string, got {v}")))?
                    .to_owned(),
            ),
        };
        let answer2label_file = get("answer2label")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("model.answer2label must name the answer→label JSON file".into()))?
            .to_owned();
        let (answers_json, answers_path) = read_answers(&answer2label_file)?;
        let answers: Vec<String> = answers_json
            .as_object()
            .ok_or_else(|| OfaError::Config {
                file: answers_path.clone(),
                message: "expected a JSON object of answer → label".into(),
            })?
            .keys()
            .cloned()
            .collect();
        if answers.is_empty() {
            return Err(OfaError::Config {
                file: answers_path,
                message: "no candidate answers".into(),
            });
        }
        Ok(RuntimeConfig {
            task,
            prompt_type,
            max_src_length,
            patch_image_size,
            imagenet_default_mean_and_std,
            prompt,
            answer2label_file,
            answers,
        })
    }

    /// Per-channel (mean, std) of the `Normalize` transform.
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        if self.imagenet_default_mean_and_std {
            ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        } else {
            ([0.5; 3], [0.5; 3])
        }
    }
}

/// Which weight file a directory offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors(PathBuf),
    Pytorch(PathBuf),
}

impl WeightsFile {
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors(p) | WeightsFile::Pytorch(p) => p,
        }
    }
}

/// A ModelScope model directory, its files checked to exist.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub config: OfaConfig,
    pub runtime: RuntimeConfig,
    pub weights: WeightsFile,
}

impl ModelDir {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(OfaError::ModelDirMissing(root));
        }
        let config = OfaConfig::from_file(&root.join(CONFIG_FILE))?;
        let runtime = RuntimeConfig::from_dir(&root)?;
        for f in [VOCAB_FILE, MERGES_FILE] {
            if !root.join(f).is_file() {
                return Err(OfaError::MissingFile { path: root.join(f) });
            }
        }
        let weights = Self::pick_weights(&root)?;
        let grid = runtime.patch_image_size / 16;
        if grid > config.image_bucket_size {
            return Err(OfaError::Config {
                file: root.join(CONFIGURATION_FILE),
                message: format!(
                    "model.patch_image_size = {} gives a {grid}x{grid} grid, larger than image_bucket_size = {} in {CONFIG_FILE}",
                    runtime.patch_image_size, config.image_bucket_size
                ),
            });
        }
        Ok(ModelDir {
            root,
            config,
            runtime,
            weights,
        })
    }

    /// Safetensors is preferred (it loads without unpickling) unless `convert` made it from a
    /// `pytorch_model.bin` that has changed since (size or mtime); `pytorch_model.bin` is what the
    /// real model ships.
    pub fn pick_weights(root: &Path) -> Result<WeightsFile> {
        let st = root.join(SAFETENSORS_FILE);
        let pt = root.join(PYTORCH_FILE);
        if st.is_file() && pt.is_file() {
            // A file `convert` made from a different `pytorch_model.bin` is stale: trust the .bin.
            let pt_size = std::fs::metadata(&pt).map(|m| m.len().to_string()).ok();
            let meta = crate::weights::safetensors_metadata(&st).unwrap_or_default();
            let from_bin = meta
                .get(crate::weights::META_CONVERTED_FROM)
                .map(String::as_str)
                == Some(PYTORCH_FILE);
            let changed = meta.get(crate::weights::META_SOURCE_SIZE) != pt_size.as_ref()
                || meta
                    .get(crate::weights::META_SOURCE_MTIME)
                    .is_some_and(|m| Some(m) != crate::weights::mtime_ns(&pt).as_ref());
            let stale = from_bin && changed;
            Ok(if stale {
                WeightsFile::Pytorch(pt)
            } else {
                WeightsFile::Safetensors(st)
            })
        } else if st.is_file() {
            Ok(WeightsFile::Safetensors(st))
        } else if pt.is_file() {
            Ok(WeightsFile::Pytorch(pt))
        } else {
            Err(OfaError::MissingFile {
                path: root.join(format!("{SAFETENSORS_FILE} or {PYTORCH_FILE}")),
            })
        }
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| OfaError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| OfaError::Json {
        path: path.to_path_buf(),
        source,
    })
}
