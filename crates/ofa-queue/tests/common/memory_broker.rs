//! A broker in memory that keeps the rules the worker relies on, as a RabbitMQ quorum queue
//! applies them: each hand-out counts as a delivery; a message handed back on its last allowed
//! delivery is dead-lettered; whatever a lost or closed connection held goes back to the queue.
//! Faults on demand: refused connections and a connection lost mid-stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ofa_queue::{Broker, BrokerError, JobSource, Received, ResultSink, Settle};

#[derive(Default)]
pub struct State {
    /// Messages waiting, with the deliveries they have had.
    pub ready: VecDeque<(Vec<u8>, u32)>,
    /// Handed out and not settled, by tag, with the session that holds them.
    pub held: HashMap<u64, (Vec<u8>, u32, u64)>,
    pub dead: Vec<(Vec<u8>, String)>,
    /// Published results, by job id, in order.
    pub results: Vec<(String, Vec<u8>)>,
    pub acked: usize,
    /// Put back by a stopping worker without spending a delivery.
    pub released: usize,
    pub delivery_limit: u32,
    /// Opens refused before one succeeds.
    pub refuse_opens: u32,
    pub opens: u32,
    /// The open session loses its connection after handing out this many more messages.
    pub lose_after: Option<usize>,
    next_tag: u64,
    session: u64,
}

#[derive(Clone, Default)]
pub struct MemoryBroker(pub Arc<Mutex<State>>);

impl MemoryBroker {
    pub fn new(delivery_limit: u32, jobs: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let b = MemoryBroker::default();
        {
            let mut s = b.state();
            s.delivery_limit = delivery_limit;
            s.ready.extend(jobs.into_iter().map(|j| (j, 0)));
        }
        b
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Waits until `done` holds of the state, or panics after `within`.
    pub async fn until(&self, within: Duration, done: impl Fn(&State) -> bool) {
        let end = tokio::time::Instant::now() + within;
        while !done(&self.state()) {
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting on the broker"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl State {
    /// A held message back to the queue, or dead-lettered when it had its last delivery.
    fn hand_back(&mut self, tag: u64, counts: bool) {
        if let Some((body, delivery, _)) = self.held.remove(&tag) {
            if counts && delivery >= self.delivery_limit {
                self.dead.push((body, "delivery_limit".into()));
            } else {
                self.ready.push_front((body, delivery));
            }
        }
    }

    fn end_session(&mut self, session: u64) {
        let tags: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (_, _, s))| *s == session)
            .map(|(t, _)| *t)
            .collect();
        for t in tags {
            // A closed connection's messages return; each return counts, as it does on
            // RabbitMQ before 4.3.
            self.hand_back(t, true);
        }
    }
}

pub struct MemorySettle {
    broker: MemoryBroker,
    tag: u64,
}

impl Settle for MemorySettle {
    async fn ack(self) -> Result<(), BrokerError> {
        let mut s = self.broker.state();
        if s.held.remove(&self.tag).is_some() {
            s.acked += 1;
        }
        Ok(())
    }

    async fn retry(self) -> Result<(), BrokerError> {
        self.broker.state().hand_back(self.tag, true);
        Ok(())
    }

    async fn release(self, body: Vec<u8>, spent: u32) -> Result<(), BrokerError> {
        // As republishing does: a new message at the back, carrying its spent deliveries.
        let mut s = self.broker.state();
        if s.held.remove(&self.tag).is_some() {
            s.released += 1;
            s.ready.push_back((body, spent));
        }
        Ok(())
    }

    async fn dead_letter(self, body: Vec<u8>, reason: &str) -> Result<(), BrokerError> {
        let mut s = self.broker.state();
        s.held.remove(&self.tag);
        s.dead.push((body, reason.to_owned()));
        Ok(())
    }
}

pub struct MemorySource {
    broker: MemoryBroker,
    session: u64,
    prefetch: usize,
    stopped: bool,
}

impl JobSource for MemorySource {
    type Settle = MemorySettle;

    async fn next(&mut self) -> Option<Result<Received<MemorySettle>, BrokerError>> {
        loop {
            if self.stopped {
                return None;
            }
            {
                let mut s = self.broker.state();
                if s.session != self.session {
                    return Some(Err(BrokerError::Lost("session replaced".into())));
                }
                if s.lose_after == Some(0) {
                    s.lose_after = None;
                    let session = self.session;
                    s.end_session(session);
                    s.session += 1;
                    return Some(Err(BrokerError::Lost(
                        "connection reset by the test".into(),
                    )));
                }
                let in_hand = s.held.values().filter(|h| h.2 == self.session).count();
                if in_hand < self.prefetch {
                    if let Some((body, delivery)) = s.ready.pop_front() {
                        s.next_tag += 1;
                        let tag = s.next_tag;
                        let delivery = delivery + 1;
                        s.held.insert(tag, (body.clone(), delivery, self.session));
                        if let Some(n) = s.lose_after.as_mut() {
                            *n -= 1;
                        }
                        return Some(Ok(Received {
                            body,
                            delivery,
                            settle: MemorySettle {
                                broker: self.broker.clone(),
                                tag,
                            },
                        }));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&mut self) {
        self.stopped = true;
    }

    async fn close(self) {
        self.broker.state().end_session(self.session);
    }
}

impl ResultSink for MemoryBroker {
    async fn publish(&self, id: &str, body: Vec<u8>) -> Result<(), BrokerError> {
        self.state().results.push((id.to_owned(), body));
        Ok(())
    }

    async fn depths(&self) -> Result<(u64, u64), BrokerError> {
        let s = self.state();
        Ok((s.ready.len() as u64, s.dead.len() as u64))
    }
}

impl Broker for MemoryBroker {
    type Source = MemorySource;
    type Sink = MemoryBroker;

    async fn open(&self, prefetch: u16) -> Result<(MemorySource, MemoryBroker), BrokerError> {
        let mut s = self.state();
        s.opens += 1;
        if s.refuse_opens > 0 {
            s.refuse_opens -= 1;
            return Err(BrokerError::Connect {
                address: "memory".into(),
                reason: "refused by the test".into(),
            });
        }
        s.session += 1;
        Ok((
            MemorySource {
                broker: self.clone(),
                session: s.session,
                prefetch: usize::from(prefetch.max(1)),
                stopped: false,
            },
            self.clone(),
        ))
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
