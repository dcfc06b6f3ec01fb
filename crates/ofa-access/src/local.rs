//! Limits counted in this process: a token bucket and a quota counter per client, for at most
//! a fixed number of clients (a flood of new addresses evicts the idlest, never grows memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::decision::{quota_window, rate_window, refusal, Decision, Policy};
use crate::rate::window;

struct Entry {
    tokens: f64,
    at: Instant,
    period: String,
    used: u64,
}

pub(crate) struct LocalLimits {
    max_clients: usize,
    clients: Mutex<HashMap<String, Entry>>,
}

impl LocalLimits {
    pub fn new(max_clients: usize) -> Self {
        Self {
            max_clients: max_clients.max(1),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `cost` units (0: only looks, and refuses when not even one is left).
    pub fn check(
        &self,
        client: &str,
        policy: &Policy,
        cost: u64,
        now_wall: SystemTime,
    ) -> Decision {
        let need = cost.max(1);
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(client) && clients.len() >= self.max_clients {
            evict(&mut clients, self.max_clients);
        }
        let e = clients.entry(client.to_owned()).or_insert(Entry {
            tokens: f64::INFINITY,
            at: now,
            period: String::new(),
            used: 0,
        });
        let mut rate_ok = true;
        if let Some(rate) = policy.rate {
            let cap = f64::from(rate.requests);
            let refill = cap / rate.per.as_secs_f64();
            e.tokens = (e.tokens + now.duration_since(e.at).as_secs_f64() * refill).min(cap);
            e.at = now;
            rate_ok = e.tokens >= need as f64;
        }
        let mut quota_ok = true;
        let mut left = std::time::Duration::ZERO;
        if let Some(q) = policy.quota {
            let (period, l) = window(q.per, now_wall);
            left = l;
            if e.period != period {
                e.period = period;
                e.used = 0;
            }
            quota_ok = e.used.saturating_add(need) <= q.requests;
        }
        let refused = refusal(rate_ok, quota_ok);
        if refused.is_none() {
            e.tokens -= cost as f64;
            e.used = e.used.saturating_add(cost);
        }
        Decision {
            refused,
            rate: policy
                .rate
                .map(|r| rate_window(r, e.tokens, refused.is_none())),
            quota: policy.quota.map(|q| quota_window(q, e.used, left)),
        }
    }
}

/// Drops the tenth of clients with the fullest buckets and no quota use: those who lose the
/// least by being forgotten.
fn evict(clients: &mut HashMap<String, Entry>, max: usize) {
    let mut order: Vec<(String, bool, f64)> = clients
        .iter()
        .map(|(k, e)| (k.clone(), e.used > 0 && !e.period.is_empty(), e.tokens))
        .collect();
    order.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)));
    for (k, _, _) in order.into_iter().take((max / 10).max(1)) {
        clients.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Quota, Rate, Refusal};
    use std::time::Duration;

    #[test]
    fn rate_then_quota_refuse_with_their_own_reasons() {
        let l = LocalLimits::new(10);
        let p = Policy {
            rate: Some(Rate {
                requests: 2,
                per: Duration::from_secs(60),
            }),
            quota: None,
        };
        let now = SystemTime::now();
        assert!(l.check("a", &p, 1, now).allowed());
        assert!(l.check("a", &p, 1, now).allowed());
        let d = l.check("a", &p, 1, now);
        assert_eq!(d.refused, Some(Refusal::Rate));
        assert!(d.retry_after() > Duration::from_secs(20));
        assert!(
            l.check("b", &p, 1, now).allowed(),
            "clients are independent"
        );

        let q = Policy {
            rate: None,
            quota: Some(Quota {
                requests: 1,
                per: crate::Period::Day,
            }),
        };
        assert!(l.check("c", &q, 1, now).allowed());
        let d = l.check("c", &q, 1, now);
        assert_eq!(d.refused, Some(Refusal::Quota));
        assert_eq!(d.quota.unwrap().remaining, 0);
        // The next day starts afresh.
        assert!(l
            .check("c", &q, 1, now + Duration::from_secs(86_400))
            .allowed());
    }

    #[test]
    fn a_request_costs_its_pairs_all_or_nothing() {
        let l = LocalLimits::new(10);
        let q = Policy {
            rate: None,
            quota: Some(Quota {
                requests: 3,
                per: crate::Period::Day,
            }),
        };
        let now = SystemTime::now();
        let d = l.check("a", &q, 32, now);
        assert_eq!(d.refused, Some(Refusal::Quota), "32 pairs against 3");
        assert_eq!(d.quota.unwrap().remaining, 3, "nothing taken");
        assert!(l.check("a", &q, 0, now).allowed(), "a look costs nothing");
        assert_eq!(l.check("a", &q, 2, now).quota.unwrap().remaining, 1);
        assert_eq!(l.check("a", &q, 2, now).refused, Some(Refusal::Quota));
        assert!(l.check("a", &q, 1, now).allowed());
        assert_eq!(l.check("a", &q, 0, now).refused, Some(Refusal::Quota));
        let r = Policy {
            rate: Some(Rate {
                requests: 10,
                per: Duration::from_secs(60),
            }),
            quota: None,
        };
        assert!(l.check("b", &r, 8, now).allowed());
        let d = l.check("b", &r, 8, now);
        assert_eq!(d.refused, Some(Refusal::Rate));
        assert_eq!(d.rate.unwrap().remaining, 2);
    }

    #[test]
    fn a_flood_of_clients_stays_bounded() {
        let l = LocalLimits::new(100);
        let p = Policy {
            rate: Some(Rate {
                requests: 5,
                per: Duration::from_secs(1),
            }),
            quota: None,
        };
        for i in 0..10_000 {
            l.check(&format!("ip:{i}"), &p, 1, SystemTime::now());
        }
        assert!(l.clients.lock().unwrap().len() <= 100);
    }
}
