//! `POST /rerank`: one image against many sentences, or one sentence against many images —
//! the candidates a vector search returned — ranked by the probability of one answer (`yes`
//! by default). Candidates are admitted together like a batch; a bad candidate gets its own
//! error entry and the others are still ranked. The ranking itself is `ofa_api`'s, shared with
//! the CLI.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Json;
use ofa_api::{rank, Ranking};
use serde::Deserialize;

use crate::error::{ApiError, ErrorType};
use crate::images::{ImageRef, PendingPair};
use crate::parse::{content_type, utf8_field};
use crate::timings::Timings;
use crate::{candidates, parse, predict, AppState};

/// A rerank request as received: exactly one of `image` + `texts` or `text` + `images`.
#[derive(Debug, Default)]
pub struct RerankRequest {
    pub image: Option<ImageRef>,
    pub texts: Vec<String>,
    pub text: Option<String>,
    pub images: Vec<ImageRef>,
    pub premise: Option<String>,
    pub label: Option<String>,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
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
    ) -> Result<(Vec<PendingPair>, Ranking), ApiError> {
        let ranking = Ranking::new(
            self.label,
            self.top_k,
            self.min_score,
            answers,
            max_candidates,
        )
        .map_err(invalid)?;
        let premise = self.premise;
        let pairs: Vec<PendingPair> = match (self.image, self.texts, self.text, self.images) {
            (Some(image), texts, None, images) if !texts.is_empty() && images.is_empty() => texts
                .into_iter()
                .map(|text| PendingPair {
                    image: image.clone(),
                    text,
                    premise: premise.clone(),
                })
                .collect(),
            (None, texts, Some(text), images) if texts.is_empty() && !images.is_empty() => images
                .into_iter()
                .map(|image| PendingPair {
                    image,
                    text: text.clone(),
                    premise: premise.clone(),
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
        Ok((pairs, ranking))
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
            .map(|s| ImageRef::parse(&s, "\"image\""))
            .transpose()?;
        let images = j
            .images
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| ImageRef::parse(s, &format!("\"images\"[{i}]")))
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
            "image" => r.image = Some(ImageRef::Inline(bytes)),
            "images" => r.images.push(ImageRef::Inline(bytes)),
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

pub async fn rerank(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    let extensions = upload.parts.extensions.clone();
    let request = parse_request(upload.parts, upload.body).await?;
    let answers = state.answers();
    let (pending, ranking) = request.into_pairs(state.config.max_rerank_candidates, &answers)?;
    let scope = crate::access::cache_scope(&state.config.access, &extensions);
    crate::access::charge_pairs(&state.config.access, &extensions, pending.len()).await?;
    let _in_flight = state.enter()?;
    let mut scoring = candidates::score(&state, &engine, pending, scope, deadline).await?;
    // When every candidate failed, the request failed: answer with that error.
    if let Some(e) = scoring.all_failed() {
        return Err(e);
    }
    let results = scoring.results;
    let mut timings = Timings::slowest(results.iter().flatten());
    timings.fetch = scoring.fetch;
    let (body, failed) = rank(
        results.into_iter().map(|r| r.map(|s| s.scores)).collect(),
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

    #[test]
    fn exactly_one_form_and_known_labels() {
        let answers: Vec<String> = ["yes", "no", "maybe"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ok = RerankRequest {
            image: Some(ImageRef::Inline(Bytes::from_static(b"x"))),
            texts: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let (pairs, r) = ok.into_pairs(64, &answers).unwrap();
        assert_eq!((pairs.len(), r.label.as_str()), (2, "yes"));
        assert_eq!(pairs[0].image, pairs[1].image, "one image for every text");
        let both = RerankRequest {
            image: Some(ImageRef::Inline(Bytes::from_static(b"x"))),
            texts: vec!["a".into()],
            text: Some("t".into()),
            images: vec![ImageRef::Inline(Bytes::from_static(b"y"))],
            ..Default::default()
        };
        assert_eq!(
            both.into_pairs(64, &answers).unwrap_err().kind,
            ErrorType::InvalidRerankRequest
        );
        let label = RerankRequest {
            text: Some("t".into()),
            images: vec![ImageRef::Inline(Bytes::from_static(b"y"))],
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
            images: vec![ImageRef::Inline(Bytes::from_static(b"y")); 3],
            ..Default::default()
        };
        assert_eq!(
            many.into_pairs(2, &answers).unwrap_err().kind,
            ErrorType::BatchTooLarge
        );
    }
}
