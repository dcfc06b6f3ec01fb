//! `configuration.json`: the task and runtime options (`model.*`), plus the answer→label file
//! it names.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{OfaError, Result};
use crate::load::files::{read_json, CONFIGURATION_FILE};

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
