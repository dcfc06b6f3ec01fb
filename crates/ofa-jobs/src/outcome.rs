//! What a job comes to: scores, or a [`Failure`] of one of two classes. An input failure will
//! never succeed and becomes an error result; a transient one is retried (by redelivery, or by
//! the file runner) up to the delivery limit. The kinds and classes are `ofa_api`'s, shared
//! with the HTTP service.

use std::time::Duration;

pub use ofa_api::Failure;
use ofa_api::{Answer, Scores};
use serde_json::{json, Map, Value};

/// Where a job's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub fetch: Duration,
    pub queue: Duration,
    pub inference: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub id: String,
    pub meta: Option<Value>,
    pub outcome: Result<Scores, Failure>,
    pub timings: Timings,
    /// Answered from the result store, with no model time.
    pub cached: bool,
}

impl JobResult {
    pub fn is_transient(&self) -> bool {
        self.outcome.as_ref().is_err_and(|f| f.transient)
    }

    /// The result message: `id`, `meta` (when the job had one), `status` and either the
    /// `/predict` answer fields or `error` and `error_type`, then the model and timings.
    pub fn to_json(&self, model_id: &str, model_revision: &str) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), self.id.clone().into());
        if let Some(m) = &self.meta {
            o.insert("meta".into(), m.clone());
        }
        match &self.outcome {
            Ok(scores) => {
                o.insert("status".into(), "ok".into());
                if let Value::Object(answer) = json!(Answer::from_scores(scores)) {
                    o.extend(answer);
                }
            }
            Err(f) => {
                o.insert("status".into(), "error".into());
                o.insert("error".into(), f.message.clone().into());
                o.insert("error_type".into(), f.kind.as_str().into());
            }
        }
        if self.cached {
            o.insert("cached".into(), true.into());
        }
        o.insert("model_id".into(), model_id.into());
        o.insert("model_revision".into(), model_revision.into());
        let t = &self.timings;
        o.insert(
            "timings".into(),
            json!({
                "fetch_s": t.fetch.as_secs_f64(),
                "queue_s": t.queue.as_secs_f64(),
                "inference_s": t.inference.as_secs_f64(),
                "total_s": t.total.as_secs_f64(),
            }),
        );
        Value::Object(o)
    }
}
