//! What the model answers for one pair: per-candidate log-probabilities and probabilities, in
//! the model's own candidate order. Wire shapes are built from these by the front ends.

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

    /// The probability of one answer (`None` when the model has no such answer).
    pub fn prob_of(&self, answer: &str) -> Option<f32> {
        self.answers
            .iter()
            .position(|a| a == answer)
            .map(|i| self.probs[i])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_first_candidate() {
        let answers: Vec<String> = ["no", "yes"].iter().map(|s| s.to_string()).collect();
        let s = Scores::from_logits(&answers, &[1.0, 1.0]);
        assert_eq!(s.argmax, 0);
        assert_eq!(s.prob_of("yes"), Some(0.5));
        assert_eq!(s.prob_of("maybe"), None);
    }
}
