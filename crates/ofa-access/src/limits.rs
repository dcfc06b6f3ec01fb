//! Rate limits and quotas per client, kept in this process or shared by every replica through
//! Redis. When Redis is away the process keeps serving under its own counts and says so; it
//! never refuses a request because the shared store is unreachable.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::decision::{Decision, Policy};
use crate::local::LocalLimits;
use crate::redis_store::RedisLimits;
use crate::AccessError;

/// The shared store went away or came back: worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChange {
    Down(String),
    Up,
}

/// After a failure, Redis is not asked again for this long (requests use local counts).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub struct Limits {
    local: LocalLimits,
    shared: Option<RedisLimits>,
    /// 0: not asked yet, 1: answered last time, 2: failed last time.
    shared_state: AtomicU8,
    retry_at: Mutex<Option<Instant>>,
}

impl Limits {
    /// Per process; state for at most `max_clients` clients.
    pub fn in_memory(max_clients: usize) -> Self {
        Self {
            local: LocalLimits::new(max_clients),
            shared: None,
            shared_state: AtomicU8::new(0),
            retry_at: Mutex::new(None),
        }
    }

    /// Shared through the Redis at `url` (`redis://[:password@]host:port[/db]`), keys under
    /// `prefix`; local counts stand in while it is unreachable. Connects on first use.
    pub fn redis(url: &str, prefix: &str, max_clients: usize) -> Result<Self, AccessError> {
        let shared = RedisLimits::new(url, prefix)?;
        Ok(Self {
            shared: Some(shared),
            ..Self::in_memory(max_clients)
        })
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Whether the shared store answered last time; `None` without one.
    pub fn shared_up(&self) -> Option<bool> {
        self.shared
            .as_ref()
            .map(|_| self.shared_state.load(Ordering::Relaxed) == 1)
    }

    /// Counts `cost` units (pairs) of `client` against `policy`, all or none: a request that
    /// does not fit takes nothing. A cost of 0 only looks, and is refused when not even one
    /// unit is left.
    pub async fn check(
        &self,
        client: &str,
        policy: &Policy,
        cost: u64,
    ) -> (Decision, Option<BackendChange>) {
        let now = SystemTime::now();
        if policy.rate.is_none() && policy.quota.is_none() {
            let d = Decision {
                refused: None,
                rate: None,
                quota: None,
            };
            return (d, None);
        }
        let Some(shared) = &self.shared else {
            return (self.local.check(client, policy, cost, now), None);
        };
        let waiting = self
            .retry_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t);
        if !waiting {
            match shared.check(client, policy, cost, now).await {
                Ok(d) => {
                    *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    let before = self.shared_state.swap(1, Ordering::Relaxed);
                    return (d, (before == 2).then_some(BackendChange::Up));
                }
                Err(e) => {
                    *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now() + RETRY_AFTER_FAILURE);
                    let before = self.shared_state.swap(2, Ordering::Relaxed);
                    let change = (before != 2).then(|| BackendChange::Down(e.to_string()));
                    return (self.local.check(client, policy, cost, now), change);
                }
            }
        }
        (self.local.check(client, policy, cost, now), None)
    }
}
