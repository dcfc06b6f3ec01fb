//! How a worker takes, runs and settles jobs: the settings the binary builds from its flags.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages received and not yet settled, at most (the broker's prefetch).
    pub prefetch: u16,
    /// Jobs handed to the engine together (the model's batch size is a good value).
    pub chunk: usize,
    /// How long to wait for more messages to fill a chunk once one has arrived.
    pub gather: Duration,
    /// Deliveries of a job; a transient failure on the last one is dead-lettered by the worker
    /// (the broker's own limit is the backstop for a worker that dies).
    pub delivery_limit: u32,
    /// Wait before handing back a transiently failed job, times its delivery number.
    pub retry_delay: Duration,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// After a stop: how long to finish what is held before closing anyway.
    pub shutdown_timeout: Duration,
    /// Longest job message; a longer one is dead-lettered unread (`MAX_JOB_BYTES`).
    pub max_job_bytes: usize,
    /// How often to read the queues' depths for the metrics.
    pub depth_interval: Duration,
    pub model_id: String,
    pub model_revision: String,
}
