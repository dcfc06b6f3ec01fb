//! Publishing jobs: each one persistent, with publisher confirms awaited in a sliding window so
//! the broker's round trips overlap.

use std::collections::VecDeque;

use lapin::Connection;

use crate::amqp::{Pending, Publisher, RabbitMq};
use crate::error::BrokerError;

/// Publishes awaiting confirms at most; more gain little and hold memory.
const WINDOW: usize = 512;

pub struct Submitter {
    connection: Connection,
    publisher: Publisher,
    queue: String,
    pending: VecDeque<(String, Pending)>,
    confirmed: u64,
    failed: Vec<(String, BrokerError)>,
}

/// What became of the jobs sent.
#[derive(Debug)]
pub struct SubmitReport {
    pub confirmed: u64,
    /// Ids the broker did not confirm, with why.
    pub failed: Vec<(String, BrokerError)>,
}

impl Submitter {
    /// Connects and declares the topology.
    pub async fn open(broker: &RabbitMq) -> Result<Self, BrokerError> {
        let connection = broker.connect().await?;
        let publisher = broker.publisher(&connection).await?;
        Ok(Submitter {
            connection,
            publisher,
            queue: broker.config().queues.jobs.clone(),
            pending: VecDeque::new(),
            confirmed: 0,
            failed: Vec::new(),
        })
    }

    /// Sends one job; returns how many are confirmed so far. A failure to send at all (the
    /// connection is gone) ends the run.
    pub async fn send(&mut self, id: &str, body: &[u8]) -> Result<u64, BrokerError> {
        if self.pending.len() >= WINDOW {
            self.settle_one().await;
        }
        let pending = self
            .publisher
            .send(&self.queue, Some(id), body, None)
            .await?;
        self.pending.push_back((id.to_owned(), pending));
        Ok(self.confirmed)
    }

    async fn settle_one(&mut self) {
        if let Some((id, p)) = self.pending.pop_front() {
            match p.confirmed().await {
                Ok(()) => self.confirmed += 1,
                Err(e) => self.failed.push((id, e)),
            }
        }
    }

    /// Waits for every outstanding confirm, then closes the connection.
    pub async fn finish(mut self) -> SubmitReport {
        while !self.pending.is_empty() {
            self.settle_one().await;
        }
        let _ = self.connection.close(200, "submitted".into()).await;
        SubmitReport {
            confirmed: self.confirmed,
            failed: self.failed,
        }
    }
}
