//! The shared store: Redis, for `worker` replicas (the gateway overlay's Redis, or any). Keys
//! are `ofa-entail:result:<hex>` and `ofa-entail:url:<hex>`, each with Redis's own expiry;
//! reads are one `MGET` per chunk, writes one pipeline of `SET … EX`. The connection manager
//! reconnects after a Redis restart; until then lookups fail and jobs are scored as usual.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::file::Table;
use super::keys::Hex;
use super::StoreError;

/// Longest wait for Redis per call: a slow store must not hold a chunk up for long.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the first connection at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct RedisStore {
    conn: ConnectionManager,
    /// The URL as errors show it: without its password.
    shown: String,
}

fn key(table: Table, k: &[u8; 32]) -> String {
    let kind = match table {
        Table::Results => "result",
        Table::Urls => "url",
    };
    format!("ofa-entail:{kind}:{}", Hex(k))
}

impl RedisStore {
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = masked(url);
        let fail = |e: &dyn std::fmt::Display| StoreError::Redis {
            url: shown.clone(),
            reason: e.to_string().replace(url, &shown),
        };
        let client = redis::Client::open(url).map_err(|e| fail(&e))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new(client))
            .await
            .map_err(|_| fail(&"no connection within 10 s"))?
            .map_err(|e| fail(&e))?;
        Ok(RedisStore { conn, shown })
    }

    fn fail(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Redis {
            url: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    pub(crate) async fn get_many(
        &self,
        table: Table,
        keys: &[[u8; 32]],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(key(table, k));
        }
        let mut conn = self.conn.clone();
        tokio::time::timeout(TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| self.fail(&"no answer in time"))?
            .map_err(|e| self.fail(&e))
    }

    pub(crate) async fn put_many(
        &self,
        entries: &[(Table, [u8; 32], Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (table, k, v) in entries {
            pipe.cmd("SET")
                .arg(key(*table, k))
                .arg(&v[..])
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        let mut conn = self.conn.clone();
        tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| self.fail(&"no answer in time"))?
            .map_err(|e| self.fail(&e))
    }
}

/// `redis://user:secret@host` as `redis://user:***@host`.
fn masked(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            super::masked("redis://:hunter2@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(super::masked("redis://cache"), "redis://cache");
    }
}
