//! Request bodies: read within the payload limit and the body deadline, then parsed by
//! content type into pairs whose images may still be URLs to fetch. Every failure is a
//! specific [`ApiError`].

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{ApiError, ErrorType};
use crate::images::{ImageRef, PendingPair};
use crate::AppState;

pub fn content_type(parts: &Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The `Content-Length` a request declares, if any.
pub fn declared_length(h: &axum::http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorType::PayloadTooLarge,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// A request body and its share of the upload budget, held until the answer is sent.
pub struct Upload {
    pub parts: Parts,
    pub body: Bytes,
    pub permit: OwnedSemaphorePermit,
}

/// The whole body, or 413 (over the limit: refused from `Content-Length` before reading),
/// 429 (the upload budget is held by other bodies), 408 (it did not arrive within the body
/// timeout) or 504 (not before the request deadline).
pub async fn read_body(
    req: Request,
    state: &AppState,
    deadline: Instant,
) -> Result<Upload, ApiError> {
    let limit = state.config.payload_limit;
    let (parts, body) = req.into_parts();
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    // A body of unknown length may grow to the limit.
    let permit = state.reserve_upload(declared.map_or(limit, |n| n as usize))?;
    let body_deadline = Instant::now() + state.config.connections.body_timeout;
    let until = body_deadline.min(deadline);
    let collected = tokio::time::timeout_at(
        until.into(),
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await;
    match collected {
        Err(_) if until == deadline => Err(ApiError::new(
            ErrorType::DeadlineExceeded,
            "the request body did not arrive before the request deadline",
        )),
        Err(_) => Err(ApiError::new(
            ErrorType::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                state.config.connections.body_timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorType::InvalidBody,
            format!("cannot read the request body: {e}"),
        )),
        Ok(Ok(c)) => Ok(Upload {
            parts,
            body: c.to_bytes(),
            permit,
        }),
    }
}

/// Base64 as clients write it (see [`ofa_api::base64::decode`]), as an API error.
pub fn decode_base64(s: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    Ok(ofa_api::base64::decode(s, what)?)
}

/// One pair as JSON clients send it.
#[derive(Deserialize)]
pub struct JsonPair {
    image: Option<String>,
    #[serde(alias = "hypothesis")]
    text: Option<String>,
    /// ModelScope's own input names the premise `text2`.
    #[serde(alias = "text2")]
    premise: Option<String>,
}

impl JsonPair {
    fn into_pair(self) -> Result<PendingPair, ApiError> {
        let image = self.image.ok_or_else(|| {
            ApiError::new(
                ErrorType::MissingImage,
                "missing \"image\" (base64, a data URI or an http(s) URL)",
            )
        })?;
        let text = self
            .text
            .ok_or_else(|| ApiError::new(ErrorType::MissingText, "missing \"text\""))?;
        Ok(PendingPair {
            image: ImageRef::parse(&image, "\"image\"")?,
            text,
            premise: self.premise,
        })
    }
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::new(ErrorType::InvalidJson, format!("invalid JSON body: {e}"))
}

/// Measures a JSON body before it is parsed into anything: more than
/// [`MAX_JSON_VALUES`](crate::json_shape::MAX_JSON_VALUES) values is refused, so what parsing
/// builds stays a small multiple of the body.
pub fn bounded_json(body: &[u8]) -> Result<(), ApiError> {
    let shape = crate::json_shape::measure(body).map_err(invalid_json)?;
    check_values(&shape)
}

fn check_values(shape: &crate::json_shape::Shape) -> Result<(), ApiError> {
    let max = crate::json_shape::MAX_JSON_VALUES;
    if shape.values > max {
        return Err(ApiError::new(
            ErrorType::InvalidJson,
            format!("the JSON body holds more than {max} values"),
        ));
    }
    Ok(())
}

/// `/predict`: multipart (`image` file, `text`, `premise`) or JSON with an image in base64, a
/// data URI or a URL.
pub async fn pair(parts: Parts, body: Bytes) -> Result<PendingPair, ApiError> {
    let ct = content_type(&parts);
    if ct.starts_with("multipart/form-data") {
        multipart_pair(parts, body).await
    } else if ct.starts_with("application/json") {
        serde_json::from_slice::<JsonPair>(&body)
            .map_err(invalid_json)?
            .into_pair()
    } else {
        Err(ApiError::new(
            ErrorType::UnsupportedContentType,
            format!("expected multipart/form-data or application/json, got {ct:?}"),
        ))
    }
}

/// Every field of a multipart body, in order, as (name, content).
pub async fn multipart_fields(parts: Parts, body: Bytes) -> Result<Vec<(String, Bytes)>, ApiError> {
    let req = Request::from_parts(parts, Body::from(body));
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|r| ApiError::new(ErrorType::InvalidMultipart, r.body_text()))?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(ErrorType::InvalidMultipart, e.body_text())
    };
    let mut fields = Vec::new();
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        fields.push((name, field.bytes().await.map_err(bad)?));
    }
    Ok(fields)
}

async fn multipart_pair(parts: Parts, body: Bytes) -> Result<PendingPair, ApiError> {
    let (mut image, mut text, mut premise) = (None, None, None);
    for (name, bytes) in multipart_fields(parts, body).await? {
        match name.as_str() {
            "image" | "file" => image = Some(bytes),
            "text" | "hypothesis" => text = Some(utf8_field(&name, bytes)?),
            "premise" | "text2" => premise = Some(utf8_field(&name, bytes)?),
            other => return Err(unknown_field(other, "image, text, premise")),
        }
    }
    Ok(PendingPair {
        image: ImageRef::Inline(image.ok_or_else(|| {
            ApiError::new(
                ErrorType::MissingImage,
                "missing form field \"image\" (the image file)",
            )
        })?),
        text: text
            .ok_or_else(|| ApiError::new(ErrorType::MissingText, "missing form field \"text\""))?,
        premise,
    })
}

/// A form field this route does not take: refused, so a misspelt field is not silently lost.
pub fn unknown_field(name: &str, known: &str) -> ApiError {
    let shown: String = name.chars().take(64).collect();
    ApiError::new(
        ErrorType::InvalidMultipart,
        format!("unknown form field {shown:?} (the fields are {known})"),
    )
}

/// A text form field.
pub fn utf8_field(name: &str, bytes: Bytes) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::new(
            ErrorType::InvalidUtf8,
            format!("form field {name:?} is not valid UTF-8"),
        )
    })
}

/// `/predict/batch`: a JSON list of pairs (or `{"items": [...]}`), at most `max_items`.
pub fn batch(parts: &Parts, body: &[u8], max_items: usize) -> Result<Vec<PendingPair>, ApiError> {
    if !content_type(parts).starts_with("application/json") {
        return Err(ApiError::new(
            ErrorType::UnsupportedContentType,
            "expected application/json: a list of {\"image\", \"text\", \"premise\"}",
        ));
    }
    // Counted before anything is built: a body of many tiny items is refused by its count.
    let shape = crate::json_shape::measure(body).map_err(invalid_json)?;
    check_batch_len(shape.longest_list, max_items)?;
    check_values(&shape)?;
    let v: Value = serde_json::from_slice(body).map_err(invalid_json)?;
    let items = match v {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::new(
                    ErrorType::InvalidJson,
                    "expected a JSON list of items",
                ))
            }
        },
        _ => {
            return Err(ApiError::new(
                ErrorType::InvalidJson,
                "expected a JSON list of items",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::new(
            ErrorType::EmptyBatch,
            "the batch has no items",
        ));
    }
    check_batch_len(items.len(), max_items)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("item {i}: ");
            serde_json::from_value::<JsonPair>(item)
                .map_err(|e| ApiError::new(ErrorType::InvalidJson, format!("invalid batch: {e}")))
                .and_then(JsonPair::into_pair)
                .map_err(|e| e.at(&at))
        })
        .collect()
}

/// Refuses batches over `max_items`.
pub fn check_batch_len(n: usize, max_items: usize) -> Result<(), ApiError> {
    if n > max_items {
        return Err(ApiError::new(
            ErrorType::BatchTooLarge,
            format!("{n} items, more than the limit of {max_items}"),
        ));
    }
    Ok(())
}
