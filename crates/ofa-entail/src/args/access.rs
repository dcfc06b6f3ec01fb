//! Flags of the inference routes' access control: keys and consumers, the gateway's consumer
//! header and trusted proxies, rate limits and quotas and where they are counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ofa_access::{ForwardedHeader, KeyStore, Limits, Policy, Quota, Rate, TrustedProxies};
use ofa_server::access::AccessConfig;

/// Clients whose limits one process tracks at most (memory stays bounded under address floods).
const MAX_TRACKED_CLIENTS: usize = 100_000;

#[derive(Args, Debug)]
pub struct AccessArgs {
    /// Per consumer (or client address when anonymous): N/second, N/minute or N/hour; "off"
    /// disables. A consumer's `rate=` in the key file overrides it.
    #[arg(long, env = "RATE_LIMIT", default_value = "100/minute")]
    rate_limit: String,
    /// Per consumer: N/day or N/month (calendar periods of UTC); off unless set. A consumer's
    /// `quota=` in the key file overrides it.
    #[arg(long, env = "QUOTA", default_value = "off")]
    quota: String,
    /// Comma-separated keys, each its own consumer (key-1, key-2, …); with API_KEYS_FILE,
    /// inference routes need a key.
    #[arg(long, env = "API_KEYS", default_value = "", hide_env_values = true)]
    api_keys: String,
    /// Consumers, one a line: `NAME KEY[,KEY…] [rate=N/unit] [quota=N/unit]`, a key plain or
    /// `sha256:HEX`. Reloaded when it changes and on SIGHUP.
    #[arg(long, env = "API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Seconds between checks of API_KEYS_FILE for changes.
    #[arg(long, env = "API_KEYS_POLL", default_value_t = 2.0)]
    api_keys_poll: f64,
    /// The header a gateway names the authenticated consumer in (Kong, APISIX:
    /// X-Consumer-Username); believed only from TRUSTED_PROXIES or with GATEWAY_SECRET.
    #[arg(long, env = "CONSUMER_HEADER")]
    consumer_header: Option<String>,
    /// Comma-separated addresses or CIDR blocks of our proxies and gateways: their
    /// X-Forwarded-For / Forwarded and consumer headers are believed.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// The forwarding header TRUSTED_PROXIES write the client's address to:
    /// x-forwarded-for or forwarded (RFC 7239); the other is never believed.
    #[arg(long, env = "FORWARDED_HEADER", default_value = "x-forwarded-for")]
    forwarded_header: String,
    /// Failed authentications (wrong key, wrong gateway secret) allowed per client address:
    /// N/second, N/minute or N/hour, then 429 until the bucket refills; "off" disables.
    #[arg(long, env = "AUTH_FAILURE_LIMIT", default_value = "10/minute")]
    auth_failure_limit: String,
    /// Whose images share cached ResNet features (IMAGE_CACHE_MB): "consumer" keeps each
    /// consumer's apart (no consumer learns from cache hits what another sent; the same image
    /// from two consumers runs the ResNet twice), "global" shares them.
    #[arg(long, env = "IMAGE_CACHE_SCOPE", default_value = "consumer")]
    image_cache_scope: String,
    /// A secret the gateway sends in X-Gateway-Secret, trusted from any address.
    #[arg(long, env = "GATEWAY_SECRET", hide_env_values = true)]
    gateway_secret: Option<String>,
    /// Where limits are counted: unset for each process on its own, or
    /// redis://[:password@]host:port[/db] to share them across replicas.
    #[arg(long, env = "LIMITS_BACKEND", hide_env_values = true)]
    limits_backend: Option<String>,
    /// Prefix of the keys in the shared store (one per deployment sharing a Redis).
    #[arg(long, env = "LIMITS_PREFIX", default_value = "ofa-entail")]
    limits_prefix: String,
}

fn off(s: &str) -> bool {
    matches!(s.trim(), "" | "off" | "none" | "0")
}

impl AccessArgs {
    pub fn config(&self) -> Result<AccessConfig> {
        let rate = (!off(&self.rate_limit))
            .then(|| self.rate_limit.parse::<Rate>())
            .transpose()
            .context("RATE_LIMIT")?;
        let quota = (!off(&self.quota))
            .then(|| self.quota.parse::<Quota>())
            .transpose()
            .context("QUOTA")?;
        let inline: Vec<String> = self
            .api_keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let keys =
            KeyStore::open(self.api_keys_file.as_deref(), &inline).context("API_KEYS_FILE")?;
        let consumer_header = self
            .consumer_header
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.trim().parse())
            .transpose()
            .context("CONSUMER_HEADER is not a header name")?;
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies)?;
        let forwarded_header = ForwardedHeader::parse(&self.forwarded_header)?;
        let cache_per_consumer = match self.image_cache_scope.trim() {
            "consumer" => true,
            "global" => false,
            other => anyhow::bail!("IMAGE_CACHE_SCOPE must be consumer or global, got {other:?}"),
        };
        let auth_failures = (!off(&self.auth_failure_limit))
            .then(|| self.auth_failure_limit.parse::<Rate>())
            .transpose()
            .context("AUTH_FAILURE_LIMIT")?;
        let gateway_secret = self.gateway_secret.clone().filter(|s| !s.is_empty());
        anyhow::ensure!(
            consumer_header.is_some() || gateway_secret.is_none(),
            "GATEWAY_SECRET is set but CONSUMER_HEADER is not: the secret vouches for that header"
        );
        anyhow::ensure!(
            consumer_header.is_none() || gateway_secret.is_some() || !trusted_proxies.is_empty(),
            "CONSUMER_HEADER needs TRUSTED_PROXIES or GATEWAY_SECRET: otherwise any client could name itself"
        );
        let limits = match self.limits_backend.as_deref().filter(|b| !off(b)) {
            None | Some("memory") => Limits::in_memory(MAX_TRACKED_CLIENTS),
            Some(url) => Limits::redis(url, &self.limits_prefix, MAX_TRACKED_CLIENTS)?,
        };
        let key_poll = crate::args::flags::seconds("API_KEYS_POLL", self.api_keys_poll)?
            .max(Duration::from_millis(100));
        Ok(AccessConfig {
            keys: Arc::new(keys),
            defaults: Policy { rate, quota },
            consumer_header,
            trusted_proxies,
            forwarded_header,
            auth_failures,
            cache_per_consumer,
            gateway_secret,
            limits: Arc::new(limits),
            key_poll,
        })
    }
}
