//! The broker as the worker sees it: a source of jobs that are settled one by one (done, retry
//! later, or dead-letter now) and a sink for results that returns once the broker holds them.
//! RabbitMQ implements it in `amqp`; another broker would implement these three traits.

use std::future::Future;

use crate::error::BrokerError;

/// One message from the jobs queue, held until it is settled.
pub struct Received<S> {
    pub body: Vec<u8>,
    /// How many times the broker has handed this message out, this time included.
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
    /// Not a job at all: to the dead-letter queue now, with the reason attached, then done.
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
