//! Rate limits and quotas per client, kept in this process or shared by every replica through
//! Redis. When Redis is away the process keeps serving under its own counts and says so; it
//! never refuses a request because the shared store is unreachable.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::local::LocalLimits;
use crate::redis_store::RedisLimits;
use crate::{AccessError, Quota, Rate};

/// The limits that apply to one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub rate: Option<Rate>,
    pub quota: Option<Quota>,
}

/// A limit's standing after a request: for the `X-RateLimit-*` and quota headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Until the rate's bucket is full again, or the quota's period ends.
    pub reset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate,
    Quota,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub refused: Option<Refusal>,
    pub rate: Option<Window>,
    pub quota: Option<Window>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.refused.is_none()
    }

    /// How long a refused client should wait.
    pub fn retry_after(&self) -> Duration {
        match self.refused {
            Some(Refusal::Rate) => self.rate.map_or(Duration::ZERO, |w| w.reset),
            Some(Refusal::Quota) => self.quota.map_or(Duration::ZERO, |w| w.reset),
            None => Duration::ZERO,
        }
    }
}

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

/// A bucket's standing from its tokens after the request.
pub(crate) fn rate_window(rate: Rate, tokens: f64, allowed: bool) -> Window {
    let cap = f64::from(rate.requests);
    let refill = cap / rate.per.as_secs_f64();
    let wait = if allowed {
        (cap - tokens) / refill
    } else {
        (1.0 - tokens) / refill
    };
    Window {
        limit: u64::from(rate.requests),
        remaining: tokens.floor().max(0.0) as u64,
        reset: Duration::from_secs_f64(wait.max(0.0)),
    }
}

pub(crate) fn quota_window(quota: Quota, used: u64, left: Duration) -> Window {
    Window {
        limit: quota.requests,
        remaining: quota.requests.saturating_sub(used),
        reset: left,
    }
}

pub(crate) fn refusal(rate_ok: bool, quota_ok: bool) -> Option<Refusal> {
    match (rate_ok, quota_ok) {
        (_, false) => Some(Refusal::Quota),
        (false, true) => Some(Refusal::Rate),
        (true, true) => None,
    }
}
