//! The broker as the worker sees it: a source of jobs that are settled one by one (done, retry
//! later, or dead-letter now) and a sink for results that returns once the broker holds them.
//! RabbitMQ implements it in `amqp`; another broker would implement these three traits.

use std::future::Future;

use crate::error::BrokerError;

/// One message from the jobs queue, held until it is settled.
pub struct Received<S> {
    pub body: Vec<u8>,
    /// Deliveries of this job, this one included: the broker's count, plus what the job
    /// carried when it was released by a stopping worker.
    pub delivery: u32,
    pub settle: S,
}

/// How a received message ends. Dropping it unsettled leaves it to the broker, which hands it
/// out again once the connection that took it is gone.
pub trait Settle: Send + 'static {
    /// Done (its result is confirmed, or it will never succeed): the broker forgets it.
    fn ack(self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Hand it out again; each delivery counts toward the delivery limit, past which the broker
    /// dead-letters it.
    fn retry(self) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Hand it back without spending a delivery, because the worker is stopping and the job
    /// did not fail: it goes back to the queue with the `spent` deliveries it had, which count
    /// toward the limit on the next delivery. (A plain return counts as a delivery on
    /// RabbitMQ before 4.3, which dead-lettered jobs at their last delivery on every scale-down.)
    fn release(
        self,
        body: Vec<u8>,
        spent: u32,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// To the dead-letter queue now, with the reason attached, then done: not a job at all, or
    /// a job that failed on its last allowed delivery.
    fn dead_letter(
        self,
        body: Vec<u8>,
        reason: &str,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

pub trait JobSource: Send + 'static {
    type Settle: Settle;
    /// The next message; `None` once consuming has stopped; an error when the connection is
    /// lost (everything unsettled then goes back to the queue).
    fn next(
        &mut self,
    ) -> impl Future<Output = Option<Result<Received<Self::Settle>, BrokerError>>> + Send;
    /// Stop taking messages; those already received can still be settled.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;
    /// Closes the session cleanly; whatever is still unsettled goes back to the queue.
    fn close(self) -> impl Future<Output = ()> + Send;
}

pub trait ResultSink: Clone + Send + Sync + 'static {
    /// Returns once the broker has confirmed it stored the result.
    fn publish(
        &self,
        id: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
    /// Messages ready in the jobs queue and in the dead-letter queue, for the metrics.
    fn depths(&self) -> impl Future<Output = Result<(u64, u64), BrokerError>> + Send;
}

/// Opens sessions: one connection with its job source and result sink.
pub trait Broker: Send + Sync + 'static {
    type Source: JobSource;
    type Sink: ResultSink;
    /// Connects, declares what it needs and starts consuming, with at most `prefetch`
    /// messages received and not yet settled.
    fn open(
        &self,
        prefetch: u16,
    ) -> impl Future<Output = Result<(Self::Source, Self::Sink), BrokerError>> + Send;
    /// Where it connects, as it may be logged.
    fn describe(&self) -> String;
}
