//! Bulk jobs over a message broker. The worker takes jobs from a queue, runs them through the
//! same engine as the HTTP service (via `ofa-jobs`), publishes each result with a publisher
//! confirm and only then acks the job. `submit` and `collect` put a JSONL file of jobs on the
//! queue and take results off it. RabbitMQ is the broker (`amqp`), behind the small interface
//! in `broker`.

pub mod address;
pub mod amqp;
pub mod broker;
mod chunk;
pub mod error;
pub mod session;

pub use address::Address;
pub use amqp::{AmqpConfig, QueueNames, RabbitMq};
pub use broker::{Broker, JobSource, Received, ResultSink, Settle};
pub use error::BrokerError;
pub mod health;
pub mod metrics;
mod worker_config;
pub mod worker_loop;

pub use metrics::{Outcome, WorkerMetrics};
pub use worker_config::WorkerConfig;
pub use worker_loop::Worker;
pub mod collect;
pub mod submit;

pub use collect::{Batch, Collector};
pub use submit::{SubmitReport, Submitter};
