//! The worker's [`Broker`] on RabbitMQ: one connection, jobs consumed on one channel, results
//! and dead letters published on another in confirm mode.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};

use crate::address::Address;
use crate::amqp::{Publisher, RabbitMq, DELIVERIES_HEADER};
use crate::broker::{Broker, JobSource, Received, ResultSink, Settle};
use crate::error::BrokerError;

/// Deliveries of a job, this one included: the quorum queue's count of earlier returns, plus
/// what the job carried when a stopping worker released it ([`DELIVERIES_HEADER`]).
fn delivery_number(props: &BasicProperties) -> u32 {
    let header = |name: &str| {
        props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name).cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => Some(n),
                AMQPValue::LongInt(n) => Some(n.into()),
                AMQPValue::ShortInt(n) => Some(n.into()),
                AMQPValue::LongUInt(n) => Some(n.into()),
                _ => None,
            })
            .map_or(0, |n| {
                u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX })
            })
    };
    header("x-delivery-count")
        .saturating_add(header(DELIVERIES_HEADER))
        .saturating_add(1)
}

/// The worker's session: jobs consumed on one channel, results and dead letters published on
/// another in confirm mode, both on one connection.
pub struct AmqpSource {
    connection: Arc<Connection>,
    channel: Channel,
    consumer: Consumer,
    publisher: Publisher,
    jobs: String,
    dead_letter: String,
    address: Address,
}

pub struct AmqpSettle {
    acker: lapin::Acker,
    publisher: Publisher,
    /// The job's message id, kept when it is released.
    message_id: Option<String>,
    jobs: String,
    dead_letter: String,
    address: Address,
}

#[derive(Clone)]
pub struct AmqpSink {
    /// Held so the connection outlives the source while chunks still publish.
    _connection: Arc<Connection>,
    publisher: Publisher,
    results: String,
    jobs: String,
    dead_letter: String,
}

impl Settle for AmqpSettle {
    async fn ack(self) -> Result<(), BrokerError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| BrokerError::Lost(self.address.scrub(e)))
    }

    async fn retry(self) -> Result<(), BrokerError> {
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map(drop)
            .map_err(|e| BrokerError::Lost(self.address.scrub(e)))
    }

    async fn release(self, body: Vec<u8>, spent: u32) -> Result<(), BrokerError> {
        // Republished, confirmed, then acked: a crash in between leaves a duplicate (answered
        // twice, dropped by id when collected), never a loss.
        self.publisher
            .requeue(&self.jobs, self.message_id.as_deref(), &body, spent)
            .await?;
        self.ack().await
    }

    async fn dead_letter(self, body: Vec<u8>, reason: &str) -> Result<(), BrokerError> {
        self.publisher
            .publish(&self.dead_letter, None, &body, Some(reason))
            .await?;
        self.ack().await
    }
}

impl JobSource for AmqpSource {
    type Settle = AmqpSettle;

    async fn next(&mut self) -> Option<Result<Received<AmqpSettle>, BrokerError>> {
        match self.consumer.next().await? {
            Ok(d) => Some(Ok(Received {
                delivery: delivery_number(&d.properties),
                body: d.data,
                settle: AmqpSettle {
                    acker: d.acker,
                    publisher: self.publisher.clone(),
                    message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
                    jobs: self.jobs.clone(),
                    dead_letter: self.dead_letter.clone(),
                    address: self.address.clone(),
                },
            })),
            Err(e) => Some(Err(BrokerError::Lost(self.address.scrub(e)))),
        }
    }

    async fn stop(&mut self) {
        let tag = self.consumer.tag();
        // A failure means the channel is gone, which stops consuming too.
        let _ = self
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await;
    }

    async fn close(self) {
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}

impl ResultSink for AmqpSink {
    async fn publish(&self, id: &str, body: Vec<u8>) -> Result<(), BrokerError> {
        self.publisher
            .publish(&self.results, Some(id), &body, None)
            .await
    }

    async fn depths(&self) -> Result<(u64, u64), BrokerError> {
        let mut out = [0u64; 2];
        for (slot, queue) in out.iter_mut().zip([&self.jobs, &self.dead_letter]) {
            let q = self
                .publisher
                .channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| BrokerError::Lost(self.publisher.address.scrub(e)))?;
            *slot = u64::from(q.message_count());
        }
        Ok((out[0], out[1]))
    }
}

impl Broker for RabbitMq {
    type Source = AmqpSource;
    type Sink = AmqpSink;

    async fn open(&self, prefetch: u16) -> Result<(AmqpSource, AmqpSink), BrokerError> {
        let connection = Arc::new(self.connect().await?);
        let publisher = self.publisher(&connection).await?;
        let (channel, consumer) = self
            .consume(&connection, &self.config().queues.jobs, prefetch)
            .await?;
        let sink = AmqpSink {
            _connection: connection.clone(),
            publisher: publisher.clone(),
            results: self.config().queues.results.clone(),
            jobs: self.config().queues.jobs.clone(),
            dead_letter: self.config().queues.dead_letter.clone(),
        };
        let source = AmqpSource {
            connection,
            channel,
            consumer,
            publisher,
            jobs: self.config().queues.jobs.clone(),
            dead_letter: self.config().queues.dead_letter.clone(),
            address: self.config().address.clone(),
        };
        Ok((source, sink))
    }

    fn describe(&self) -> String {
        self.config().address.shown().to_owned()
    }
}
