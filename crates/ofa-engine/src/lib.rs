//! The inference engine every front end (HTTP, KServe, queue workers) drives the same way:
//! admission (queue bound, deadline estimate, circuit breaker, drain), preprocessing on a
//! bounded pool, a dedicated inference thread doing continuous batching, and the engine's
//! metrics. It knows nothing of HTTP, routes or status codes; the model sits behind the small
//! [`Backend`] trait.

mod admission;
pub mod backend;
pub mod breaker;
pub mod config;
pub mod drain;
pub mod engine;
pub mod error;
mod inference_thread;
mod lane;
pub mod metrics;
#[cfg(feature = "model")]
mod ofa_backend;
pub mod prom;

pub use backend::{Backend, Pair};
pub use breaker::{Breaker, BreakerEvent, BreakerState};
pub use config::EngineConfig;
pub use drain::Drain;
pub use engine::{Engine, Refused};
pub use error::EngineError;
pub use inference_thread::Scored;
pub use metrics::EngineMetrics;
