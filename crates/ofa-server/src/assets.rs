//! The built-in pages and documents: nothing is fetched from a CDN.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{Html, Response};

use crate::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DOCS_HTML: &str = include_str!("../assets/docs.html");

pub async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub async fn docs_page() -> Html<&'static str> {
    Html(DOCS_HTML)
}

pub async fn openapi(State(state): State<AppState>) -> Response {
    let doc = crate::openapi::document(&state);
    let mut resp = Response::new(Body::from(doc.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
