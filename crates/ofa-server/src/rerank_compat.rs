//! `POST /v1/rerank` and `POST /v2/rerank`: the rerank shape of Cohere's and Jina's APIs (and
//! vLLM's), so the frameworks and databases that call a reranker call us unchanged:
//! `{"model"?, "query", "documents", "top_n"?, "return_documents"?}` →
//! `{"id", "results": [{"index", "relevance_score", "document"?}], "meta", "usage"}`.
//!
//! A query or document is a string or `{"text": …}` / `{"image": …}`; a string is an image when
//! it is an `http(s)://` URL or a `data:image/` URI, a text otherwise (so a database that stores
//! image URLs as strings needs no glue). Exactly one side is images. `relevance_score` is the
//! probability of `yes` (`label` may choose `no` or `maybe`). Up to `MAX_RERANK_DOCUMENTS`
//! documents, scored chunk by chunk ([`crate::candidates`]). A document that fails (its image
//! could not be fetched or decoded, its text is empty) comes after the ranked ones with
//! `relevance_score` 0 and its `error` and `error_type`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::Json;
use ofa_api::{rank, Ranking};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorType};
use crate::images::{ImageRef, PendingPair};
use crate::middleware::RequestId;
use crate::parse::{self, content_type};
use crate::timings::Timings;
use crate::{candidates, predict, AppState};

/// A query or a document as clients send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Item {
    Plain(String),
    Object {
        text: Option<String>,
        image: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Side {
    Text(String),
    Image(String),
}

impl Item {
    fn side(self, what: &str) -> Result<Side, ApiError> {
        match self {
            Item::Plain(s) if ImageRef::looks_like_image(&s) => Ok(Side::Image(s)),
            Item::Plain(s) => Ok(Side::Text(s)),
            Item::Object {
                text: Some(t),
                image: None,
            } => Ok(Side::Text(t)),
            Item::Object {
                text: None,
                image: Some(i),
            } => Ok(Side::Image(i)),
            Item::Object { .. } => Err(invalid(format!(
                "{what}: an object needs exactly one of \"text\" and \"image\""
            ))),
        }
    }
}

/// The request; fields these APIs define that do not apply here (`max_tokens_per_doc`,
/// `rank_fields`, `priority`, …) are accepted and ignored, as clients send them by default.
#[derive(Debug, Deserialize)]
struct CompatRequest {
    model: Option<String>,
    query: Item,
    documents: Vec<Item>,
    /// A JSON number of any size: one past `MAX_RERANK_DOCUMENTS` is refused by name.
    top_n: Option<serde_json::Number>,
    return_documents: Option<bool>,
    /// Ours: which answer's probability is the relevance score.
    label: Option<String>,
    /// Ours: a premise read with every image.
    premise: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorType::InvalidRerankRequest, message)
}

const ONE_SIDE: &str = "exactly one side must be images: a text query with image documents, or an image query with text documents (a string is an image when it is an http(s) URL or a data:image/ URI)";

/// The pairs in document order, and the documents as given (for `return_documents`).
fn pairs(
    query: Side,
    documents: Vec<Side>,
    premise: Option<String>,
) -> Result<Vec<PendingPair>, ApiError> {
    match query {
        Side::Text(text) => documents
            .into_iter()
            .enumerate()
            .map(|(i, d)| match d {
                Side::Image(s) => Ok(PendingPair {
                    image: ImageRef::parse(&s, &format!("documents[{i}]"))?,
                    text: text.clone(),
                    premise: premise.clone(),
                }),
                Side::Text(_) => Err(invalid(format!("documents[{i}] is a text: {ONE_SIDE}"))),
            })
            .collect(),
        Side::Image(s) => {
            let image = ImageRef::parse(&s, "query")?;
            documents
                .into_iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Side::Text(text) => Ok(PendingPair {
                        image: image.clone(),
                        text,
                        premise: premise.clone(),
                    }),
                    Side::Image(_) => {
                        Err(invalid(format!("documents[{i}] is an image: {ONE_SIDE}")))
                    }
                })
                .collect()
        }
    }
}

/// A document as echoed back: `{"text": …}` or `{"image": …}`, as the client sent it.
fn echo(side: &Side) -> Value {
    match side {
        Side::Text(t) => json!({ "text": t }),
        Side::Image(i) => json!({ "image": i }),
    }
}

pub async fn rerank(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.config.request_timeout;
    let engine = state.loaded_engine()?;
    let upload = parse::read_body(req, &state, deadline).await?;
    let _upload = upload.permit;
    if !content_type(&upload.parts).starts_with("application/json") {
        return Err(ApiError::new(
            ErrorType::UnsupportedContentType,
            "expected application/json: {\"query\", \"documents\", \"top_n\"?, \"return_documents\"?}",
        ));
    }
    parse::bounded_json(&upload.body)?;
    let request: CompatRequest = serde_json::from_slice(&upload.body).map_err(|e| {
        ApiError::new(
            ErrorType::InvalidJson,
            format!("invalid rerank request: {e}"),
        )
    })?;
    drop(upload.body);
    let max = state.config.max_rerank_documents;
    if request.documents.is_empty() {
        return Err(invalid("\"documents\" is empty"));
    }
    parse::check_batch_len(request.documents.len(), max).map_err(|e| {
        ApiError::new(
            e.kind,
            format!("{}: too many documents (MAX_RERANK_DOCUMENTS)", e.message),
        )
    })?;
    let query = request.query.side("query")?;
    let documents: Vec<Side> = request
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.side(&format!("documents[{i}]")))
        .collect::<Result<_, _>>()?;
    let answers = state.answers();
    let top_n = match request.top_n {
        None => None,
        Some(n) => match n.as_u64() {
            Some(n) if n >= 1 && n <= max as u64 => Some(n as usize),
            _ => {
                return Err(invalid(format!(
                    "top_n must be a whole number from 1 to {max} (MAX_RERANK_DOCUMENTS), got {n}"
                )))
            }
        },
    };
    // Asking for more results than there are documents returns them all, as these APIs do.
    let top_n = top_n.map(|n| n.min(documents.len()));
    let ranking =
        Ranking::new(request.label, top_n, None, &answers, documents.len()).map_err(invalid)?;
    let echoed: Option<Vec<Value>> = request
        .return_documents
        .unwrap_or(false)
        .then(|| documents.iter().map(echo).collect());
    let pending = pairs(query, documents, request.premise)?;
    let extensions = &upload.parts.extensions;
    let scope = crate::access::cache_scope(&state.config.access, extensions);
    crate::access::charge_pairs(&state.config.access, extensions, pending.len()).await?;
    let _in_flight = state.enter()?;
    let n = pending.len();
    let mut scoring = candidates::score(&state, &engine, pending, scope, deadline).await?;
    if let Some(e) = scoring.all_failed() {
        return Err(e);
    }
    let mut timings = Timings::slowest(scoring.results.iter().flatten());
    timings.fetch = scoring.fetch;
    let results = std::mem::take(&mut scoring.results);
    let (ranked, failed) = rank(
        results.into_iter().map(|r| r.map(|s| s.scores)).collect(),
        &ranking,
    );
    for kind in failed {
        state.engine_metrics.record_rejection(kind.as_str());
    }
    let results: Vec<Value> = ranked["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let index = r["index"].as_u64().unwrap_or(0) as usize;
            let mut out = json!({
                "index": index,
                "relevance_score": r.get("score").cloned().unwrap_or(json!(0.0)),
            });
            if let Some(kind) = r.get("error_type") {
                out["error"] = r["error"].clone();
                out["error_type"] = kind.clone();
            }
            if let Some(docs) = &echoed {
                out["document"] = docs[index].clone();
            }
            out
        })
        .collect();
    let id = extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let body = json!({
        "id": id,
        "model": request.model.unwrap_or_else(|| state.config.model_id.clone()),
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        // No per-token billing here: the unit is a scored pair, what rates and quotas count.
        "usage": {"total_tokens": n},
    });
    Ok(predict::respond(Json(body), timings, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_name_images_are_images_and_one_side_must_be_images() {
        let side = |s: &str| Item::Plain(s.into()).side("x").unwrap();
        assert_eq!(
            side("https://cdn/a.jpg"),
            Side::Image("https://cdn/a.jpg".into())
        );
        assert_eq!(
            side("data:image/png;base64,aGk="),
            Side::Image("data:image/png;base64,aGk=".into())
        );
        assert_eq!(side("a red dress"), Side::Text("a red dress".into()));
        let both = Item::Object {
            text: Some("t".into()),
            image: Some("i".into()),
        };
        assert_eq!(
            both.side("documents[0]").unwrap_err().kind,
            ErrorType::InvalidRerankRequest
        );
        let texts = vec![Side::Text("a".into()), Side::Text("b".into())];
        let e = pairs(Side::Text("q".into()), texts.clone(), None).unwrap_err();
        assert!(
            e.message.contains("documents[0] is a text"),
            "{}",
            e.message
        );
        let p = pairs(Side::Image("https://cdn/q.jpg".into()), texts, None).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].image, ImageRef::Url("https://cdn/q.jpg".into()));
        assert_eq!(p[1].text, "b");
    }
}
