//! Which handler answers which route, and the layers around them.

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::{ApiError, ErrorType};
use crate::middleware::{
    access_log, catch_panic, client_address, guard_inference, request_id, request_metrics, span,
};
use crate::{assets, kserve, predict, probes, rerank, rerank_compat, AppState};

pub fn router(state: AppState) -> Router {
    let limit = state.config.payload_limit;
    let inference = Router::new()
        .route("/predict", post(predict::predict))
        .route("/predict/batch", post(predict::predict_batch))
        .route("/rerank", post(rerank::rerank))
        .route("/v1/rerank", post(rerank_compat::rerank))
        .route("/v2/rerank", post(rerank_compat::rerank))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(kserve::infer_versioned),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard_inference,
        ));
    let mut app = Router::new()
        .merge(inference)
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route("/info", get(probes::info))
        .route("/", get(assets::page))
        .route("/docs", get(assets::docs_page))
        .route("/openapi.json", get(assets::openapi))
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::model_metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready));
    if state.config.fault_route {
        app = app.route("/debug/fault", post(probes::inject_fault));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // Outermost last: the id first, then the log, the metrics and the span around the rest.
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client_address,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), span))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_metrics,
        ))
        .layer(middleware::from_fn(access_log))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(ErrorType::NotFound, format!("no route {}", uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorType::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}
