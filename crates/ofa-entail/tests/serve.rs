//! The service as operators run it: the real binary on a loopback port, configured by
//! environment variables, driven by real HTTP clients and tools (reqwest, curl, tritonclient,
//! promtool, Chromium), stopped by SIGTERM. Routes, errors, limits and load without a socket
//! are tested in process, in `ofa-server`'s `tests/router/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

mod common;

use common::{fixtures, form, image, metric, metric_value, metrics_text, Server};

/// Sends `n` multipart predictions of (`img`, `text`) at once, without waiting for them; each
/// task hands `read` the outcome and the instant its request started.
fn burst<T, F, Fut>(
    c: &reqwest::Client,
    url: String,
    img: &[u8],
    text: &str,
    n: usize,
    read: F,
) -> Vec<tokio::task::JoinHandle<T>>
where
    F: Fn(reqwest::Result<reqwest::Response>, Instant) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    (0..n)
        .map(|_| {
            let (c, url, img, text, read) = (
                c.clone(),
                url.clone(),
                img.to_vec(),
                text.to_owned(),
                read.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = c.post(url).multipart(form(img, &text)).send().await;
                read(outcome, started).await
            })
        })
        .collect()
}

/// Status code of a GET.
async fn get_status(c: &reqwest::Client, url: String) -> u16 {
    c.get(url).send().await.unwrap().status().as_u16()
}

#[test]
fn a_missing_metric_fails_instead_of_reading_zero() {
    let text = "# TYPE ofa_rejections_total counter\nofa_queue_depth 3\n";
    assert_eq!(metric_value(text, "ofa_queue_depth"), 3.0);
    assert_eq!(
        metric_value(text, "ofa_rejections_total{reason=\"cancelled\"}"),
        0.0
    );
    for missing in ["ofa_queue_dept", "ofa_renamed_total{reason=\"x\"}"] {
        let r = std::panic::catch_unwind(|| metric_value(text, missing));
        assert!(r.is_err(), "{missing} read as a value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_and_the_seed_curl_form() {
    let s = Server::start(&[]);
    let c = reqwest::Client::new();

    let h: Value = c
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h, serde_json::json!({"status": "ok", "model_loaded": true}));
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(
        (
            r["ready"].clone(),
            r["breaker"].clone(),
            r["draining"].clone()
        ),
        (true.into(), "closed".into(), false.into())
    );

    // Exactly what users run today.
    let out = Command::new("curl")
        .args([
            "-s",
            "-F",
            &format!(
                "image=@{}",
                fixtures().join("golden/images/grace_hopper.jpg").display()
            ),
            "-F",
            "text=a woman in a military uniform.",
            &s.url("/predict"),
        ])
        .output()
        .expect("curl runs");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    // Reference: no 0.157062, yes 0.689325, maybe 0.153612 (cases.json, grace_hopper_simple).
    let d: Vec<f64> = serde_json::from_value(v["details"].clone()).unwrap();
    for (got, want) in d.iter().zip([0.689_325_45, 0.157_062_16, 0.153_612_46]) {
        assert!((got - want).abs() < 1e-5, "{d:?}");
    }
    assert_eq!(v["label"], "Yes");

    // Multipart through reqwest: timing headers.
    let r = c
        .post(s.url("/predict"))
        .multipart(form(image("coffee.png"), "a cup of coffee."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for h in [
        "x-queue-time",
        "x-inference-time",
        "x-total-time",
        "x-request-id",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    let total: f64 = r.headers()["x-total-time"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let inference: f64 = r.headers()["x-inference-time"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total >= inference && inference > 0.0);

    // JSON with base64, premise included: the coffee_premise_hypothesis golden case.
    let body = serde_json::json!({
        "image": base64::engine::general_purpose::STANDARD.encode(image("coffee.png")),
        "text": "the cup is full of coffee.",
        "premise": "A cup of coffee sits on a saucer next to a spoon.",
    });
    let mut modelscope_names = body.clone();
    modelscope_names["text2"] = modelscope_names["premise"].take();
    modelscope_names.as_object_mut().unwrap().remove("premise");
    let v: Value = c
        .post(s.url("/predict"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        (v["scores"]["yes"].as_f64().unwrap() - 0.602_967_6).abs() < 1e-5,
        "{v}"
    );
    let v2: Value = c
        .post(s.url("/predict"))
        .json(&modelscope_names)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2, v, "\"text2\" is the premise, as in ModelScope's input");

    // Batch: every item answered in order.
    let item = |img: &str, text: &str| serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(image(img)), "text": text});
    let batch = serde_json::json!([
        item("grace_hopper.jpg", "a woman in a military uniform."),
        item("tiny_8x8.png", "a tiny picture.")
    ]);
    let r = c
        .post(s.url("/predict/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 2);
    assert!((v[0]["scores"]["yes"].as_f64().unwrap() - 0.689_325_45).abs() < 1e-5);
    assert!((v[1]["scores"]["no"].as_f64().unwrap() - 0.638_179_8).abs() < 1e-5);

    let info: Value = c
        .get(s.url("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["model_id"],
        "iic/ofa_visual-entailment_snli-ve_large_en"
    );
    assert_eq!(info["model"]["runtime"]["patch_image_size"], 480);
    assert_eq!(
        info["model"]["resnet_layout"], "channels-first",
        "the CPU's own kernels"
    );
    assert_eq!(info["limits"]["engine"]["max_batch_size"], 4);

    let m = metrics_text(&c, &s).await;
    for name in [
        "ofa_requests_total{route=\"/predict\",status=\"200\"}",
        "ofa_request_duration_seconds_bucket",
        "ofa_queue_duration_seconds_count",
        "ofa_inference_duration_seconds_count",
        "ofa_batch_size_bucket",
        "ofa_queue_depth",
        "ofa_in_flight_requests",
        "ofa_breaker_state 0",
        "ofa_model_loaded 1",
        "ofa_model_load_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}");
    }

    // One JSON log line per request, with its timings.
    let ok_predict =
        |l: &Value| l["event"] == "request" && l["route"] == "/predict" && l["status"] == 200;
    let logs = s.log_lines_once(|l| l.iter().filter(|l| ok_predict(l)).count() >= 3);
    let predicted: Vec<&Value> = logs.iter().filter(|l| ok_predict(l)).collect();
    assert!(predicted.len() >= 3);
    assert!(predicted.iter().all(|l| l["request_id"].is_string()
        && l["queue_time"].is_number()
        && l["inference_time"].is_number()
        && l["total_time"].is_number()));
}

async fn expect_error(r: reqwest::Response, status: u16, kind: &str) {
    assert_eq!(r.status(), status, "{kind}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_type"], kind, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
}

/// Bad input in general is tested in process (`ofa-server`'s `tests/router/`); what needs a
/// real connection is here: an upload over `PAYLOAD_LIMIT` sent the way users send it (curl
/// announces the size and waits for the go-ahead, so it reads the 413 instead of writing into
/// a closed connection), after which the service is still healthy and correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_over_the_payload_limit_gets_413_before_it_is_sent() {
    let s = Server::start(&[("PAYLOAD_LIMIT", "2MB")]);
    let c = reqwest::Client::new();
    let url = s.url("/predict");
    let big_file_guard = common::temp_file("ofa-big-", ".bin");
    let big_file = big_file_guard.path().to_path_buf();
    std::fs::write(&big_file, vec![7u8; 3 << 20]).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-F",
            &format!("image=@{}", big_file.display()),
            "-F",
            "text=x",
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "413", "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap()["error_type"],
        "payload_too_large"
    );
    let r = c
        .post(&url)
        .multipart(form(
            image("grace_hopper.jpg"),
            "a woman in a military uniform.",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get_status(&c, s.url("/readyz")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_opens_then_probes_the_model_itself_and_closes() {
    // Without a warm-up too: the probe pair does not depend on it.
    let s = Server::start(&[
        ("WARMUP", "false"),
        ("FAULT_INJECTION", "true"),
        ("BREAKER_FAILURES", "2"),
        ("BREAKER_COOLDOWN", "1"),
    ]);
    let c = reqwest::Client::new();
    let img = image("tiny_8x8.png");
    inject_faults(&c, &s, 2).await;
    for _ in 0..2 {
        let r = post_predict(&c, &s, img.clone()).await;
        expect_error(r, 500, "model_failure").await;
    }
    let r = post_predict(&c, &s, img.clone()).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 503, "breaker_open").await;
    let ready = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["breaker"], "open");
    assert_eq!(metric(&c, &s, "ofa_breaker_state").await, 1.0);
    assert_eq!(
        get_status(&c, s.url("/healthz")).await,
        200,
        "open is not dead"
    );
    // No request comes (a load balancer sends none to an unready replica): after the
    // cool-down the service probes its model itself and is ready again.
    wait_for_status(&c, s.url("/readyz"), 200, Duration::from_secs(5)).await;
    assert_eq!(metric(&c, &s, "ofa_breaker_state").await, 0.0);
    assert_eq!(post_predict(&c, &s, img).await.status(), 200);
    // The log says when and why it opened, and that it closed: once each.
    let breaker_events = || -> Vec<Value> {
        s.log_lines()
            .into_iter()
            .filter(|l| {
                l["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("breaker_"))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while breaker_events().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = breaker_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "breaker_opened");
    let error = events[0]["error"].as_str().unwrap();
    assert!(error.contains("injected fault"), "{error}");
    assert_eq!(events[0]["cooldown_s"], 1.0);
    assert_eq!(events[0]["failed_probes"], 0);
    assert_eq!(events[1]["event"], "breaker_closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_that_fails_every_probe_fails_liveness_until_one_succeeds() {
    let s = Server::start(&[
        ("FAULT_INJECTION", "true"),
        ("BREAKER_FAILURES", "1"),
        ("BREAKER_COOLDOWN", "1"),
        ("BREAKER_GIVE_UP", "2"),
    ]);
    let c = reqwest::Client::new();
    // One failed request opens the breaker; the service's own two probes fail as well.
    inject_faults(&c, &s, 3).await;
    let r = post_predict(&c, &s, image("tiny_8x8.png")).await;
    expect_error(r, 500, "model_failure").await;
    assert_eq!(get_status(&c, s.url("/healthz")).await, 200);
    wait_for_status(&c, s.url("/healthz"), 503, Duration::from_secs(5)).await;
    let health: Value = c
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "failing", "{health}");
    let why = health["reason"].as_str().unwrap();
    assert!(why.contains("2 probes in a row"), "{why}");
    let live = c.get(s.url("/v2/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 503, "KServe's liveness agrees");
    assert_eq!(get_status(&c, s.url("/readyz")).await, 503);
    // The faults are spent: the next probe succeeds and the service is alive and ready again.
    wait_for_status(&c, s.url("/readyz"), 200, Duration::from_secs(5)).await;
    assert_eq!(get_status(&c, s.url("/healthz")).await, 200);
    assert_eq!(get_status(&c, s.url("/v2/health/live")).await, 200);
}

/// `POST /predict` of `img` with the text "x".
async fn post_predict(c: &reqwest::Client, s: &Server, img: Vec<u8>) -> reqwest::Response {
    c.post(s.url("/predict"))
        .multipart(form(img, "x"))
        .send()
        .await
        .unwrap()
}

/// Arms the test-only fault switch: the next `n` batches fail.
async fn inject_faults(c: &reqwest::Client, s: &Server, n: u32) {
    let fault = c
        .post(s.url("/debug/fault"))
        .json(&serde_json::json!({"failures": n}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 200);
}

/// Polls `url` until it answers `status`.
async fn wait_for_status(c: &reqwest::Client, url: String, status: u16, within: Duration) {
    let t = std::time::Instant::now();
    loop {
        let got = get_status(c, url.clone()).await;
        if got == status {
            return;
        }
        assert!(
            t.elapsed() < within,
            "{url} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn disconnected_clients_are_dropped_before_batching() {
    let s = Server::start(&[("MAX_BATCH_SIZE", "1"), ("MAX_QUEUE", "64")]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let img = image("grace_hopper.jpg");
    let tasks = burst(
        &impatient,
        s.url("/predict"),
        &img,
        "x",
        16,
        |r, _| async move { r.is_err() },
    );
    let gave_up = futures_count(tasks).await;
    assert!(gave_up > 0);
    let c = reqwest::Client::new();
    // Wait for the queue to empty, then count what ran.
    for _ in 0..100 {
        if metric(&c, &s, "ofa_queue_depth").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled = metric(&c, &s, "ofa_rejections_total{reason=\"cancelled\"}").await;
    let ran = metric(&c, &s, "ofa_batch_size_count").await;
    assert!(cancelled > 0.0, "no request was dropped");
    assert!(ran + cancelled <= 16.0 + 0.5);
    assert_eq!(get_status(&c, s.url("/readyz")).await, 200);
}

async fn futures_count(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut n = 0;
    for t in tasks {
        n += usize::from(t.await.unwrap());
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut s = Server::start(&[
        ("MAX_BATCH_SIZE", "1"),
        ("DRAIN_DELAY", "1"),
        ("SHUTDOWN_TIMEOUT", "30"),
    ]);
    let c = reqwest::Client::new();
    let img = image("grace_hopper.jpg");
    let tasks = burst(&c, s.url("/predict"), &img, "x", 6, |r, _| async move {
        r.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while draining");
    assert_eq!(ready.json::<Value>().await.unwrap()["draining"], true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200, "in-flight work completes");
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                return (st, s.log_lines());
            }
            assert!(Instant::now() < deadline, "did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let events: Vec<&str> = status
        .1
        .iter()
        .filter_map(|l| l["event"].as_str())
        .collect();
    for e in ["draining", "stopped", "exit"] {
        assert!(events.contains(&e), "{e} not logged: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kserve_v2_routes_work_with_tritonclient() {
    let s = Server::start(&[]);
    let c = reqwest::Client::new();
    assert_eq!(get_status(&c, s.url("/v2/health/live")).await, 200);
    assert_eq!(get_status(&c, s.url("/v2/health/ready")).await, 200);
    assert_eq!(get_status(&c, s.url("/v2/models/other")).await, 404);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/triton_client.py");
    let host = s.base.trim_start_matches("http://").to_owned();
    let img = fixtures().join("golden/images/grace_hopper.jpg");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(host)
            .arg(&img)
            .arg(&img)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "tritonclient failed (CI installs it: pip install 'tritonclient[http]'): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["live"].clone(),
            v["ready"].clone(),
            v["model_ready"].clone()
        ),
        (true.into(), true.into(), true.into())
    );
    assert_eq!(v["metadata"]["inputs"][0]["name"], "image");
    for mode in ["binary", "json"] {
        let r = &v["results"][mode];
        assert_eq!(r["labels"], serde_json::json!(["Yes", "Yes"]), "{mode}");
        assert_eq!(r["id"], "req-1");
        let p: Vec<Vec<f64>> = serde_json::from_value(r["probabilities"].clone()).unwrap();
        assert_eq!(p.len(), 2);
        for row in p {
            for (got, want) in row.iter().zip([0.689_325_45, 0.157_062_16, 0.153_612_46]) {
                assert!((got - want).abs() < 1e-5, "{mode}: {row:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_pass_promtool() {
    let s = Server::start(&[]);
    let c = reqwest::Client::new();
    let r = c
        .post(s.url("/predict"))
        .multipart(form(image("tiny_8x8.png"), "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = c
        .post(s.url("/predict"))
        .multipart(form(b"nope".to_vec(), "x"))
        .send()
        .await
        .unwrap();
    let text = metrics_text(&c, &s).await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus; .ci/run installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The W3C WebDriver protocol over HTTP, enough to drive the page in Chromium.
struct WebDriver {
    child: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    /// Chromium's profile, removed after chromedriver is stopped (fields drop after `drop`).
    _profile: tempfile::TempDir,
}

impl WebDriver {
    async fn start() -> WebDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian packages chromium and chromium-driver; .ci/run installs them)");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("ofa-chromium-")
            .tempdir()
            .unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=900,1000", format!("--user-data-dir={}", profile.path().display())]}}}});
        let v: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        WebDriver {
            child,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.client.request(method.clone(), url);
        // Commands without parameters carry no body: chromedriver rejects `null`.
        let req = if body.is_null() { req } else { req.json(&body) };
        let r = req.send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        if v["value"].get("error").is_some() {
            eprintln!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_owned()
    }

    /// Loads `page`, picks `file` in `#image`, types `text` in `#text` and clicks `#submit`.
    async fn submit_form(&self, page: &str, file: &std::path::Path, text: &str) {
        let path = file.canonicalize().unwrap().display().to_string();
        self.fill_and_submit(page, &[("#image", path.as_str()), ("#text", text)])
            .await;
    }

    /// Loads `page`, types each value into its field (a file input takes a path) and clicks
    /// `#submit`.
    async fn fill_and_submit(&self, page: &str, fields: &[(&str, &str)]) {
        let post = reqwest::Method::POST;
        self.cmd(post.clone(), "/url", serde_json::json!({"url": page}))
            .await;
        for &(css, value) in fields {
            let e = self.find(css).await;
            self.cmd(
                post.clone(),
                &format!("/element/{e}/value"),
                serde_json::json!({"text": value}),
            )
            .await;
        }
        let button = self.find("#submit").await;
        self.cmd(
            post,
            &format!("/element/{button}/click"),
            serde_json::json!({}),
        )
        .await;
    }

    /// The element's text once it is non-empty (up to 10 s), else "".
    async fn wait_for_text(&self, css: &str) -> String {
        for _ in 0..100 {
            let t = self.text(css).await;
            if !t.is_empty() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        String::new()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{e}/text"),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_page_works_in_chromium() {
    let host = common::image_host::ImageHost::start();
    let allow = format!("127.0.0.1:{}", host.port);
    let s = Server::start(&[("IMAGE_URL_ALLOW", allow.as_str())]);
    let wd = WebDriver::start().await;
    let photo = fixtures().join("golden/images/grace_hopper.jpg");
    wd.submit_form(&s.url("/"), &photo, "a woman in a military uniform.")
        .await;
    let answer = wd.wait_for_text("#answer").await;
    if answer.is_empty() {
        let png = wd
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        if let Some(p) = png.as_str() {
            let _ = std::fs::write(
                std::env::temp_dir().join("ofa-web-failure.png"),
                base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .unwrap_or_default(),
            );
        }
    }
    assert_eq!(
        answer,
        "Yes (68.9%)",
        "error shown: {}",
        wd.text("#error").await
    );
    assert_eq!(wd.text("#row-yes .pct").await, "68.9%");
    assert_eq!(wd.text("#row-no .pct").await, "15.7%");
    assert_eq!(wd.text("#row-maybe .pct").await, "15.4%");
    // Keep a picture of what a user sees (for the docs; the file tool shows PNGs).
    if let Ok(dir) = std::env::var("OFA_SCREENSHOT_DIR") {
        let png = wd
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(PathBuf::from(dir).join("web-page.png"), bytes).unwrap();
    }
    // Sentences ranked against the uploaded image, with bars, as /rerank ranks them.
    let sentences = [
        "two dogs play in the snow.",
        "a woman in a military uniform.",
        "a man.",
    ];
    let api: Value = reqwest::Client::new()
        .post(s.url("/rerank"))
        .json(&serde_json::json!({
            "image": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&photo).unwrap()),
            "texts": sentences,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let best = &api["results"][0];
    let area = wd.find("#candidates").await;
    wd.cmd(
        reqwest::Method::POST,
        &format!("/element/{area}/value"),
        serde_json::json!({"text": sentences.join("\n")}),
    )
    .await;
    let button = wd.find("#rank").await;
    wd.cmd(
        reqwest::Method::POST,
        &format!("/element/{button}/click"),
        serde_json::json!({}),
    )
    .await;
    let first = wd.wait_for_text("#ranking .row").await;
    let pct = format!("{:.1}%", 100.0 * best["score"].as_f64().unwrap());
    assert!(
        first.contains(sentences[best["index"].as_u64().unwrap() as usize]) && first.contains(&pct),
        "top row {first:?}, API {best}"
    );
    let all = wd.text("#ranking").await;
    assert!(sentences.iter().all(|t| all.contains(t)), "{all}");
    // An image URL pasted instead of a file: the server fetches it, same answer.
    let url = host.url("grace_hopper.jpg");
    wd.fill_and_submit(
        &s.url("/"),
        &[
            ("#image-url", url.as_str()),
            ("#text", "a woman in a military uniform."),
        ],
    )
    .await;
    assert_eq!(
        wd.wait_for_text("#answer").await,
        "Yes (68.9%)",
        "error shown: {}",
        wd.text("#error").await
    );
    // A bad upload shows the server's message, not a blank page.
    let not_an_image = fixtures().join("tiny_ofa_ve/config.json");
    wd.submit_form(&s.url("/"), &not_an_image, "x").await;
    let err = wd.wait_for_text("#error").await;
    assert!(err.contains("unsupported format"), "{err}");
    let _ = wd.cmd(reqwest::Method::DELETE, "", Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_log_file_gets_a_line_for_every_request() {
    let log_dir_guard = tempfile::Builder::new()
        .prefix("ofa-serve-")
        .tempdir()
        .unwrap();
    let log_dir = log_dir_guard.path().to_path_buf();
    let log = log_dir.join("serve.log");
    let s = Server::start(&[("MAX_BATCH_SIZE", "1"), ("LOG_PATH", log.to_str().unwrap())]);
    let c = reqwest::Client::new();
    let img = image("grace_hopper.jpg");
    let tasks = burst(&c, s.url("/predict"), &img, "x", 8, |r, _| async move {
        r.unwrap().status().as_u16()
    });
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every LOG_PATH line is JSON"))
        .collect();
    let requests = lines
        .iter()
        .filter(|l| l["event"] == "request" && l["route"] == "/predict")
        .count();
    assert!(requests >= 8, "{requests} request lines in LOG_PATH");
    assert!(lines.iter().any(|l| l["event"] == "ready"));
}
