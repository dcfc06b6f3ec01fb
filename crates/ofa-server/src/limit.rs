//! Per-client token-bucket rate limiting (`RATE_LIMIT=100/minute`, as slowapi users write it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `N/second`, `N/minute`, `N/hour` (also `N/s`, `N/m`, `N/h`, `N per minute`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace(" per ", "/");
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} is not N/unit"))?;
        let requests: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: {n:?} is not a count"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            u => {
                return Err(format!(
                    "rate {s:?}: unknown unit {u:?} (second, minute, hour)"
                ))
            }
        };
        if requests == 0 {
            return Err("rate must allow at least one request".into());
        }
        Ok(Rate { requests, per })
    }
}

/// What a limited client is told.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, client: &str) -> Decision {
        let cap = f64::from(self.rate.requests);
        let refill = cap / self.rate.per.as_secs_f64();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Forget clients whose buckets are full again; bounds memory under address churn.
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * refill < cap);
        }
        let (tokens, at) = buckets.entry(client.to_owned()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * refill).min(cap);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= 1.0;
        }
        let wait = if allowed {
            (cap - *tokens) / refill
        } else {
            (1.0 - *tokens) / refill
        };
        Decision {
            allowed,
            limit: self.rate.requests,
            remaining: tokens.floor().max(0.0) as u32,
            reset: Duration::from_secs_f64(wait.max(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(
            "100/minute".parse::<Rate>().unwrap(),
            Rate {
                requests: 100,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(
            "5 per second".parse::<Rate>().unwrap().per,
            Duration::from_secs(1)
        );
        assert!("x/minute".parse::<Rate>().is_err());
        assert!("5/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn refuses_past_the_burst() {
        let l = Limiter::new(Rate {
            requests: 2,
            per: Duration::from_secs(60),
        });
        assert!(l.check("a").allowed);
        assert!(l.check("a").allowed);
        let d = l.check("a");
        assert!(!d.allowed);
        assert!(d.reset > Duration::from_secs(20));
        assert!(l.check("b").allowed, "clients are independent");
    }
}
