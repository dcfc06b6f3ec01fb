//! The HTTP service: routes, request parsing and error mapping, consumers and their limits, request logs,
//! connection limits and the graceful drain. It only translates HTTP to engine calls.

pub mod access;
mod assets;
mod candidates;
pub mod config;
pub mod conn;
pub mod error;
pub mod http_metrics;
pub mod images;
pub mod json_shape;
mod kserve;
pub mod kserve_tensor;
mod middleware;
mod openapi;
pub mod parse;
mod predict;
mod probes;
pub mod rerank;
mod rerank_compat;
pub mod router;
mod serve;
pub mod state;
pub mod timings;
pub mod trace;

pub use config::ServerConfig;
pub use ofa_api::signal::shutdown_signal;
pub use router::router;
pub use serve::serve;
pub use state::AppState;
