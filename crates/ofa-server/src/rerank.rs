//! `POST /rerank`: one image against many sentences, or one sentence against many images —
//! the candidates a vector search returned — ranked by the probability of one answer (`yes`
//! by default). Candidates are admitted together like a batch; a bad candidate gets its own
//! error entry and the others are still ranked. The ranking itself is shared with the CLI.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Json;
use ofa_engine::Pair;
use ofa_model::Scores;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::answer::Answer;
use crate::error::{ApiError, ErrorType};
use crate::parse::{content_type, decode_base64, utf8_field};
use crate::timings::Timings;
use crate::{parse, predict, AppState};

/// A rerank request as received: exactly one of `image` + `texts` or `text` + `images`.
#[derive(Debug, Default)]
pub struct RerankRequest {
    pub image: Option<Bytes>,
    pub texts: Vec<String>,
    pub text: Option<String>,
    pub images: Vec<Bytes>,
    pub premise: Option<String>,
    pub label: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
}

/// How to rank: which answer's probability, how many results, from which score up.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub label: String,
    pub top_k: Option<usize>,
    pub min_score: f32,
}

const RERANK_FIELDS: &str = "image, texts, text, images, premise, label, top_k, min_score";

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorType::InvalidRerankRequest, message)
}

impl RerankRequest {
    /// The candidate pairs in request order, and the ranking options, checked against the
    /// candidate limit and the model's answers.
    pub fn into_pairs(
        self,
        max_candidates: usize,
        answers: &[String],
    ) -> Result<(Vec<Pair>, Ranking), ApiError> {
        let label = self.label.unwrap_or_else(|| "yes".into()).to_lowercase();
        if !answers.contains(&label) {
            return Err(invalid(format!(
                "label {label:?} is not one of the model's answers {answers:?}"
            )));
        }
        if self.top_k == Some(0) {
            return Err(invalid("top_k must be at least 1"));
        }
        if self.top_k.is_some_and(|k| k > max_candidates) {
            return Err(invalid(format!(
                "top_k must be at most {max_candidates} (MAX_RERANK_CANDIDATES)"
            )));
        }
        let min_score = self.min_score.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_score) {
            return Err(invalid("min_score must be a probability, from 0 to 1"));
        }
        let premise = self.premise;
        let pairs: Vec<Pair> = match (self.image, self.texts, self.text, self.images) {
            (Some(image), texts, None, images) if !texts.is_empty() && images.is_empty() => texts
                .into_iter()
                .map(|text| Pair {
                    image: image.clone(),
                    text,
                    premise: premise.clone(),
                    cache_scope: 0,
                })
                .collect(),
            (None, texts, Some(text), images) if texts.is_empty() && !images.is_empty() => images
                .into_iter()
                .map(|image| Pair {
                    image,
                    text: text.clone(),
                    premise: premise.clone(),
                    cache_scope: 0,
                })
                .collect(),
            _ => {
                return Err(invalid(
                    "give either \"image\" with a non-empty \"texts\" list, or \"text\" with a non-empty \"images\" list",
                ))
            }
        };
        parse::check_batch_len(pairs.len(), max_candidates)
            .map_err(|e| ApiError::new(e.kind, format!("{}: too many candidates", e.message)))?;
        Ok((
            pairs,
            Ranking {
                label,
                top_k: self.top_k,
                min_score,
            },
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRerank {
    image: Option<String>,
    texts: Option<Vec<String>>,
    text: Option<String>,
    images: Option<Vec<String>>,
    premise: Option<String>,
    label: Option<String>,
    top_k: Option<usize>,
    min_score: Option<f32>,
}

pub async fn parse_request(parts: Parts, body: Bytes) -> Result<RerankRequest, ApiError> {
    let ct = content_type(&parts);
    if ct.starts_with("application/json") {
        parse::bounded_json(&body)?;
        let j: JsonRerank = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorType::InvalidJson, format!("invalid JSON body: {e}"))
        })?;
        let image = j
            .image
            .map(|s| decode_base64(&s, "\"image\""))
            .transpose()?
            .map(Bytes::from);
        let images = j
            .images
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| decode_base64(s, &format!("\"images\"[{i}]")).map(Bytes::from))
            .collect::<Result<_, _>>()?;
        Ok(RerankRequest {
            image,
            texts: j.texts.unwrap_or_default(),
            text: j.text,
            images,
            premise: j.premise,
            label: j.label,
            top_k: j.top_k,
            min_score: j.min_score,
        })
    } else if ct.starts_with("multipart/form-data") {
        multipart_request(parts, body).await
    } else {
        Err(ApiError::new(
            ErrorType::UnsupportedContentType,
            format!("expected application/json or multipart/form-data, got {ct:?}"),
        ))
    }
}

async fn multipart_request(parts: Parts, body: Bytes) -> Result<RerankRequest, ApiError> {
    let mut r = RerankRequest::default();
    for (name, bytes) in parse::multipart_fields(parts, body).await? {
        let number = |s: String| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| invalid(format!("form field {name:?} must be a number, got {s:?}")))
        };
        match name.as_str() {
            "image" => r.image = Some(bytes),
            "images" => r.images.push(bytes),
            "texts" => r.texts.push(utf8_field(&name, bytes)?),
            "text" => r.text = Some(utf8_field(&name, bytes)?),
            "premise" => r.premise = Some(utf8_field(&name, bytes)?),
            "label" => r.label = Some(utf8_field(&name, bytes)?),
            "top_k" => {
                let v = number(utf8_field(&name, bytes)?)?;
                if v.fract() != 0.0 || v < 0.0 {
                    return Err(invalid("top_k must be a whole number"));
                }
                r.top_k = Some(v as usize);
            }
            "min_score" => r.min_score = Some(number(utf8_field(&name, bytes)?)? as f32),
            other => return Err(parse::unknown_field(other, RERANK_FIELDS)),
        }
    }
    Ok(r)
}

/// `{"results": [...]}`: ranked candidates best first (ties by position), those under
/// `min_score` left out, at most `top_k`; then every failed candidate with its error. Also
/// the kinds of the failures, for the refusal counter.
pub fn rank(results: Vec<Result<Scores, ApiError>>, ranking: &Ranking) -> (Value, Vec<ErrorType>) {
    let mut ranked: Vec<(usize, f32, Value)> = Vec::new();
    let mut failed = Vec::new();
    let mut kinds = Vec::new();
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(scores) => {
                let at = scores.answers.iter().position(|a| *a == ranking.label);
                let score = at.map_or(0.0, |i| scores.probs[i]);
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

pub async fn rerank(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let extensions = upload.parts.extensions.clone();
    let request = parse_request(upload.parts, upload.body).await?;
    let answers: Vec<String> = state
        .model_info()
        .and_then(|i| serde_json::from_value(i["answers"].clone()).ok())
        .unwrap_or_default();
    let (mut pairs, ranking) = request.into_pairs(state.config.max_rerank_candidates, &answers)?;
    let scope = crate::access::cache_scope(&state.config.access, &extensions);
    pairs.iter_mut().for_each(|p| p.cache_scope = scope);
    crate::access::charge_pairs(&state.config.access, &extensions, pairs.len()).await?;
    let _in_flight = state.enter()?;
    let mut results = engine.run_each(pairs, deadline).await?;
    // When every candidate failed, the request failed: answer with the first one's error.
    if results.iter().all(Result::is_err) {
        return Err(results.swap_remove(0).map(|_| ()).unwrap_err().into());
    }
    let timings = Timings::slowest(results.iter().flatten());
    let (body, failed) = rank(
        results
            .into_iter()
            .map(|r| r.map(|s| s.scores).map_err(ApiError::from))
            .collect(),
        &ranking,
    );
    for kind in failed {
        state.engine_metrics.record_rejection(kind.as_str());
    }
    Ok(predict::respond(Json(body), timings, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(yes: f32) -> Scores {
        let answers: Vec<String> = ["no", "yes", "maybe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Scores::from_logits(&answers, &[0.0, yes, 0.0])
    }

    #[test]
    fn best_first_then_filtered_then_cut_then_errors() {
        let results = vec![
            Ok(scores(1.0)),
            Err(ApiError::new(ErrorType::InvalidImage, "corrupt")),
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
    fn exactly_one_form_and_known_labels() {
        let answers: Vec<String> = ["yes", "no", "maybe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ok = RerankRequest {
            image: Some(Bytes::from_static(b"x")),
            texts: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let (pairs, r) = ok.into_pairs(64, &answers).unwrap();
        assert_eq!((pairs.len(), r.label.as_str()), (2, "yes"));
        assert_eq!(
            pairs[0].image.as_ptr(),
            pairs[1].image.as_ptr(),
            "one image, shared"
        );
        let both = RerankRequest {
            image: Some(Bytes::from_static(b"x")),
            texts: vec!["a".into()],
            text: Some("t".into()),
            images: vec![Bytes::from_static(b"y")],
            ..Default::default()
        };
        assert_eq!(
            both.into_pairs(64, &answers).unwrap_err().kind,
            ErrorType::InvalidRerankRequest
        );
        let label = RerankRequest {
            text: Some("t".into()),
            images: vec![Bytes::from_static(b"y")],
            label: Some("perhaps".into()),
            ..Default::default()
        };
        assert!(label
            .into_pairs(64, &answers)
            .unwrap_err()
            .message
            .contains("perhaps"));
        let many = RerankRequest {
            text: Some("t".into()),
            images: vec![Bytes::from_static(b"y"); 3],
            ..Default::default()
        };
        assert_eq!(
            many.into_pairs(2, &answers).unwrap_err().kind,
            ErrorType::BatchTooLarge
        );
    }
}
