//! Base64 as clients write it: with or without a `data:...;base64,` prefix, and with the line
//! breaks and spaces that `base64 FILE` and PEM-style wrapping put in.

use base64::Engine as _;

use crate::{ErrorType, Failure};

/// Decodes `s`; `what` names the field in the message (`"image"`, `"images"[2]`).
pub fn decode(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    let b64 = s.split_once(";base64,").map_or(s, |(_, d)| d);
    let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| {
            Failure::new(
                ErrorType::InvalidBase64,
                format!("{what} is not valid base64: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_and_prefixed_forms_decode_alike() {
        assert_eq!(decode("aGVs\nbG8=", "x").unwrap(), b"hello");
        assert_eq!(
            decode("data:image/png;base64,aGVsbG8=", "x").unwrap(),
            b"hello"
        );
        let e = decode("not base64!", "\"image\"").unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidBase64);
        assert!(e.message.starts_with("\"image\" is not valid base64"));
    }
}
