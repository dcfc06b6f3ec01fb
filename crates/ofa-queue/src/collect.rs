//! Taking results off the results queue in batches: the caller stores a batch (and syncs it to
//! disk) before acking it, so a crash loses nothing and at worst sees a result again.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::{Acker, Channel, Connection, Consumer};

use crate::amqp::RabbitMq;
use crate::error::BrokerError;

pub struct Collector {
    connection: Connection,
    _channel: Channel,
    consumer: Consumer,
    max_batch: usize,
    broker: RabbitMq,
}

/// Results received and not yet acked.
pub struct Batch {
    pub bodies: Vec<Vec<u8>>,
    last: Option<Acker>,
    broker: RabbitMq,
}

impl Batch {
    /// Acks the whole batch (and nothing after it: the consumer's channel is ours alone).
    pub async fn ack(self) -> Result<(), BrokerError> {
        let Some(last) = self.last else {
            return Ok(());
        };
        last.ack(BasicAckOptions { multiple: true })
            .await
            .map(drop)
            .map_err(|e| BrokerError::Lost(self.broker.config().address.scrub(e)))
    }
}

impl Collector {
    /// Connects, declares the topology and starts consuming the results queue with up to
    /// `max_batch` results unacked.
    pub async fn open(broker: &RabbitMq, max_batch: u16) -> Result<Self, BrokerError> {
        let connection = broker.connect().await?;
        let (channel, consumer) = broker
            .consume(&connection, &broker.config().queues.results, max_batch)
            .await?;
        Ok(Collector {
            connection,
            _channel: channel,
            consumer,
            max_batch: usize::from(max_batch.max(1)),
            broker: broker.clone(),
        })
    }

    /// The next results: whatever arrived, up to a batch, once at least one has; `None` when
    /// none arrived within `idle`.
    pub async fn next_batch(&mut self, idle: Duration) -> Result<Option<Batch>, BrokerError> {
        let lost = |e: lapin::Error| BrokerError::Lost(self.broker.config().address.scrub(e));
        let first = match tokio::time::timeout(idle, self.consumer.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err(BrokerError::Lost("consumer cancelled".into())),
            Ok(Some(Err(e))) => return Err(lost(e)),
            Ok(Some(Ok(d))) => d,
        };
        let mut bodies = vec![first.data];
        let mut last = first.acker;
        // Whatever is already buffered joins the batch: one fsync and one ack for many.
        while bodies.len() < self.max_batch {
            match tokio::time::timeout(Duration::from_millis(20), self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    bodies.push(d.data);
                    last = d.acker;
                }
                Ok(Some(Err(e))) => return Err(lost(e)),
                _ => break,
            }
        }
        Ok(Some(Batch {
            bodies,
            last: Some(last),
            broker: self.broker.clone(),
        }))
    }

    /// Closes the connection; results received and not acked go back to the queue.
    pub async fn close(self) {
        let _ = self.connection.close(200, "collected".into()).await;
    }
}
