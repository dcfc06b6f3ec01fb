//! RabbitMQ: the topology (durable quorum queues, the jobs queue dead-lettering past the
//! delivery limit), confirmed publishing, and the worker's [`Broker`] over one connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};

use crate::address::Address;
use crate::broker::{Broker, JobSource, Received, ResultSink, Settle};
use crate::error::BrokerError;

/// Header naming why a message went straight to the dead-letter queue.
pub const REASON_HEADER: &str = "x-ofa-dead-letter-reason";
/// How long the broker may take to confirm one publish.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct QueueNames {
    pub jobs: String,
    pub results: String,
    pub dead_letter: String,
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub address: Address,
    pub queues: QueueNames,
    /// Deliveries of one job before the broker dead-letters it (at least 1).
    pub delivery_limit: u32,
    /// Shown in the broker's connection list.
    pub connection_name: String,
}

/// The RabbitMQ side of every command: connect, declare, publish with confirms, consume.
#[derive(Debug, Clone)]
pub struct RabbitMq {
    config: AmqpConfig,
}

impl RabbitMq {
    pub fn new(config: AmqpConfig) -> Self {
        RabbitMq { config }
    }

    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    fn lost(&self, e: impl std::fmt::Display) -> BrokerError {
        BrokerError::Lost(self.config.address.scrub(e))
    }

    pub async fn connect(&self) -> Result<Connection, BrokerError> {
        let address = &self.config.address;
        let props = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.as_str().into());
        let fail = |reason: String| BrokerError::Connect {
            address: address.shown().to_owned(),
            reason,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(address.url(), props)).await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(fail(address.scrub(e))),
            Err(_) => Err(fail(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Declares the three durable quorum queues, idempotently: the jobs queue dead-letters a
    /// message to the dead-letter queue once it has been delivered `delivery_limit` times.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        self.declare_some(channel, true).await
    }

    /// Declares the results queue only (what `collect` needs, whatever the jobs queue's
    /// settings).
    pub async fn declare_results(&self, channel: &Channel) -> Result<(), BrokerError> {
        self.declare_some(channel, false).await
    }

    async fn declare_some(&self, channel: &Channel, all: bool) -> Result<(), BrokerError> {
        let q = &self.config.queues;
        let quorum = || {
            let mut t = FieldTable::default();
            t.insert("x-queue-type".into(), long("quorum"));
            t
        };
        let mut jobs = quorum();
        jobs.insert("x-dead-letter-exchange".into(), long(""));
        jobs.insert("x-dead-letter-routing-key".into(), long(&q.dead_letter));
        // The broker counts returns, not deliveries: a limit of L allows L + 1 deliveries.
        jobs.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.config.delivery_limit.max(1) - 1)),
        );
        // Not `x-dead-letter-strategy: at-least-once`: after a SIGKILL, RabbitMQ 3.10 left the
        // jobs queue without a leader for good when a client came back while it recovered, 3
        // times in 3 with it and 1 in 4 without (a broker bug; graceful restarts recover).
        // Dead-lettered messages are kept until the dead-letter queue has confirmed them.

        let queues = [
            (&q.results, quorum()),
            (&q.dead_letter, quorum()),
            (&q.jobs, jobs),
        ];
        for (name, args) in queues.into_iter().take(if all { 3 } else { 1 }) {
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await
                .map_err(|e| {
                    let reason = self.config.address.scrub(e);
                    match reason.split_once("PRECONDITION_FAILED - ") {
                        Some((_, detail)) => BrokerError::Mismatch {
                            queue: name.clone(),
                            // The broker counts returns: its limit is DELIVERY_LIMIT - 1.
                            detail: detail.replace(
                                "'x-delivery-limit'",
                                "'x-delivery-limit' (DELIVERY_LIMIT - 1)",
                            ),
                        },
                        None => BrokerError::Declare {
                            queue: name.clone(),
                            reason,
                        },
                    }
                })?;
        }
        Ok(())
    }

    /// A channel in confirm mode, after declaring the topology on it.
    pub async fn publisher(&self, connection: &Connection) -> Result<Publisher, BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.lost(e))?;
        self.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.lost(e))?;
        Ok(Publisher {
            channel,
            address: self.config.address.clone(),
        })
    }

    /// A consumer of `queue` on its own channel, with at most `prefetch` messages unacked.
    pub async fn consume(
        &self,
        connection: &Connection,
        queue: &str,
        prefetch: u16,
    ) -> Result<(Channel, Consumer), BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.lost(e))?;
        if queue == self.config.queues.results {
            // Results may be collected before any worker or submit declared anything.
            self.declare_results(&channel).await?;
        }
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| self.lost(e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.lost(e))?;
        Ok((channel, consumer))
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Publishes persistent messages on a confirm-mode channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    address: Address,
}

/// A publish the broker has taken but not yet confirmed.
pub struct Pending {
    confirm: lapin::PublisherConfirm,
    queue: String,
    address: Address,
}

impl Pending {
    /// Waits for the broker's confirm: stored (acked and routed) or an error.
    pub async fn confirmed(self) -> Result<(), BrokerError> {
        let fail = |reason: String| BrokerError::NotConfirmed {
            queue: self.queue.clone(),
            reason,
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(fail("no such queue (returned)".into())),
            Ok(Ok(Confirmation::Nack(_))) => Err(fail("the broker refused it".into())),
            Ok(Ok(Confirmation::NotRequested)) => Err(fail("channel not in confirm mode".into())),
            Ok(Err(e)) => Err(fail(self.address.scrub(e))),
            Err(_) => Err(fail(format!(
                "no confirm within {} s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Publisher {
    /// Sends one persistent JSON message to `queue`; await [`Pending::confirmed`] for the
    /// broker's word. `id` becomes the message id; `reason` (if any) a header.
    pub async fn send(
        &self,
        queue: &str,
        id: Option<&str>,
        body: &[u8],
        reason: Option<&str>,
    ) -> Result<Pending, BrokerError> {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(id) = id {
            props = props.with_message_id(id.into());
        }
        if let Some(reason) = reason {
            let mut headers = FieldTable::default();
            headers.insert(REASON_HEADER.into(), long(reason));
            props = props.with_headers(headers);
        }
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| BrokerError::NotConfirmed {
                queue: queue.to_owned(),
                reason: self.address.scrub(e),
            })?;
        Ok(Pending {
            confirm,
            queue: queue.to_owned(),
            address: self.address.clone(),
        })
    }

    pub async fn publish(
        &self,
        queue: &str,
        id: Option<&str>,
        body: &[u8],
        reason: Option<&str>,
    ) -> Result<(), BrokerError> {
        self.send(queue, id, body, reason).await?.confirmed().await
    }
}

/// Deliveries the broker has handed out for a message, from the quorum queue's count of
/// earlier returns.
fn delivery_number(props: &BasicProperties) -> u32 {
    let returned = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(n.into()),
            AMQPValue::ShortInt(n) => Some(n.into()),
            AMQPValue::LongUInt(n) => Some(n.into()),
            _ => None,
        })
        .unwrap_or(0);
    u32::try_from(returned)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// The worker's session: jobs consumed on one channel, results and dead letters published on
/// another in confirm mode, both on one connection.
pub struct AmqpSource {
    connection: Arc<Connection>,
    channel: Channel,
    consumer: Consumer,
    publisher: Publisher,
    dead_letter: String,
    address: Address,
}

pub struct AmqpSettle {
    acker: lapin::Acker,
    publisher: Publisher,
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
            .consume(&connection, &self.config.queues.jobs, prefetch)
            .await?;
        let sink = AmqpSink {
            _connection: connection.clone(),
            publisher: publisher.clone(),
            results: self.config.queues.results.clone(),
            jobs: self.config.queues.jobs.clone(),
            dead_letter: self.config.queues.dead_letter.clone(),
        };
        let source = AmqpSource {
            connection,
            channel,
            consumer,
            publisher,
            dead_letter: self.config.queues.dead_letter.clone(),
            address: self.config.address.clone(),
        };
        Ok((source, sink))
    }

    fn describe(&self) -> String {
        self.config.address.shown().to_owned()
    }
}
