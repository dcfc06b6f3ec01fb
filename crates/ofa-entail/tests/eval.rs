//! `ofa-entail eval` on a small labelled set: the golden cases, labelled with the reference's
//! answers for the tiny model, so every scored example must be right; then the same set with
//! some labels changed, whose confusion matrix follows from the reference's answers.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::fixtures;

fn eval(data: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("eval")
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("MODEL_DIR", fixtures().join("tiny_ofa_ve"))
        .env_remove("PRECISION")
        .output()
        .unwrap()
}

fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The model's answers, in its order (the tiny model's is no, yes, maybe).
fn answers() -> Vec<String> {
    let map: serde_json::Map<String, Value> = serde_json::from_slice(
        &std::fs::read(fixtures().join("tiny_ofa_ve/answer2label.json")).unwrap(),
    )
    .unwrap();
    let mut named: Vec<(u64, String)> = map
        .into_iter()
        .map(|(k, v)| (v.as_u64().unwrap(), k))
        .collect();
    named.sort();
    named.into_iter().map(|(_, k)| k).collect()
}

/// Refused as the service refuses them: an empty hypothesis, one over MAX_TEXT_CHARS.
fn refused(row: &Value) -> bool {
    let h = row["hypothesis"].as_str().unwrap();
    h.trim().is_empty() || h.chars().count() > 2000
}

/// The set's examples: (line's label, the reference's answer for the tiny model, id).
fn golden_set() -> (PathBuf, Vec<Value>) {
    let path = fixtures().join("eval/golden.jsonl");
    let rows = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (path, rows)
}

fn reference_answers() -> std::collections::HashMap<String, String> {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("golden/cases.json")).unwrap())
            .unwrap();
    cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["pipeline_output"]["labels"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_reference_answers_score_every_scored_example_right() {
    let (path, rows) = golden_set();
    let reference = reference_answers();
    for r in &rows {
        assert_eq!(r["label"], reference[r["id"].as_str().unwrap()].as_str());
    }
    let rep = report(&eval(&path, &["--json"]));
    let run = &rep["runs"][0];
    assert_eq!(rep["examples"], rows.len());
    // The empty and the over-long hypothesis are refused, as the service refuses them (422);
    // they are reported, not scored.
    let refused_lines: Vec<u64> = (1..=rows.len() as u64)
        .filter(|l| refused(&rows[*l as usize - 1]))
        .collect();
    assert_eq!(refused_lines.len(), 2);
    assert_eq!(run["scored"], rows.len() - 2);
    let errors = run["errors"].as_array().unwrap();
    let error_lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(error_lines, refused_lines);
    let messages: Vec<&str> = errors
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert!(messages.iter().any(|m| m.contains("empty")), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("more than the limit")),
        "{messages:?}"
    );
    assert_eq!(run["correct"], run["scored"]);
    assert_eq!(run["accuracy"], 1.0);
    let answers = answers();
    assert_eq!(run["answers"], serde_json::json!(answers));
    for (i, a) in answers.iter().enumerate() {
        let expected = rows
            .iter()
            .filter(|r| r["label"] == a.as_str() && !refused(r))
            .count();
        assert_eq!(run["confusion"][i][i], expected, "{a}");
    }
    assert!(run["pairs_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(run["precision"], "f32");

    // The same in words.
    let out = eval(&path, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let scored = rows.len() - 2;
    assert!(
        text.contains(&format!("accuracy 100.00% ({scored}/{scored})")),
        "{text}"
    );
    assert!(
        text.contains("confusion (rows: label, columns: predicted)"),
        "{text}"
    );
}

#[test]
fn changed_labels_land_in_their_cells_and_a_comparison_agrees_with_itself() {
    let (_, rows) = golden_set();
    let dir_guard = tempfile::Builder::new()
        .prefix("ofa-eval-")
        .tempdir()
        .unwrap();
    let dir = dir_guard.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    // Absolute image paths (the set lives elsewhere); SNLI's names for three labels; every
    // fourth label moved on by one answer.
    let answers = answers();
    let snli = |a: &str| match a {
        "yes" => "entailment",
        "no" => "contradiction",
        _ => "neutral",
    };
    let mut expected = [[0u64; 3]; 3];
    let mut lines = Vec::new();
    for (k, r) in rows.iter().enumerate() {
        let truth = answers
            .iter()
            .position(|a| r["label"] == a.as_str())
            .unwrap();
        let label = if k % 4 == 0 { (truth + 1) % 3 } else { truth };
        if !refused(r) {
            expected[label][truth] += 1;
        }
        let mut row = r.clone();
        row["image"] = fixtures()
            .join("eval")
            .join(r["image"].as_str().unwrap())
            .display()
            .to_string()
            .into();
        row["label"] = if k % 3 == 0 {
            snli(&answers[label])
        } else {
            answers[label].as_str()
        }
        .into();
        lines.push(row.to_string());
    }
    let data = dir.join("set.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let rep = report(&eval(&data, &["--json", "--compare", "f32"]));
    assert_eq!(rep["runs"].as_array().unwrap().len(), 2);
    let run = &rep["runs"][0];
    assert_eq!(run["confusion"], serde_json::json!(expected));
    let correct: u64 = (0..3).map(|i| expected[i][i]).sum();
    assert_eq!(run["correct"], correct);
    let c = &rep["comparison"];
    assert_eq!(c["compared"], rows.len() - 2);
    assert_eq!(c["agreement"], 1.0);
    assert!(c["max_probability_difference"].as_f64().unwrap() < 1e-6);
    assert!(c["label_changes"].as_array().unwrap().is_empty());

    // Mistakes in the set or the request are named.
    std::fs::write(
        &data,
        format!(
            "{}\n{{\"image\": \"x.png\", \"hypothesis\": \"h\", \"label\": \"sure\"}}\n",
            lines[0]
        ),
    )
    .unwrap();
    let out = eval(&data, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("\"sure\""), "{err}");
    let out = eval(&data, &["--compare", "bf16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bf16"));
}

#[test]
fn int8_against_f32_changes_no_clear_label() {
    let (data, rows) = golden_set();
    let rep = report(&eval(&data, &["--json", "--compare", "int8"]));
    assert_eq!(rep["runs"][1]["precision"], "int8");
    let c = &rep["comparison"];
    assert_eq!(c["compared"], rows.len() - 2);
    let drift = c["max_probability_difference"].as_f64().unwrap();
    assert!(
        drift > 0.0 && drift < 0.1,
        "int8 moved probabilities by {drift}"
    );
    for change in c["label_changes"].as_array().unwrap() {
        let margin = change["margin"].as_f64().unwrap();
        assert!(margin < 0.02, "a clear label changed: {change}");
    }
}
