//! The built-in pages and documents: nothing is fetched from a CDN.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{Html, Response};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DOCS_HTML: &str = include_str!("../assets/docs.html");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

pub async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub async fn docs_page() -> Html<&'static str> {
    Html(DOCS_HTML)
}

pub async fn openapi() -> Response {
    let mut resp = Response::new(Body::from(OPENAPI_JSON));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
