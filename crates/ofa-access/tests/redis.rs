//! The shared store against a real Redis (Debian's redis-server, started here on loopback):
//! two limiters share one quota exactly; with Redis stopped they fall back to their own
//! counts and say so; with it back they share again.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{free_port, Redis};

use ofa_access::{BackendChange, Limits, Period, Policy, Quota, Rate, Refusal};

#[tokio::test]
async fn replicas_share_one_quota_fall_back_without_redis_and_share_again() {
    let port = free_port();
    let redis = Redis::start(port);
    let prefix = format!("test-{}", std::process::id());
    let a = Limits::redis(&redis.url(), &prefix, 100).unwrap();
    let b = Limits::redis(&redis.url(), &prefix, 100).unwrap();
    let policy = Policy {
        rate: Some(Rate {
            requests: 1000,
            per: Duration::from_secs(60),
        }),
        quota: Some(Quota {
            requests: 7,
            per: Period::Day,
        }),
    };
    let mut allowed = 0;
    for i in 0..20 {
        let l = if i % 2 == 0 { &a } else { &b };
        let (d, change) = l.check("consumer:acme", &policy, 1).await;
        assert_eq!(change, None, "Redis is up");
        if d.allowed() {
            allowed += 1;
        } else {
            assert_eq!(d.refused, Some(Refusal::Quota));
            assert_eq!(d.quota.unwrap().remaining, 0);
            assert!(d.retry_after() > Duration::ZERO);
        }
    }
    assert_eq!(
        allowed, 7,
        "the quota holds across both replicas, not twice"
    );
    assert_eq!(a.shared_up(), Some(true));

    // A shared rate: 3 per minute across both.
    let rate = Policy {
        rate: Some(Rate {
            requests: 3,
            per: Duration::from_secs(60),
        }),
        quota: None,
    };
    let mut ok = 0;
    for i in 0..6 {
        let l = if i % 2 == 0 { &a } else { &b };
        ok += usize::from(l.check("consumer:beta", &rate, 1).await.0.allowed());
    }
    assert_eq!(ok, 3);

    drop(redis);
    let (d, change) = a.check("consumer:gamma", &rate, 1).await;
    assert!(d.allowed(), "no refusal because the store is away");
    assert!(matches!(change, Some(BackendChange::Down(_))), "{change:?}");
    assert_eq!(a.shared_up(), Some(false));
    // Per-pod counts meanwhile: each replica allows the rate on its own.
    for _ in 0..2 {
        assert!(a.check("consumer:gamma", &rate, 1).await.0.allowed());
    }
    let (d, change) = a.check("consumer:gamma", &rate, 1).await;
    assert_eq!(d.refused, Some(Refusal::Rate));
    assert_eq!(change, None, "said once");

    let _redis = Redis::start(port);
    std::thread::sleep(Duration::from_millis(1100));
    let (d, change) = a.check("consumer:delta", &rate, 1).await;
    assert!(d.allowed());
    assert_eq!(change, Some(BackendChange::Up));
    assert_eq!(a.shared_up(), Some(true));
}

#[tokio::test]
async fn an_unreachable_store_at_start_serves_under_local_limits() {
    let l = Limits::redis(&format!("redis://127.0.0.1:{}/", free_port()), "t", 10).unwrap();
    let p = Policy {
        rate: Some(Rate {
            requests: 1,
            per: Duration::from_secs(60),
        }),
        quota: None,
    };
    let t = Instant::now();
    let (d, change) = l.check("ip:1.2.3.4", &p, 1).await;
    assert!(d.allowed());
    assert!(matches!(change, Some(BackendChange::Down(_))));
    assert!(!l.check("ip:1.2.3.4", &p, 1).await.0.allowed());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no long waits for an absent store"
    );
    assert!(Limits::redis("http://x", "t", 10).is_err());
}

#[tokio::test]
async fn shared_limits_count_pairs_all_or_nothing() {
    let port = free_port();
    let redis = Redis::start(port);
    let prefix = format!("pairs-{}", std::process::id());
    let l = Limits::redis(&redis.url(), &prefix, 100).unwrap();
    let q = Policy {
        rate: Some(Rate {
            requests: 100,
            per: Duration::from_secs(60),
        }),
        quota: Some(Quota {
            requests: 3,
            per: Period::Day,
        }),
    };
    let (d, change) = l.check("consumer:pairs", &q, 32).await;
    assert_eq!(change, None, "Redis is up");
    assert_eq!(
        d.refused,
        Some(Refusal::Quota),
        "32 pairs against a quota of 3"
    );
    assert_eq!(
        d.quota.unwrap().remaining,
        3,
        "a refused request takes nothing"
    );
    assert!(l.check("consumer:pairs", &q, 0).await.0.allowed());
    let d = l.check("consumer:pairs", &q, 2).await.0;
    assert!(d.allowed());
    assert_eq!(d.quota.unwrap().remaining, 1);
    assert_eq!(d.rate.unwrap().remaining, 98, "the rate counts pairs too");
    assert!(!l.check("consumer:pairs", &q, 2).await.0.allowed());
    assert!(l.check("consumer:pairs", &q, 1).await.0.allowed());
    assert!(!l.check("consumer:pairs", &q, 0).await.0.allowed());
}

#[test]
fn a_redis_password_never_appears_in_errors() {
    let e = Limits::redis("redis://:s3cr/et@[bad", "t", 10)
        .err()
        .expect("not a URL")
        .to_string();
    assert!(!e.contains("s3cr") && !e.contains("et@"), "{e}");
}
