//! What a limit check decides, and how a client's standing is worked out from its counts: the
//! one vocabulary the limiter (`limits`) and its two stores (`local`, `redis_store`) share,
//! kept apart so that no store has to import the limiter that uses it.

use std::time::Duration;

use crate::{Quota, Rate};

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
