//! The one output shape of the CLI and the HTTP service, compatible with existing `/predict`
//! clients: `details` in the order yes, no, maybe; `result` indexes it; `label` capitalised.

use serde::Serialize;

/// Order of `details` for the three SNLI-VE answers; any other answers follow in file order.
pub const CANONICAL_ORDER: [&str; 3] = ["yes", "no", "maybe"];

/// Raw scores in the model's candidate order (the answer→label file's key order).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub answers: Vec<String>,
    /// Per-answer log-probability (the reference's `sum_logprob`).
    pub log_probs: Vec<f32>,
    /// Softmax of `log_probs`.
    pub probs: Vec<f32>,
    /// First maximum of `log_probs`.
    pub argmax: usize,
}

impl Scores {
    /// The reference's float32 sequence: masked log_softmax over the answers, then softmax.
    pub fn from_logits(answers: &[String], logits: &[f32]) -> Self {
        let log_probs = log_softmax(logits);
        let probs = softmax(&log_probs);
        let mut argmax = 0;
        for (i, &v) in log_probs.iter().enumerate() {
            if v > log_probs[argmax] {
                argmax = i;
            }
        }
        Scores {
            answers: answers.to_vec(),
            log_probs,
            probs,
            argmax,
        }
    }
}

fn log_softmax(z: &[f32]) -> Vec<f32> {
    let mx = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = z.iter().map(|&v| (v - mx).exp()).sum();
    let lse = sum.ln();
    z.iter().map(|&v| (v - mx) - lse).collect()
}

fn softmax(s: &[f32]) -> Vec<f32> {
    let mx = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = s.iter().map(|&v| (v - mx).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|&v| v / sum).collect()
}

/// `{"result", "label", "confidence", "details", "scores"}` — what `/predict` clients read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub result: usize,
    pub label: String,
    pub confidence: f32,
    pub details: Vec<f32>,
    pub scores: serde_json::Map<String, serde_json::Value>,
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Prediction {
    pub fn from_scores(s: &Scores) -> Self {
        let mut order: Vec<usize> = CANONICAL_ORDER
            .iter()
            .filter_map(|a| s.answers.iter().position(|x| x == a))
            .collect();
        order.extend(
            (0..s.answers.len()).filter(|i| !CANONICAL_ORDER.contains(&s.answers[*i].as_str())),
        );
        let details: Vec<f32> = order.iter().map(|&i| s.probs[i]).collect();
        let scores = order
            .iter()
            .map(|&i| {
                (
                    s.answers[i].clone(),
                    serde_json::Value::from(f64::from(s.probs[i])),
                )
            })
            .collect();
        Prediction {
            result: order.iter().position(|&i| i == s.argmax).unwrap_or(0),
            label: capitalise(&s.answers[s.argmax]),
            confidence: s.probs[s.argmax],
            details,
            scores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_follow_yes_no_maybe_whatever_the_model_order() {
        let answers: Vec<String> = ["no", "yes", "maybe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = Scores::from_logits(&answers, &[0.0, 2.0, 1.0]);
        let p = Prediction::from_scores(&s);
        assert_eq!(p.label, "Yes");
        assert_eq!(p.result, 0);
        assert_eq!(p.details, vec![s.probs[1], s.probs[0], s.probs[2]]);
        assert_eq!(p.confidence, s.probs[1]);
        let keys: Vec<&String> = p.scores.keys().collect();
        assert_eq!(keys, ["yes", "no", "maybe"]);
        assert!((p.details.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        let answers: Vec<String> = ["no", "yes"].iter().map(|s| s.to_string()).collect();
        let s = Scores::from_logits(&answers, &[1.0, 1.0]);
        assert_eq!(s.argmax, 0);
    }
}
