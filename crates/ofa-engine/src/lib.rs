//! The inference engine: admission (bounded queue, circuit breaker), a dedicated inference
//! thread doing continuous batching, deadlines and cancellation, and the metrics it all
//! exports. Knows nothing of HTTP.

pub mod breaker;
pub mod config;
pub mod engine;
pub mod error;
pub mod metrics;

pub use breaker::{Breaker, BreakerState};
pub use config::EngineConfig;
pub use engine::{Engine, Outcome};
pub use error::EngineError;
pub use metrics::Metrics;
