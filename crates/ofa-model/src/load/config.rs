//! `config.json`: the architecture hyper-parameters.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{OfaError, Result};
use crate::load::files::read_json;

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
