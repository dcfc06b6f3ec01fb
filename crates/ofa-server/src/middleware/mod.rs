//! The layers around every request, one concern each, outermost first: the request id, the
//! request log line, the request metrics, the trace span, the client's address, and the catch
//! for panics; the inference routes add their guard (payload, keys, limits). They pass what
//! they learn along in the request's and the response's extensions.

mod access_log;
mod client_address;
mod guard;
mod panic;
mod request_id;
mod request_metrics;
mod span;

pub use access_log::access_log;
pub use client_address::client_address;
pub use guard::guard_inference;
pub use panic::catch_panic;
pub use request_id::{request_id, RequestId};
pub use request_metrics::request_metrics;
pub use span::{span, TraceIds};

use axum::extract::{MatchedPath, Request};

/// The route's pattern (`/v2/models/{name}/infer`), or `unmatched`: a label with few values.
fn route(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}
