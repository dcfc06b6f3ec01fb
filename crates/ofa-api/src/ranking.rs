//! Ranking candidates by one answer's probability: `POST /rerank` and `ofa-entail rerank`
//! rank alike because both call this.

use serde_json::{json, Value};

use crate::{Answer, ErrorType, Failure, Scores};

/// How to rank: which answer's probability, how many results, from which score up.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub label: String,
    pub top_k: Option<usize>,
    pub min_score: f32,
}

impl Ranking {
    /// Checks the options against the model's answers and the candidate limit; `label`
    /// defaults to `yes`, `min_score` to 0. The message names the option at fault.
    pub fn new(
        label: Option<String>,
        top_k: Option<usize>,
        min_score: Option<f32>,
        answers: &[String],
        max_candidates: usize,
    ) -> Result<Ranking, String> {
        let label = label.unwrap_or_else(|| "yes".into()).to_lowercase();
        if !answers.contains(&label) {
            return Err(format!(
                "label {label:?} is not one of the model's answers {answers:?}"
            ));
        }
        if top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        if top_k.is_some_and(|k| k > max_candidates) {
            return Err(format!(
                "top_k must be at most {max_candidates} (MAX_RERANK_CANDIDATES)"
            ));
        }
        let min_score = min_score.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_score) {
            return Err("min_score must be a probability, from 0 to 1".into());
        }
        Ok(Ranking {
            label,
            top_k,
            min_score,
        })
    }
}

/// `{"results": [...]}`: ranked candidates best first (ties by position), those under
/// `min_score` left out, at most `top_k`; then every failed candidate with its error. Also
/// the kinds of the failures, for the refusal counter.
pub fn rank(results: Vec<Result<Scores, Failure>>, ranking: &Ranking) -> (Value, Vec<ErrorType>) {
    let mut ranked: Vec<(usize, f32, Value)> = Vec::new();
    let mut failed = Vec::new();
    let mut kinds = Vec::new();
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(scores) => {
                let score = scores.prob_of(&ranking.label).unwrap_or(0.0);
                if score < ranking.min_score {
                    continue;
                }
                let a = Answer::from_scores(&scores);
                ranked.push((
                    index,
                    score,
                    json!({"index": index, "score": score, "label": a.label, "details": a.details, "scores": a.scores}),
                ));
            }
            Err(e) => {
                kinds.push(e.kind);
                failed.push(
                    json!({"index": index, "error": e.message, "error_type": e.kind.as_str()}),
                );
            }
        }
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = ranking.top_k {
        ranked.truncate(k);
    }
    let mut results: Vec<Value> = ranked.into_iter().map(|(_, _, v)| v).collect();
    results.extend(failed);
    (json!({ "results": results }), kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Vec<String> {
        ["no", "yes", "maybe"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn scores(yes: f32) -> Scores {
        Scores::from_logits(&answers(), &[0.0, yes, 0.0])
    }

    #[test]
    fn best_first_then_filtered_then_cut_then_errors() {
        let results = vec![
            Ok(scores(1.0)),
            Err(Failure::new(ErrorType::InvalidImage, "corrupt")),
            Ok(scores(3.0)),
            Ok(scores(-2.0)),
            Ok(scores(3.0)),
        ];
        let ranking = Ranking {
            label: "yes".into(),
            top_k: Some(2),
            min_score: 0.1,
        };
        let (v, kinds) = rank(results, &ranking);
        let r = v["results"].as_array().unwrap();
        let idx: Vec<u64> = r.iter().map(|x| x["index"].as_u64().unwrap()).collect();
        assert_eq!(idx, [2, 4, 1], "ties keep request order; the error last");
        assert_eq!(r[2]["error_type"], "invalid_image");
        assert_eq!(kinds, [ErrorType::InvalidImage]);
        assert!(r[0]["score"].as_f64().unwrap() > 0.8);
        assert_eq!(r[0]["label"], "Yes");
    }

    #[test]
    fn options_are_checked_with_a_reason() {
        let a = answers();
        let r = Ranking::new(Some("MAYBE".into()), Some(3), None, &a, 64).unwrap();
        assert_eq!(
            (r.label.as_str(), r.top_k, r.min_score),
            ("maybe", Some(3), 0.0)
        );
        let e = Ranking::new(Some("perhaps".into()), None, None, &a, 64).unwrap_err();
        assert!(e.contains("\"perhaps\""), "{e}");
        let e = Ranking::new(None, Some(0), None, &a, 64).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = Ranking::new(None, Some(65), None, &a, 64).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
        let e = Ranking::new(None, None, Some(1.5), &a, 64).unwrap_err();
        assert!(e.contains("min_score"), "{e}");
    }
}
