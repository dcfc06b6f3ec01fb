//! Who is on the other end: the peer, or the address the trusted proxies' forwarded header
//! names. Kept in the request's extensions (the guard and the log read it) and the response's.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::access::ClientIp;
use crate::AppState;

pub async fn client_address(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| state.config.access.client_ip(*peer, req.headers()));
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let mut resp = next.run(req).await;
    if let Some(ip) = ip {
        resp.extensions_mut().insert(ClientIp(ip));
    }
    resp
}
