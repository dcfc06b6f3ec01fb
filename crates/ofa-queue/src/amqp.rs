//! RabbitMQ: the topology (durable quorum queues, the jobs queue dead-lettering past the
//! delivery limit), connecting, consuming and confirmed publishing. The worker's session over
//! these is in `session`.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};

use crate::address::Address;
use crate::error::BrokerError;

/// Header naming why a message went straight to the dead-letter queue.
pub const REASON_HEADER: &str = "x-ofa-dead-letter-reason";
/// Header carrying the deliveries a job had spent when a stopping worker put it back.
pub const DELIVERIES_HEADER: &str = "x-ofa-deliveries";
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
    pub(crate) channel: Channel,
    pub(crate) address: Address,
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
        let mut headers = FieldTable::default();
        if let Some(reason) = reason {
            headers.insert(REASON_HEADER.into(), long(reason));
        }
        self.send_with(queue, id, body, headers).await
    }

    /// A job back on `queue` as it was, with the deliveries it has spent in a header; returns
    /// once the broker has confirmed it.
    pub async fn requeue(
        &self,
        queue: &str,
        id: Option<&str>,
        body: &[u8],
        spent: u32,
    ) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERIES_HEADER.into(), AMQPValue::LongUInt(spent));
        self.send_with(queue, id, body, headers)
            .await?
            .confirmed()
            .await
    }

    async fn send_with(
        &self,
        queue: &str,
        id: Option<&str>,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<Pending, BrokerError> {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        // The property is an AMQP short string: an id that is not a valid job id (too long,
        // control characters) travels only in the body.
        if let Some(id) = id.filter(|id| ofa_jobs::job::check_id(id).is_ok()) {
            props = props.with_message_id(id.into());
        }
        if !headers.inner().is_empty() {
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
