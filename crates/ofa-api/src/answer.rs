//! The `/predict` answer, the shape existing clients read: `details` in the order yes, no,
//! maybe (other answers after, in the model's order); `result` indexes it; `label` capitalised.

use crate::Scores;
use serde::Serialize;

/// Order of `details` for the three SNLI-VE answers.
pub const CANONICAL_ORDER: [&str; 3] = ["yes", "no", "maybe"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Answer {
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

impl Answer {
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
        Answer {
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
        let p = Answer::from_scores(&s);
        assert_eq!(p.label, "Yes");
        assert_eq!(p.result, 0);
        assert_eq!(p.details, vec![s.probs[1], s.probs[0], s.probs[2]]);
        assert_eq!(p.confidence, s.probs[1]);
        let keys: Vec<&String> = p.scores.keys().collect();
        assert_eq!(keys, ["yes", "no", "maybe"]);
        assert!((p.details.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn other_answers_follow_in_model_order() {
        let answers: Vec<String> = ["maybe", "other", "yes", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = Scores::from_logits(&answers, &[0.0, 3.0, 1.0, 2.0]);
        let p = Answer::from_scores(&s);
        let keys: Vec<&String> = p.scores.keys().collect();
        assert_eq!(keys, ["yes", "no", "maybe", "other"]);
        assert_eq!((p.result, p.label.as_str()), (3, "Other"));
    }
}
