//! Limits shared by every replica: one Lua script per request does the bucket refill, both
//! checks and both counts atomically, in one round trip, on Redis's own clock (so replicas'
//! clocks need not agree).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;

use crate::decision::{quota_window, rate_window, refusal, Decision, Policy};
use crate::rate::window;
use crate::AccessError;

/// Longest wait for Redis per request before local counts answer instead.
const TIMEOUT: Duration = Duration::from_millis(250);

const SCRIPT: &str = r"
-- KEYS[1]: the client's bucket, KEYS[2]: its quota counter for this period.
-- ARGV: bucket capacity (0: no rate), refill period in ms, quota (0: none), counter TTL in s,
-- units to count (0: only look; at least one unit must be left).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local cost = tonumber(ARGV[5])
local need = math.max(cost, 1)
local tokens = cap
if cap > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
  if b[1] then
    tokens = math.min(cap, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * cap / period)
  end
end
local used = 0
if quota > 0 then used = tonumber(redis.call('GET', KEYS[2]) or '0') end
local rate_ok = 1
if cap > 0 and tokens < need then rate_ok = 0 end
local quota_ok = 1
if quota > 0 and used + need > quota then quota_ok = 0 end
if rate_ok == 1 and quota_ok == 1 and cost > 0 then
  if cap > 0 then tokens = tokens - cost end
  if quota > 0 then
    used = redis.call('INCRBY', KEYS[2], cost)
    if used == cost then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
  end
end
if cap > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], period)
end
return {rate_ok, quota_ok, tostring(tokens), used}
";

pub(crate) struct RedisLimits {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    connecting: AtomicBool,
    script: redis::Script,
    prefix: String,
}

impl RedisLimits {
    pub fn new(url: &str, prefix: &str) -> Result<Self, AccessError> {
        // The URL may hold a password: errors show it masked, and the client's own message
        // (which may quote the URL) is scrubbed of it.
        let client = redis::Client::open(url).map_err(|e| {
            AccessError::Backend(format!(
                "LIMITS_BACKEND {}: {}",
                crate::secret::masked_url(url),
                crate::secret::scrub(url, &e.to_string())
            ))
        })?;
        Ok(Self {
            client,
            conn: Mutex::new(None),
            connecting: AtomicBool::new(false),
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, AccessError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        // One connection attempt at a time; the others use local counts meanwhile.
        if self.connecting.swap(true, Ordering::AcqRel) {
            return Err(AccessError::Backend("connecting to Redis".into()));
        }
        let made = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| AccessError::Backend("timed out connecting to Redis".into()))
            .and_then(|r| r.map_err(|e| AccessError::Backend(e.to_string())));
        self.connecting.store(false, Ordering::Release);
        let c = made?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    pub async fn check(
        &self,
        client: &str,
        policy: &Policy,
        cost: u64,
        now: SystemTime,
    ) -> Result<Decision, AccessError> {
        let (period, left) = match policy.quota {
            Some(q) => window(q.per, now),
            None => (String::new(), Duration::ZERO),
        };
        let mut call = self.script.prepare_invoke();
        call.key(format!("{}:rate:{client}", self.prefix))
            .key(format!("{}:quota:{client}:{period}", self.prefix))
            .arg(policy.rate.map_or(0, |r| r.requests))
            .arg(policy.rate.map_or(1, |r| r.per.as_millis() as u64))
            .arg(policy.quota.map_or(0, |q| q.requests))
            // Kept a day past the period's end: the name carries the period anyway.
            .arg(left.as_secs() + 86_400)
            .arg(cost);
        // A connection made before Redis restarted fails once; a fresh one is tried at once.
        let mut attempt = 0;
        let (rate_ok, quota_ok, tokens, used): (i64, i64, String, u64) = loop {
            attempt += 1;
            let mut conn = self.connection().await?;
            let answered = tokio::time::timeout(TIMEOUT, call.invoke_async(&mut conn)).await;
            match answered {
                Ok(Ok(v)) => break v,
                failed => {
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    let retry = attempt == 1
                        && matches!(&failed, Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped());
                    if !retry {
                        return Err(AccessError::Backend(match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "Redis did not answer in time".into(),
                        }));
                    }
                }
            }
        };
        let tokens: f64 = tokens.parse().unwrap_or(0.0);
        let refused = refusal(rate_ok == 1, quota_ok == 1);
        Ok(Decision {
            refused,
            rate: policy
                .rate
                .map(|r| rate_window(r, tokens, refused.is_none())),
            quota: policy.quota.map(|q| quota_window(q, used, left)),
        })
    }
}
