//! KServe v2 requests with the binary tensor extension: the first two bytes give the JSON
//! header's length (`Inference-Header-Content-Length`), the rest is the body. Any request
//! decodes into equally long inputs or a specific API error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofa_server::kserve_tensor::{decode, BINARY_HEADER};

fuzz_target!(|data: &[u8]| {
    let Some((len, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    let len = u16::from_le_bytes(*len);
    if len != u16::MAX {
        headers.insert(BINARY_HEADER, http::HeaderValue::from(len));
    }
    if let Ok(r) = decode(&headers, body) {
        assert_eq!(r.images.len(), r.texts.len());
        assert!(!r.images.is_empty());
        assert!(r
            .premises
            .as_ref()
            .is_none_or(|p| p.len() == r.images.len()));
    }
});
