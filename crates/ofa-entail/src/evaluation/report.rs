//! What `eval` reports: accuracy and the confusion matrix of one run, throughput, and between
//! two runs (two precisions) how often they agree and by how much their probabilities differ.

use serde_json::{json, Value};

use crate::evaluation::data::Example;

/// One precision's run over the set.
pub struct Run {
    pub precision: String,
    pub device: String,
    pub answers: Vec<String>,
    /// Per example: the probabilities, or why it could not be scored.
    pub outcomes: Vec<Result<Vec<f32>, String>>,
    pub seconds: f64,
}

fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

impl Run {
    /// `confusion[gold][predicted]` over the scored examples.
    pub fn confusion(&self, gold: &[usize]) -> Vec<Vec<u64>> {
        let n = self.answers.len();
        let mut m = vec![vec![0u64; n]; n];
        for (g, o) in gold.iter().zip(&self.outcomes) {
            if let Ok(p) = o {
                m[*g][argmax(p)] += 1;
            }
        }
        m
    }

    pub fn scored(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    pub fn json(&self, examples: &[Example]) -> Value {
        let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
        let m = self.confusion(&gold);
        let correct: u64 = (0..m.len()).map(|i| m[i][i]).sum();
        let scored = self.scored();
        let errors: Vec<Value> = self
            .outcomes
            .iter()
            .zip(examples)
            .filter_map(|(o, ex)| {
                o.as_ref()
                    .err()
                    .map(|e| json!({"line": ex.line, "id": ex.id, "error": e}))
            })
            .collect();
        json!({
            "precision": self.precision,
            "device": self.device,
            "examples": self.outcomes.len(),
            "scored": scored,
            "correct": correct,
            "accuracy": if scored == 0 { Value::Null } else { json!(correct as f64 / scored as f64) },
            "answers": self.answers,
            "confusion": m,
            "errors": errors,
            "seconds": self.seconds,
            "pairs_per_second": self.outcomes.len() as f64 / self.seconds.max(1e-9),
        })
    }
}

/// How two runs over the same examples compare (both scored).
pub fn agreement(a: &Run, b: &Run, examples: &[Example]) -> Value {
    let (mut both, mut same, mut max_diff) = (0u64, 0u64, 0f32);
    let mut changes = Vec::new();
    for ((x, y), ex) in a.outcomes.iter().zip(&b.outcomes).zip(examples) {
        let (Ok(p), Ok(q)) = (x, y) else { continue };
        both += 1;
        let diff = p
            .iter()
            .zip(q)
            .map(|(u, v)| (u - v).abs())
            .fold(0f32, f32::max);
        max_diff = max_diff.max(diff);
        let (la, lb) = (argmax(p), argmax(q));
        if la == lb {
            same += 1;
        } else {
            // The first run's top-two margin: a change is only to be expected where it is thin.
            let mut sorted = p.clone();
            sorted.sort_by(|u, v| v.total_cmp(u));
            changes.push(json!({
                "line": ex.line,
                "id": ex.id,
                "from": a.answers[la],
                "to": b.answers[lb],
                "margin": sorted[0] - sorted.get(1).copied().unwrap_or(0.0),
            }));
        }
    }
    json!({
        "compared": both,
        "same_label": same,
        "agreement": if both == 0 { Value::Null } else { json!(same as f64 / both as f64) },
        "max_probability_difference": max_diff,
        "label_changes": changes,
    })
}

/// The report for people.
pub fn text(report: &Value) -> String {
    let mut o = String::new();
    for run in report["runs"].as_array().into_iter().flatten() {
        let answers: Vec<&str> = run["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        o += &format!(
            "{} on {}: {} of {} examples scored",
            run["precision"].as_str().unwrap_or("?"),
            run["device"].as_str().unwrap_or("?"),
            run["scored"],
            run["examples"]
        );
        match run["accuracy"].as_f64() {
            Some(a) => {
                o += &format!(
                    ", accuracy {:.2}% ({}/{})\n",
                    a * 100.0,
                    run["correct"],
                    run["scored"]
                )
            }
            None => o += "\n",
        }
        o += "  confusion (rows: label, columns: predicted)\n";
        o += &format!("  {:>8}", "");
        for a in &answers {
            o += &format!("{a:>8}");
        }
        o += "\n";
        for (i, row) in run["confusion"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            o += &format!("  {:>8}", answers.get(i).copied().unwrap_or("?"));
            for c in row.as_array().into_iter().flatten() {
                o += &format!("{:>8}", c.as_u64().unwrap_or(0));
            }
            o += "\n";
        }
        o += &format!(
            "  throughput {:.2} pairs/s ({:.1} s)\n",
            run["pairs_per_second"].as_f64().unwrap_or(0.0),
            run["seconds"].as_f64().unwrap_or(0.0)
        );
        for e in run["errors"].as_array().into_iter().flatten().take(5) {
            o += &format!(
                "  line {}: {}\n",
                e["line"],
                e["error"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(c) = report.get("comparison") {
        o += &format!(
            "agreement {}/{} ({:.2}%), largest probability difference {:.6}\n",
            c["same_label"],
            c["compared"],
            c["agreement"].as_f64().unwrap_or(0.0) * 100.0,
            c["max_probability_difference"].as_f64().unwrap_or(0.0)
        );
        for ch in c["label_changes"].as_array().into_iter().flatten() {
            o += &format!(
                "  line {}: {} → {} (first run's margin {:.4})\n",
                ch["line"],
                ch["from"].as_str().unwrap_or(""),
                ch["to"].as_str().unwrap_or(""),
                ch["margin"].as_f64().unwrap_or(0.0)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(line: usize, label: usize) -> Example {
        Example {
            line,
            id: Some(format!("e{line}")),
            image: "x.png".into(),
            hypothesis: "h".into(),
            premise: None,
            label,
        }
    }

    fn run(precision: &str, outcomes: Vec<Result<Vec<f32>, String>>) -> Run {
        Run {
            precision: precision.into(),
            device: "cpu".into(),
            answers: vec!["yes".into(), "no".into(), "maybe".into()],
            outcomes,
            seconds: 2.0,
        }
    }

    #[test]
    fn accuracy_and_confusion_count_scored_examples_only() {
        let examples = [example(1, 0), example(2, 1), example(3, 2), example(4, 0)];
        let r = run(
            "f32",
            vec![
                Ok(vec![0.7, 0.2, 0.1]),
                Ok(vec![0.6, 0.3, 0.1]),
                Ok(vec![0.1, 0.2, 0.7]),
                Err("corrupt".into()),
            ],
        );
        let j = r.json(&examples);
        assert_eq!(
            (j["scored"].as_u64(), j["correct"].as_u64()),
            (Some(3), Some(2))
        );
        assert!((j["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(j["confusion"], json!([[1, 0, 0], [1, 0, 0], [0, 0, 1]]));
        assert_eq!(
            j["errors"],
            json!([{"line": 4, "id": "e4", "error": "corrupt"}])
        );
        assert_eq!(j["pairs_per_second"], 2.0);
        let nothing = run("f32", vec![Err("x".into())]).json(&examples[..1]);
        assert!(
            nothing["accuracy"].is_null(),
            "no accuracy from nothing scored"
        );
    }

    #[test]
    fn agreement_names_each_label_change_with_its_margin() {
        let examples = [example(1, 0), example(2, 0), example(3, 0)];
        let a = run(
            "f32",
            vec![
                Ok(vec![0.5, 0.45, 0.05]),
                Ok(vec![0.9, 0.05, 0.05]),
                Err("x".into()),
            ],
        );
        let b = run(
            "int8",
            vec![
                Ok(vec![0.44, 0.51, 0.05]),
                Ok(vec![0.88, 0.07, 0.05]),
                Ok(vec![1.0, 0.0, 0.0]),
            ],
        );
        let g = agreement(&a, &b, &examples);
        assert_eq!(
            (g["compared"].as_u64(), g["same_label"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(g["agreement"], 0.5);
        let change = &g["label_changes"][0];
        assert_eq!(
            (change["from"].as_str(), change["to"].as_str()),
            (Some("yes"), Some("no"))
        );
        assert!(
            (change["margin"].as_f64().unwrap() - 0.05).abs() < 1e-6,
            "{change}"
        );
        assert!((g["max_probability_difference"].as_f64().unwrap() - 0.06).abs() < 1e-6);
    }

    #[test]
    fn the_text_report_shows_accuracy_and_the_matrix() {
        let examples = [example(1, 0), example(2, 1)];
        let r = run(
            "f32",
            vec![Ok(vec![0.7, 0.2, 0.1]), Ok(vec![0.1, 0.8, 0.1])],
        );
        let report = json!({"runs": [r.json(&examples)]});
        let t = text(&report);
        assert!(
            t.starts_with("f32 on cpu: 2 of 2 examples scored, accuracy 100.00% (2/2)"),
            "{t}"
        );
        assert!(
            t.contains("confusion (rows: label, columns: predicted)"),
            "{t}"
        );
        assert!(t.contains("     yes      no   maybe"), "{t}");
    }
}
