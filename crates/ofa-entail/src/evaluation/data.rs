//! The labelled set `eval` reads: JSON lines in the SNLI-VE layout, `image` a path relative to
//! the file, `hypothesis` (or `text`), optional `premise`, `label` yes / no / maybe (SNLI's
//! entailment / contradiction / neutral are the same three).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Example {
    /// 1-based line in the file, for messages.
    pub line: usize,
    pub id: Option<String>,
    pub image: PathBuf,
    pub hypothesis: String,
    pub premise: Option<String>,
    /// Index into the model's answers.
    pub label: usize,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    image: String,
    #[serde(alias = "text")]
    hypothesis: String,
    #[serde(default)]
    premise: Option<String>,
    label: String,
}

/// The answer a label names, as an index into `answers`.
pub fn label_index(label: &str, answers: &[String]) -> Option<usize> {
    let l = label.trim().to_lowercase();
    let l = match l.as_str() {
        "entailment" => "yes",
        "contradiction" => "no",
        "neutral" => "maybe",
        other => other,
    };
    answers.iter().position(|a| a.eq_ignore_ascii_case(l))
}

/// Every example of the file; a malformed line stops with its line number.
pub fn read(path: &Path, answers: &[String]) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(raw).with_context(|| {
            format!(
                "{}, line {line}: not an example (image, hypothesis, label)",
                path.display()
            )
        })?;
        let Some(label) = label_index(&row.label, answers) else {
            bail!(
                "{}, line {line}: label {:?} is not one of {answers:?} (or entailment, contradiction, neutral)",
                path.display(),
                row.label
            );
        };
        out.push(Example {
            line,
            id: row.id.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            image: base.join(row.image),
            hypothesis: row.hypothesis,
            premise: row.premise,
            label,
        });
    }
    if out.is_empty() {
        bail!("{} holds no examples", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snli_names_and_ours_map_to_the_answers() {
        let answers: Vec<String> = ["yes", "no", "maybe"].map(String::from).to_vec();
        assert_eq!(label_index("Entailment", &answers), Some(0));
        assert_eq!(label_index("no", &answers), Some(1));
        assert_eq!(label_index(" neutral ", &answers), Some(2));
        assert_eq!(label_index("perhaps", &answers), None);
    }
}
