//! Who is calling an inference route: a consumer named by a trusted gateway's header, or
//! identified by an API key, or an anonymous client address; and the limits that apply.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, Extensions, HeaderMap, HeaderName};
use ofa_access::{
    BackendChange, Consumer, Decision, ForwardedHeader, KeyStore, Limits, Policy, Rate, Refusal,
    Reload, TrustedProxies,
};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorType};

/// The binary builds this from flags and the environment.
#[derive(Clone)]
pub struct AccessConfig {
    /// `API_KEYS` and `API_KEYS_FILE`; empty: inference routes are open.
    pub keys: Arc<KeyStore>,
    /// Limits of consumers whose line sets none, and of anonymous clients.
    pub defaults: Policy,
    /// The header a trusted gateway names the consumer in (`X-Consumer-Username`).
    pub consumer_header: Option<HeaderName>,
    /// Peers whose forwarding and consumer headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// The one forwarding header those peers write (`FORWARDED_HEADER`).
    pub forwarded_header: ForwardedHeader,
    /// Failed authentications allowed per client address (`AUTH_FAILURE_LIMIT`); `None`: off.
    pub auth_failures: Option<Rate>,
    /// Each consumer's images get cached features of their own (`IMAGE_CACHE_SCOPE=consumer`),
    /// so no consumer can tell from cache hits what another sent.
    pub cache_per_consumer: bool,
    /// Also believed: a request carrying this in `X-Gateway-Secret`.
    pub gateway_secret: Option<String>,
    pub limits: Arc<Limits>,
    /// How often the key file is compared with what is in force (SIGHUP: at once).
    pub key_poll: Duration,
}

impl std::fmt::Debug for AccessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessConfig")
            .field("keys_file", &self.keys.path())
            .field("defaults", &self.defaults)
            .field("consumer_header", &self.consumer_header)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded_header", &self.forwarded_header)
            .field("auth_failures", &self.auth_failures)
            .field("cache_per_consumer", &self.cache_per_consumer)
            .field("gateway_secret", &self.gateway_secret.as_ref().map(|_| "…"))
            .field("limits", &self.limits.backend())
            .finish()
    }
}

/// The client address [`AccessConfig::client_ip`] found, kept on the request so it is worked
/// out once.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Who a request came from, for limits, the log line and metric labels (never a key).
#[derive(Debug, Clone)]
pub struct Caller {
    pub consumer: Option<Arc<Consumer>>,
    pub client_ip: IpAddr,
}

impl Caller {
    /// The key its limits are counted under.
    pub fn limit_key(&self) -> String {
        match &self.consumer {
            Some(c) => format!("consumer:{}", c.name),
            None => format!("ip:{}", self.client_ip),
        }
    }

    pub fn policy(&self, defaults: &Policy) -> Policy {
        match &self.consumer {
            Some(c) => Policy {
                rate: c.rate.or(defaults.rate),
                quota: c.quota.or(defaults.quota),
            },
            None => *defaults,
        }
    }
}

impl AccessConfig {
    /// The client address: the peer's, or what a trusted proxy says it forwarded for, from
    /// every line of the forwarding header in order.
    pub fn client_ip(&self, peer: SocketAddr, h: &HeaderMap) -> IpAddr {
        let lines: Vec<Option<&str>> = h
            .get_all(self.forwarded_header.name())
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        self.trusted_proxies
            .client_ip(peer.ip(), self.forwarded_header, &lines)
    }

    /// Whether authentication can fail here at all: keys are required, or a gateway names
    /// consumers.
    pub fn authenticates(&self) -> bool {
        self.consumer_header.is_some() || !self.keys.current().is_empty()
    }

    /// Identifies the caller (at `client_ip`, from [`AccessConfig::client_ip`]), or refuses:
    /// 401 when keys are required and none matched, or when a gateway secret is presented and
    /// is wrong.
    pub fn identify(
        &self,
        peer: SocketAddr,
        client_ip: IpAddr,
        h: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let keys = self.keys.current();
        if let Some(name) = self.gateway_consumer(peer, h)? {
            let consumer = keys
                .by_name(&name)
                .unwrap_or_else(|| Arc::new(Consumer::named(name)));
            return Ok(Caller {
                consumer: Some(consumer),
                client_ip,
            });
        }
        let consumer = api_key(h).and_then(|k| keys.identify(&k));
        // Behind a gateway (a consumer header configured) every caller must be identified:
        // a request that bypassed the gateway gets no anonymous entry.
        if consumer.is_none() && (!keys.is_empty() || self.consumer_header.is_some()) {
            return Err(ApiError::new(
                ErrorType::Unauthorized,
                "a valid API key is required (Authorization: Bearer KEY or X-API-Key), or the gateway's consumer header",
            ));
        }
        Ok(Caller {
            consumer,
            client_ip,
        })
    }

    /// The consumer a gateway named, when the gateway is trusted: its peer address is a
    /// trusted proxy, or it presents the shared secret.
    fn gateway_consumer(
        &self,
        peer: SocketAddr,
        h: &HeaderMap,
    ) -> Result<Option<String>, ApiError> {
        let Some(header) = &self.consumer_header else {
            return Ok(None);
        };
        let presented = h.get("x-gateway-secret").map(|v| v.as_bytes());
        let secret_ok = match (&self.gateway_secret, presented) {
            (Some(s), Some(p)) => {
                if !bool::from(s.as_bytes().ct_eq(p)) {
                    return Err(ApiError::new(
                        ErrorType::Unauthorized,
                        "X-Gateway-Secret does not match GATEWAY_SECRET",
                    ));
                }
                true
            }
            _ => false,
        };
        if !secret_ok && !self.trusted_proxies.contains(peer.ip()) {
            return Ok(None);
        }
        let Some(value) = h.get(header).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let name = value.trim();
        ofa_access::consumers::check_name(name)
            .map_err(|e| ApiError::new(ErrorType::Unauthorized, format!("{header}: {e}")))?;
        Ok(Some(name.to_owned()))
    }
}

/// Where an inference handler's charge for its pairs lands, so the response's limit headers
/// show the standing after it. The middleware charges one unit as a request arrives; a
/// handler charges the rest once it has counted the pairs.
#[derive(Debug, Clone, Default)]
pub struct LimitSlot(pub Arc<Mutex<Charged>>);

/// The handler's charge: its decision, and the shared store's change of state if it saw one.
#[derive(Debug, Clone, Default)]
pub struct Charged {
    pub decision: Option<Decision>,
    pub change: Option<BackendChange>,
}

/// The image-feature cache scope of a request's pairs: its consumer's own when the cache is
/// per consumer, else the one shared scope (0).
pub fn cache_scope(access: &AccessConfig, request: &Extensions) -> u64 {
    let consumer = request
        .get::<Caller>()
        .and_then(|c| c.consumer.as_ref())
        .filter(|_| access.cache_per_consumer);
    match consumer {
        Some(c) => {
            let d = ofa_access::consumers::digest(&c.name);
            // Never 0, the shared scope.
            u64::from_le_bytes(d[..8].try_into().expect("8 bytes")).max(1)
        }
        None => 0,
    }
}

/// The refusal's error: 429 with `Retry-After`, and the limit in the message.
pub fn refusal_error(decision: &Decision) -> Option<ApiError> {
    let refusal = decision.refused?;
    let (kind, message) = match refusal {
        Refusal::Rate => (
            ErrorType::RateLimited,
            format!(
                "rate limit of {} pairs exceeded",
                decision.rate.map_or(0, |w| w.limit)
            ),
        ),
        Refusal::Quota => (
            ErrorType::QuotaExceeded,
            format!(
                "quota of {} pairs for this period used up ({} left)",
                decision.quota.map_or(0, |w| w.limit),
                decision.quota.map_or(0, |w| w.remaining)
            ),
        ),
    };
    Some(ApiError::new(kind, message).retry_after(decision.retry_after()))
}

/// Counts a request's pairs against its caller's rate and quota, the one unit charged on
/// arrival included: all of the rest, or none and a 429.
pub async fn charge_pairs(
    access: &AccessConfig,
    request: &Extensions,
    pairs: usize,
) -> Result<(), ApiError> {
    let (Some(caller), Some(slot)) = (request.get::<Caller>(), request.get::<LimitSlot>()) else {
        return Ok(());
    };
    let policy = caller.policy(&access.defaults);
    let extra = pairs.saturating_sub(1) as u64;
    if extra == 0 || (policy.rate.is_none() && policy.quota.is_none()) {
        return Ok(());
    }
    if let Some(rate) = policy.rate.filter(|r| u64::from(r.requests) < pairs as u64) {
        // It could never pass: waiting would not help, so say how to fit.
        return Err(ApiError::new(
            ErrorType::RateLimited,
            format!(
                "the request has {pairs} pairs, more than the rate limit allows at once ({}); send smaller requests",
                rate.requests
            ),
        )
        .retry_after(rate.per));
    }
    let (decision, change) = access
        .limits
        .check(&caller.limit_key(), &policy, extra)
        .await;
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Charged {
        decision: Some(decision),
        change,
    };
    match refusal_error(&decision) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `Authorization: Bearer KEY` (the scheme in any case, RFC 7235) or `X-API-Key: KEY`.
fn api_key(h: &HeaderMap) -> Option<String> {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| key.trim().to_owned())
        });
    bearer.or_else(|| {
        h.get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    })
}

/// Reloads the key file when it changes or on SIGHUP; a file that no longer parses is
/// logged and the keys in force stay.
pub async fn watch_keys(keys: Arc<KeyStore>, poll: Duration) {
    if keys.path().is_none() {
        return;
    }
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            _ = signalled => {},
            _ = tokio::time::sleep(poll) => {},
        }
        let k = keys.clone();
        let outcome = tokio::task::spawn_blocking(move || k.reload()).await;
        match outcome {
            Ok(Ok(Reload::Reloaded { consumers })) => {
                tracing::info!(consumers, "keys_reloaded")
            }
            Ok(Ok(Reload::Unchanged)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "keys_reload_failed"),
            Err(e) => tracing::warn!(error = %e, "keys_reload_failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_matched_in_any_case() {
        for v in ["Bearer k", "bearer k", "BEARER  k "] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(api_key(&h).as_deref(), Some("k"), "{v:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic k".parse().unwrap());
        assert_eq!(api_key(&h), None);
    }
}
