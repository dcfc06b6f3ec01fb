//! Who gets in: keys, a gateway's consumer header with its secret, forwarded addresses from
//! trusted proxies only, lock-out after failed keys, rates and quotas counted in pairs, and
//! image features cached per consumer.

use std::sync::Arc;

use axum::http::StatusCode;
use ofa_access::{KeyStore, Policy};
use ofa_server::router;
use tower::ServiceExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_each_has_its_own_rate() {
    let state = service_with(|a| {
        a.keys = Arc::new(KeyStore::open(None, &["k1".into(), "k2".into()]).unwrap());
        a.defaults = Policy {
            rate: Some("3/minute".parse().unwrap()),
            quota: None,
        };
    });
    let img = image("tiny_8x8.png");
    let predict = |auth: Option<(&'static str, &str)>| {
        let mut req = multipart(&[("image", &img), ("text", b"x")]);
        if let Some((name, value)) = auth {
            req.headers_mut().insert(name, value.parse().unwrap());
        }
        req
    };
    let send = |req| {
        let state = state.clone();
        async move { router(state).oneshot(req).await.unwrap() }
    };
    let r = send(predict(None)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = send(predict(Some(("authorization", "Bearer wrong")))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Health and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            send(request("GET", path, None, vec![])).await.status(),
            StatusCode::OK
        );
    }
    for i in 0..3 {
        let r = send(predict(Some(("authorization", "Bearer k1")))).await;
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let r = send(predict(Some(("authorization", "Bearer k1")))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers().contains_key("retry-after") && r.headers().contains_key("x-ratelimit-limit")
    );
    // Limits are per key: the other key still has its own budget.
    let r = send(predict(Some(("x-api-key", "k2")))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A `/predict` of the tiny image with these headers.
fn predict(headers: &[(&str, &str)]) -> axum::http::Request<axum::body::Body> {
    with_headers(
        multipart(&[("image", &image("tiny_8x8.png")), ("text", b"x")]),
        headers,
    )
}

/// [`predict`] with a request id `PREFIX-N`, to find its log line by.
fn tagged(prefix: &str, headers: &[(&str, &str)]) -> axum::http::Request<axum::body::Body> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    with_headers(
        predict(headers),
        &[("x-request-id", &format!("{prefix}-{n}"))],
    )
}

/// What `serve` does with `RATE_LIMIT` set and the default `AUTH_FAILURE_LIMIT`.
fn rate(per: &str) -> impl FnOnce(&mut ofa_server::access::AccessConfig) + '_ {
    move |a| {
        a.defaults.rate = Some(per.parse().unwrap());
        a.auth_failures = Some("10/minute".parse().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_header_counts_only_with_the_gateway_secret() {
    let state = service_with(|a| {
        rate("2/minute")(a);
        a.keys = Arc::new(KeyStore::open(None, &["direct-key".into()]).unwrap());
        a.consumer_header = Some("x-consumer-username".parse().unwrap());
        a.gateway_secret = Some("s3cret".into());
    });
    // Without the secret the header is just a header: no key, no entry.
    let r = send(&state, tagged("gw", &[("x-consumer-username", "mallory")])).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong secret is refused outright.
    let r = send(
        &state,
        tagged(
            "gw",
            &[
                ("x-consumer-username", "acme"),
                ("x-gateway-secret", "guess"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(r).await).unwrap();
    assert!(body["error"].as_str().unwrap().contains("X-Gateway-Secret"));
    // With it, the gateway's consumer is the caller, with its own limits.
    let gw = [
        ("x-consumer-username", "acme"),
        ("x-gateway-secret", "s3cret"),
    ];
    assert_eq!(
        send(&state, tagged("gw", &gw)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&state, tagged("gw", &gw)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&state, tagged("gw", &gw)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let other = [
        ("x-consumer-username", "globex"),
        ("x-gateway-secret", "s3cret"),
    ];
    assert_eq!(
        send(&state, tagged("gw", &other)).await.status(),
        StatusCode::OK,
        "limits are per consumer"
    );
    // A name that is not a plain name is refused, not logged raw.
    let bad = [
        ("x-consumer-username", "a b\"c"),
        ("x-gateway-secret", "s3cret"),
    ];
    assert_eq!(
        send(&state, tagged("gw", &bad)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let requests = log().requests("gw-");
    assert!(
        requests.iter().any(|l| l["consumer"] == "acme"),
        "{requests:?}"
    );
    assert!(!requests.iter().any(|l| l["consumer"] == "mallory"));
    assert!(!requests
        .iter()
        .any(|l| l["consumer"].as_str().is_some_and(|c| c.contains(' '))));
    // The metrics count the consumer it was.
    assert!(metrics(&state).await.contains("consumer=\"acme\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let spoof = [("x-forwarded-for", "6.6.6.6")];
    let client_ips = |prefix: &str| -> Vec<String> {
        log()
            .requests(prefix)
            .iter()
            .filter(|l| l["route"] == "/predict")
            .filter_map(|l| l["client_ip"].as_str().map(str::to_owned))
            .collect()
    };
    {
        // Nobody trusted: the header is ignored, the peer is the client, and a spoofed address
        // does not buy a fresh rate-limit bucket.
        let state = service_with(rate("1/minute"));
        assert_eq!(
            send(&state, tagged("fwd-none", &spoof)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(
                &state,
                tagged("fwd-none", &[("x-forwarded-for", "7.7.7.7")])
            )
            .await
            .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(client_ips("fwd-none-"), ["127.0.0.1", "127.0.0.1"]);
    }
    {
        // Loopback is our proxy: its forwarded address is the client (the rightmost untrusted).
        let state = service_with(|a| {
            rate("1/minute")(a);
            a.trusted_proxies = ofa_access::TrustedProxies::parse("127.0.0.0/8").unwrap();
        });
        for (headers, status) in [
            (
                vec![("x-forwarded-for", "1.1.1.1, 203.0.113.5")],
                StatusCode::OK,
            ),
            (vec![("x-forwarded-for", "203.0.113.6")], StatusCode::OK),
            // A client's own `Forwarded` is not the header our proxy writes: it is ignored,
            // and the proxy's own address (no forwarding header) is the client.
            (vec![("forwarded", "for=203.0.113.5")], StatusCode::OK),
            // Two header lines are one list: the client's own line first, the proxy's after
            // it; the hop the proxy appended counts, not the client's line.
            (
                vec![
                    ("x-forwarded-for", "9.9.9.9"),
                    ("x-forwarded-for", "203.0.113.6"),
                ],
                StatusCode::TOO_MANY_REQUESTS,
            ),
        ] {
            assert_eq!(
                send(&state, tagged("fwd-xff", &headers)).await.status(),
                status,
                "{headers:?}"
            );
        }
        assert_eq!(
            client_ips("fwd-xff-"),
            ["203.0.113.5", "203.0.113.6", "127.0.0.1", "203.0.113.6"]
        );
    }
    {
        // A proxy that writes RFC 7239 `Forwarded`: then `X-Forwarded-For` is the client's.
        let state = service_with(|a| {
            rate("1/minute")(a);
            a.trusted_proxies = ofa_access::TrustedProxies::parse("127.0.0.0/8").unwrap();
            a.forwarded_header = ofa_access::ForwardedHeader::parse("forwarded").unwrap();
        });
        let both = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=203.0.113.7"),
        ];
        assert_eq!(send(&state, predict(&both)).await.status(), StatusCode::OK);
        assert_eq!(
            send(
                &state,
                predict(&[("forwarded", "for=\"203.0.113.7:1234\"")])
            )
            .await
            .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            send(&state, predict(&spoof)).await.status(),
            StatusCode::OK,
            "X-Forwarded-For is not believed: the proxy itself is the client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_ends_in_429s_even_for_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "acme right-key quota=1000/day\n").unwrap();
    let state = service_with(|a| {
        a.keys = Arc::new(KeyStore::open(Some(&keys), &[]).unwrap());
        a.auth_failures = Some("10/hour".parse().unwrap());
    });
    let mut statuses = Vec::new();
    for i in 0..50 {
        let bearer = format!("Bearer wrong-{i}");
        let r = send(&state, predict(&[("authorization", &bearer)])).await;
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|&st| st == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|&st| st == 429), "{statuses:?}");
    let r = send(&state, predict(&[("authorization", "Bearer right-key")])).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is locked out, the right key too"
    );
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(r).await).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("failed authentications"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_rates_count_pairs_not_requests() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "acme k1 quota=3/day\nbeta k2 rate=40/hour\n").unwrap();
    let state = service_with(|a| {
        a.keys = Arc::new(KeyStore::open(Some(&keys), &[]).unwrap());
    });
    let tiny = b64(&image("tiny_8x8.png"));
    let post = |key: &str, n: usize| {
        let batch: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"image": tiny, "text": format!("claim {i}")}))
            .collect();
        let bearer = format!("Bearer {key}");
        send(
            &state,
            with_headers(
                json_request("/predict/batch", &serde_json::Value::Array(batch)),
                &[("authorization", &bearer)],
            ),
        )
    };
    let left = |r: &axum::http::Response<axum::body::Body>| -> u64 {
        r.headers()["x-quota-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 32 pairs against a quota of 3: refused whole, and the quota says what is left.
    let r = post("k1", 32).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        left(&r),
        2,
        "the request's first unit was counted on arrival"
    );
    let r = post("k1", 2).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(left(&r), 0);
    assert_eq!(post("k1", 1).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // A rate counts pairs too: 32 of a 40-pair bucket, then 9 more do not fit.
    let r = post("k2", 32).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "8");
    assert_eq!(post("k2", 9).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// With consumers, cached image features are each consumer's own: one consumer's request
/// never hits what another sent, so `/metrics` cannot tell it what others sent. Shared only
/// when the operator says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_cache_is_kept_per_consumer() {
    for (per_consumer, hits_from_another) in [(true, 0.0), (false, 1.0)] {
        let mut access = open_access();
        access.keys = Arc::new(KeyStore::open(None, &["key-a".into(), "key-b".into()]).unwrap());
        access.cache_per_consumer = per_consumer;
        let state = build(
            Options {
                image_cache_bytes: 16 << 20,
                ..Options::default()
            },
            access,
        );
        let hits = || metric(&state, "ofa_image_cache_hits_total");
        let ask = |key: &str| {
            let bearer = format!("Bearer {key}");
            send(
                &state,
                with_headers(
                    multipart(&[("image", &image("grace_hopper.jpg")), ("text", b"a woman.")]),
                    &[("authorization", &bearer)],
                ),
            )
        };
        assert_eq!(ask("key-a").await.status(), StatusCode::OK);
        assert_eq!(hits().await, 0.0);
        assert_eq!(ask("key-b").await.status(), StatusCode::OK);
        assert_eq!(
            hits().await,
            hits_from_another,
            "per consumer: {per_consumer}"
        );
        assert_eq!(ask("key-b").await.status(), StatusCode::OK);
        assert_eq!(
            hits().await,
            hits_from_another + 1.0,
            "a consumer's own image is still a hit"
        );
    }
}
