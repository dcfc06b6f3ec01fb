//! Behind an API gateway, what needs the real process: consumers from a key file reloaded live
//! (on change and on SIGHUP), a bad key file refused at start, the limits store's password
//! never printed, and limits shared by two replicas through a real Redis that goes away and
//! comes back. Who gets in (gateway secret, trusted proxies, lock-out, quotas in pairs, the
//! cache per consumer) is tested in process, in `ofa-server`'s `tests/router/access.rs`.

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::redis_server::{free_port, Redis};
use common::{form, image, metric, Server};

async fn predict(c: &reqwest::Client, s: &Server, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = c
        .post(s.url("/predict"))
        .multipart(form(image("tiny_8x8.png"), "x"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removed when dropped, whether the test passes or not.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ofa-gateway-{name}-"))
        .tempdir()
        .unwrap()
}

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

async fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_quota_through_redis_and_survive_its_absence() {
    let port = free_port();
    let redis = Redis::start(port);
    let tmp = temp_dir("quota");
    let dir = tmp.path().to_path_buf();
    let keys = dir.join("keys");
    std::fs::write(
        &keys,
        format!(
            "acme sha256:{} quota=5/day\nbeta b-key rate=2/minute\n",
            sha256_hex("acme-key")
        ),
    )
    .unwrap();
    let env = [
        ("API_KEYS_FILE", keys.to_str().unwrap()),
        ("LIMITS_BACKEND", &redis.url()),
        ("RATE_LIMIT", "1000/minute"),
    ];
    let a = Server::start(&env);
    let b = Server::start_beside(&a, &env);
    let c = reqwest::Client::new();
    let auth = [("authorization", "Bearer acme-key")];
    let mut ok = 0;
    for i in 0..12 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = predict(&c, s, &auth).await;
        match r.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(r.headers()["x-quota-limit"], "5");
                assert_eq!(
                    r.headers()["x-quota-remaining"],
                    (5 - ok).to_string().as_str()
                );
            }
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(r.headers()["x-quota-remaining"], "0");
                let reset: u64 = r.headers()["x-quota-reset"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(reset > 0 && reset <= 86_400);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error_type"], "quota_exceeded");
            }
            other => panic!("status {other}"),
        }
    }
    assert_eq!(ok, 5, "exactly the quota across both replicas, not twice");
    // The per-consumer rate from the file holds across both too.
    let beta = [("x-api-key", "b-key")];
    let statuses = [
        predict(&c, &a, &beta).await.status(),
        predict(&c, &b, &beta).await.status(),
        predict(&c, &a, &beta).await.status(),
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 200, 429]);
    let ready: Value = c
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["limits"]["backend"], "redis");
    assert_eq!(ready["limits"]["shared"], true);

    // Redis goes away: requests are still answered, under per-pod limits, and it is said.
    drop(redis);
    let r = predict(&c, &a, &[("x-api-key", "b-key")]).await;
    assert_eq!(
        r.status(),
        200,
        "the limiter's store being away fails no request"
    );
    wait_for(
        || !events(&a.log_lines(), "limits_backend_down").is_empty(),
        "the log line",
    )
    .await;
    let r = c.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "still ready");
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["limits"]["shared"], false);
    assert!(ready["limits"]["fallback"]
        .as_str()
        .unwrap()
        .contains("per-pod"));
    assert_eq!(metric(&c, &a, "ofa_limits_shared_up").await, 0.0);

    // It comes back (empty: this test's Redis keeps nothing on disk): shared again.
    let _redis = Redis::start(port);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = predict(&c, &a, &auth).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-quota-remaining"], "4");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = predict(&c, &b, &auth).await;
    assert_eq!(
        r.headers()["x-quota-remaining"],
        "3",
        "counted together again"
    );
    wait_for(
        || !events(&a.log_lines(), "limits_backend_up").is_empty(),
        "the log line",
    )
    .await;
    assert_eq!(metric(&c, &a, "ofa_limits_shared_up").await, 1.0);

    // The consumer is in the log line and on the metrics; the key is in neither.
    let lines = a.log_lines();
    let req = lines
        .iter()
        .find(|l| l["event"] == "request" && l["consumer"] == "acme")
        .expect("a request line naming the consumer");
    assert_eq!(req["client_ip"], "127.0.0.1");
    assert!(!lines.iter().any(|l| l.to_string().contains("acme-key")));
    let text = common::metrics_text(&c, &a).await;
    assert!(text.contains("consumer=\"acme\""), "{text}");
    assert!(!text.contains("acme-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_file_reloads_on_change_and_on_sighup() {
    let tmp = temp_dir("reload");
    let dir = tmp.path().to_path_buf();
    let keys = dir.join("keys");
    std::fs::write(&keys, "one k1\n").unwrap();
    let s = Server::start(&[
        ("API_KEYS_FILE", keys.to_str().unwrap()),
        ("API_KEYS_POLL", "0.2"),
    ]);
    let c = reqwest::Client::new();
    assert_eq!(
        predict(&c, &s, &[("authorization", "bearer k1")])
            .await
            .status(),
        200
    );
    assert_eq!(
        predict(&c, &s, &[("authorization", "Bearer k2")])
            .await
            .status(),
        401
    );

    // A Secret update: the new file replaces the old through a rename.
    std::fs::write(dir.join("keys.new"), "two k2\n").unwrap();
    std::fs::rename(dir.join("keys.new"), &keys).unwrap();
    wait_for(
        || !events(&s.log_lines(), "keys_reloaded").is_empty(),
        "the reload",
    )
    .await;
    assert_eq!(
        predict(&c, &s, &[("authorization", "Bearer k2")])
            .await
            .status(),
        200
    );
    assert_eq!(
        predict(&c, &s, &[("authorization", "Bearer k1")])
            .await
            .status(),
        401
    );

    // A broken file is refused and the keys in force stay.
    std::fs::write(&keys, "lonely-name-without-key\n").unwrap();
    wait_for(
        || !events(&s.log_lines(), "keys_reload_failed").is_empty(),
        "the refusal",
    )
    .await;
    assert_eq!(predict(&c, &s, &[("x-api-key", "k2")]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_at_once() {
    let tmp = temp_dir("hup");
    let dir = tmp.path().to_path_buf();
    let keys = dir.join("keys");
    std::fs::write(&keys, "one k1\n").unwrap();
    let s = Server::start(&[
        ("API_KEYS_FILE", keys.to_str().unwrap()),
        ("API_KEYS_POLL", "3600"),
    ]);
    let c = reqwest::Client::new();
    std::fs::write(&keys, "one k1\nthree k3\n").unwrap();
    assert_eq!(predict(&c, &s, &[("x-api-key", "k3")]).await.status(), 401);
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for(
        || !events(&s.log_lines(), "keys_reloaded").is_empty(),
        "the reload",
    )
    .await;
    assert_eq!(predict(&c, &s, &[("x-api-key", "k3")]).await.status(), 200);
}

#[test]
fn a_key_with_a_hash_is_refused_at_start() {
    let tmp = temp_dir("hash");
    let keys = tmp.path().join("keys");
    // `#` inside a key: refused with its line number rather than cut short at the `#`.
    std::fs::write(&keys, "ok k1\nacme ab#cdef0123456789\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("serve")
        .env("MODEL_DIR", common::fixtures().join("tiny_ofa_ve"))
        .env("API_KEYS_FILE", &keys)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("'#'"),
        "{stderr}"
    );
}

/// The shared limits store's password: not in `--help`, not in a start-up error.
#[test]
fn the_limits_backends_password_is_never_printed() {
    let url = "redis://:s3cr/et-pw@[bad-host";
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .args(["serve", "--help"])
        .env("LIMITS_BACKEND", url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("LIMITS_BACKEND"), "{text}");
    assert!(!text.contains("s3cr") && !text.contains("et-pw"), "{text}");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("serve")
        .env("MODEL_DIR", common::fixtures().join("tiny_ofa_ve"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LIMITS_BACKEND", url)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(all.contains("LIMITS_BACKEND"), "{all}");
    assert!(!all.contains("s3cr") && !all.contains("et-pw"), "{all}");
}
