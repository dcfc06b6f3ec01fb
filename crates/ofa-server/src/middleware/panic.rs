//! A panic while handling a request is a 500 for that request (logged, and counted like any
//! error by the outer layers), never the process's end.

use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use crate::error::{ApiError, ErrorType};

pub async fn catch_panic(req: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => {
            let message = ofa_api::panic::panic_message(&*panic);
            tracing::error!(error = message, "request_panicked");
            ApiError::new(ErrorType::Internal, "internal error").into_response()
        }
    }
}
