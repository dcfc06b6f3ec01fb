//! `/predict` and `/predict/batch` bodies: multipart (as `curl -F` sends it) and JSON. The
//! first byte picks the content type; any body parses into pairs or a specific API error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofa_server::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 3 {
        0 => "multipart/form-data; boundary=X",
        1 => "application/json",
        _ => "text/plain",
    };
    let (parts, ()) = http::Request::builder()
        .header("content-type", content_type)
        .body(())
        .expect("a valid request head")
        .into_parts();
    if kind & 0x80 != 0 {
        let _ = parse::batch(&parts, body, 32);
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let body = body.to_vec().into();
    let _ = runtime.block_on(parse::pair(parts, body));
});
