//! Decoding a KServe v2 inference request, validated against the protocol: each input named
//! once, `datatype` BYTES, a shape of non-negative integers whose product is the element count,
//! binary sections exactly as long as `binary_data_size` says and nothing after the last one.
//! Images travel as raw bytes (binary extension) or base64 strings (JSON).

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorType};
use crate::images::ImageRef;

pub const BINARY_HEADER: &str = "inference-header-content-length";

/// The pairs of one request, in order.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<Value>,
    /// Inline bytes, or URLs to fetch (a JSON element that is an http(s) URL, or a binary
    /// element that is one: no image file starts with `http://`).
    pub images: Vec<ImageRef>,
    pub texts: Vec<String>,
    pub premises: Option<Vec<String>>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorType::InvalidInferenceRequest, message)
}

pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<InferRequest, ApiError> {
    let json_len = match headers.get(BINARY_HEADER) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                invalid(format!(
                    "{BINARY_HEADER} must be a byte count no larger than the body ({} bytes)",
                    body.len()
                ))
            })?,
        None => body.len(),
    };
    crate::parse::bounded_json(&body[..json_len])?;
    let request: Value = serde_json::from_slice(&body[..json_len]).map_err(|e| {
        ApiError::new(
            ErrorType::InvalidJson,
            format!("invalid inference request JSON: {e}"),
        )
    })?;
    let request = request
        .as_object()
        .ok_or_else(|| invalid("the inference request must be a JSON object"))?;
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("missing \"inputs\" (a list of tensors)"))?;
    let mut binary = &body[json_len..];
    let (mut images, mut texts, mut premises) = (None, None, None);
    for input in inputs {
        let input = input
            .as_object()
            .ok_or_else(|| invalid("each input must be a JSON object"))?;
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("each input needs a \"name\" string"))?;
        let slot = match name {
            "image" => &mut images,
            "text" => &mut texts,
            "premise" => &mut premises,
            other => {
                return Err(invalid(format!(
                    "unknown input {other:?} (image, text, premise)"
                )))
            }
        };
        if slot.is_some() {
            return Err(invalid(format!("input {name:?} is given twice")));
        }
        *slot = Some(elements(input, name, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the last input's binary_data_size",
            binary.len()
        )));
    }
    let images =
        images.ok_or_else(|| ApiError::new(ErrorType::MissingImage, "missing input \"image\""))?;
    let texts =
        texts.ok_or_else(|| ApiError::new(ErrorType::MissingText, "missing input \"text\""))?;
    if images.is_empty()
        || images.len() != texts.len()
        || premises.as_ref().is_some_and(|p| p.len() != images.len())
    {
        return Err(invalid(
            "image, text and premise must have the same non-zero batch size",
        ));
    }
    let utf8 = |v: Vec<Vec<u8>>, what: &str| -> Result<Vec<String>, ApiError> {
        v.into_iter()
            .enumerate()
            .map(|(i, b)| {
                String::from_utf8(b).map_err(|_| {
                    ApiError::new(
                        ErrorType::InvalidUtf8,
                        format!("{what} element {i} is not valid UTF-8"),
                    )
                })
            })
            .collect()
    };
    let images = match images {
        Elements::Raw(v) => v.into_iter().map(raw_image).collect(),
        Elements::Json(v) => v
            .iter()
            .enumerate()
            .map(|(i, s)| ImageRef::parse(s, &format!("image element {i}")))
            .collect::<Result<_, _>>()?,
    };
    Ok(InferRequest {
        id: request.get("id").cloned(),
        images,
        texts: utf8(texts.into_bytes(), "text")?,
        premises: premises
            .map(|p| utf8(p.into_bytes(), "premise"))
            .transpose()?,
    })
}

/// A binary element: the image's bytes, or an http(s) URL written as bytes.
fn raw_image(bytes: Vec<u8>) -> ImageRef {
    let url = bytes.len() <= 8192
        && (bytes.starts_with(b"http://") || bytes.starts_with(b"https://"))
        && !bytes
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    match String::from_utf8(bytes) {
        Ok(s) if url => ImageRef::Url(s),
        Ok(s) => ImageRef::Inline(s.into_bytes().into()),
        Err(e) => ImageRef::Inline(e.into_bytes().into()),
    }
}

/// A BYTES tensor's elements: raw from the binary extension, or strings from JSON.
enum Elements {
    Raw(Vec<Vec<u8>>),
    Json(Vec<String>),
}

impl Elements {
    fn len(&self) -> usize {
        match self {
            Elements::Raw(v) => v.len(),
            Elements::Json(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_bytes(self) -> Vec<Vec<u8>> {
        match self {
            Elements::Raw(v) => v,
            Elements::Json(v) => v.into_iter().map(String::into_bytes).collect(),
        }
    }
}

fn elements(
    input: &Map<String, Value>,
    name: &str,
    binary: &mut &[u8],
) -> Result<Elements, ApiError> {
    let bad = |m: String| invalid(format!("input {name:?}: {m}"));
    match input.get("datatype") {
        Some(Value::String(d)) if d == "BYTES" => {}
        Some(other) => return Err(bad(format!("datatype must be \"BYTES\", got {other}"))),
        None => return Err(bad("missing \"datatype\" (BYTES)".into())),
    }
    let count = shape_count(input.get("shape")).map_err(bad)?;
    let size = input
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"));
    let elems = match size {
        Some(size) => {
            let size = size
                .as_u64()
                .ok_or_else(|| bad(format!("binary_data_size must be a byte count, got {size}")))?;
            if size > binary.len() as u64 {
                return Err(bad(format!(
                    "binary_data_size {size} is more than the {} bytes left",
                    binary.len()
                )));
            }
            let (chunk, rest) = binary.split_at(size as usize);
            *binary = rest;
            Elements::Raw(split_bytes(chunk).map_err(bad)?)
        }
        None => {
            let data = input
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("needs \"data\" or binary data".into()))?;
            Elements::Json(
                data.iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(bad(format!("BYTES elements must be strings, got {other}"))),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    if elems.len() as u64 != count {
        return Err(bad(format!(
            "shape says {count} elements but {} were given",
            elems.len()
        )));
    }
    Ok(elems)
}

/// The element count a shape declares: `[B]` or `[B, 1]`, non-negative integers.
fn shape_count(shape: Option<&Value>) -> Result<u64, String> {
    let dims = shape
        .and_then(Value::as_array)
        .ok_or("missing \"shape\" (a list of dimensions)")?;
    let dims: Vec<u64> = dims
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| format!("shape dimensions must be non-negative integers, got {d}"))
        })
        .collect::<Result<_, _>>()?;
    match dims.as_slice() {
        [b] | [b, 1] => Ok(*b),
        _ => Err(format!("shape must be [B] or [B, 1], got {dims:?}")),
    }
}

/// The binary extension's BYTES layout: each element a little-endian u32 length, then bytes.
pub fn split_bytes(mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !chunk.is_empty() {
        let Some((len, rest)) = chunk.split_first_chunk::<4>() else {
            return Err("truncated BYTES element length".into());
        };
        let n = u32::from_le_bytes(*len) as usize;
        if rest.len() < n {
            return Err(format!(
                "BYTES element of {n} bytes, but only {} left",
                rest.len()
            ));
        }
        out.push(rest[..n].to_vec());
        chunk = &rest[n..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: Value) -> Result<InferRequest, ApiError> {
        decode(&HeaderMap::new(), json.to_string().as_bytes())
    }

    fn input(name: &str, shape: Value, data: Value) -> Value {
        serde_json::json!({"name": name, "datatype": "BYTES", "shape": shape, "data": data})
    }

    fn err(r: Result<InferRequest, ApiError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidInferenceRequest, "{}", e.message);
        e.message
    }

    #[test]
    fn shapes_must_match_the_data() {
        let img = serde_json::json!(["aGk="]);
        let text = serde_json::json!(["a dog."]);
        let ok = req(
            serde_json::json!({"inputs": [input("image", [1].into(), img.clone()), input("text", serde_json::json!([1, 1]), text.clone())]}),
        );
        assert_eq!(ok.unwrap().images, [inline(b"hi")]);
        for bad in [
            serde_json::json!([-5]),
            serde_json::json!([4611686018427387904u64]),
            serde_json::json!([3, 7]),
            serde_json::json!([]),
            serde_json::json!("1"),
        ] {
            let m = err(req(
                serde_json::json!({"inputs": [input("image", bad.clone(), img.clone()), input("text", [1].into(), text.clone())]}),
            ));
            assert!(m.contains("shape"), "{bad}: {m}");
        }
    }

    #[test]
    fn datatype_names_and_duplicates_are_checked() {
        let mut i = input("image", [1].into(), serde_json::json!(["aGk="]));
        i["datatype"] = 5.into();
        assert!(err(req(serde_json::json!({"inputs": [i]}))).contains("datatype"));
        let t = input("text", [1].into(), serde_json::json!(["x"]));
        assert!(err(req(serde_json::json!({"inputs": [t.clone(), t]}))).contains("twice"));
    }

    #[test]
    fn binary_sections_are_exact() {
        let json = serde_json::json!({"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
            {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
        ]})
        .to_string();
        let mut body = json.clone().into_bytes();
        body.extend(2u32.to_le_bytes());
        body.extend(b"hi");
        body.extend(3u32.to_le_bytes());
        body.extend(b"png");
        let mut h = HeaderMap::new();
        h.insert(BINARY_HEADER, json.len().into());
        let r = decode(&h, &body).unwrap();
        assert_eq!((r.texts[0].as_str(), &r.images[0]), ("hi", &inline(b"png")));
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(err(decode(&h, &trailing)).contains("follow"));
        assert!(err(decode(&h, &body[..body.len() - 1])).contains("binary_data_size"));
    }

    #[test]
    fn line_wrapped_base64_images_are_accepted() {
        let r = req(
            serde_json::json!({"inputs": [input("image", [1].into(), serde_json::json!(["aG\nk=\n"])), input("text", [1].into(), serde_json::json!(["x"]))]}),
        );
        assert_eq!(r.unwrap().images, [inline(b"hi")]);
    }

    #[test]
    fn an_element_may_name_its_image_by_url() {
        let r = req(
            serde_json::json!({"inputs": [input("image", [2].into(), serde_json::json!(["https://cdn.example/a.jpg", "aGk="])), input("text", [2].into(), serde_json::json!(["x", "y"]))]}),
        );
        assert_eq!(
            r.unwrap().images,
            [
                ImageRef::Url("https://cdn.example/a.jpg".into()),
                inline(b"hi")
            ]
        );
        assert_eq!(
            raw_image(b"https://cdn.example/a.jpg".to_vec()),
            ImageRef::Url("https://cdn.example/a.jpg".into())
        );
        assert_eq!(raw_image(b"\x89PNG\r\n".to_vec()), inline(b"\x89PNG\r\n"));
        assert_eq!(raw_image(b"http://a b".to_vec()), inline(b"http://a b"));
    }

    fn inline(b: &[u8]) -> ImageRef {
        ImageRef::Inline(axum::body::Bytes::copy_from_slice(b))
    }
}
