//! The hardening findings, each as a regression test against the real binary on loopback:
//! decompression bombs, slow and silent connections, connection floods, requests that can
//! never succeed, and one error shape everywhere.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn bomb(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("bombs").join(name)).unwrap()
}

fn connect(s: &Server) -> TcpStream {
    let addr = s.base.strip_prefix("http://").unwrap();
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Reads until the server closes the connection; how long that took, with what was read.
fn until_closed(c: &mut TcpStream) -> (Duration, String) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (t.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn body_of(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn bombs_never_crash_the_process_and_memory_stays_bounded() {
    let s = Server::start(&[
        ("PREPROCESS_THREADS", "2"),
        ("MAX_QUEUE", "16"),
        ("REQUEST_TIMEOUT", "120"),
    ]);
    let c = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (name, want) in [
        ("tall_1x100000000_1bit.png", 413),
        ("tall_1x3000000_grey.png", 413),
        ("wide_100000000x1_1bit.png", 413),
        ("square_13000x13000_1bit.png", 200),
        ("rgba_12000x12000.png", 200),
    ] {
        for _ in 0..3 {
            let (c, url, img) = (c.clone(), s.url("/predict"), bomb(name));
            tasks.push(tokio::spawn(async move {
                let r = c
                    .post(url)
                    .multipart(form(img, "a black square."))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                (name, want, status, body)
            }));
        }
    }
    for t in tasks {
        let (name, want, status, body) = t.await.unwrap();
        assert_eq!(status, want, "{name}: {body}");
        if want == 413 {
            assert_eq!(body["error_type"], "image_too_large", "{name}: {body}");
            assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
        }
    }
    assert_eq!(blocking_status(&s.url("/healthz")).unwrap(), 200);
    let peak = peak_rss(s.pid());
    // Two decodes at a time, each at most ~0.7 GB (13000² grey as RGB), plus the tiny model.
    assert!(peak < 2_500 << 20, "peak resident memory {} MB", peak >> 20);

    // A batch of bombs is refused at its first bad item, not decoded one after another.
    let b64 = base64::engine::general_purpose::STANDARD.encode(bomb("tall_1x3000000_grey.png"));
    let items: Vec<Value> = (0..8).map(|_| json!({"image": b64, "text": "x"})).collect();
    let t = Instant::now();
    let r = c
        .post(s.url("/predict/batch"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "image_too_large");
    assert!(
        body["error"].as_str().unwrap().starts_with("item "),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A batch larger than the queue can never run: 413 at once, not 429 forever.
    let small = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let items: Vec<Value> = (0..17)
        .map(|_| json!({"image": small, "text": "x"}))
        .collect();
    let r = c
        .post(s.url("/predict/batch"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.headers().get("retry-after").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "batch_too_large", "{body}");
    assert!(body["error"].as_str().unwrap().contains("16"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_have_deadlines_and_slow_uploads_hold_no_slot() {
    let s = Server::start(&[
        ("HEADER_TIMEOUT", "1"),
        ("BODY_TIMEOUT", "1"),
        ("KEEP_ALIVE_TIMEOUT", "1"),
        ("MAX_CONCURRENCY", "1"),
    ]);
    // Silent: closed after the header timeout.
    let mut silent = connect(&s);
    let (took, _) = until_closed(&mut silent);
    assert!(
        took < Duration::from_secs(4),
        "silent connection open {took:?}"
    );

    // Headers a byte at a time: closed after the header timeout although bytes keep coming.
    let mut trickle = connect(&s);
    let t = Instant::now();
    let mut closed = false;
    for b in b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        trickle.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let ended = matches!(trickle.read(&mut probe), Ok(0));
        trickle.set_nonblocking(false).unwrap();
        if ended {
            closed = true;
            break;
        }
    }
    assert!(closed, "trickled headers kept the connection open");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Content-Length 100, 2 bytes sent: 408 after the body timeout, and meanwhile the only
    // concurrency slot is free for a good client.
    let mut short = connect(&s);
    write!(
        short,
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{}}"
    )
    .unwrap();
    let good = reqwest::Client::new()
        .post(s.url("/predict"))
        .multipart(form(image("tiny_8x8.png"), "a photo."))
        .send()
        .await
        .unwrap();
    assert_eq!(
        good.status(),
        200,
        "a trickling upload held the concurrency slot"
    );
    let (took, response) = until_closed(&mut short);
    assert_eq!(status_of(&response), 408, "{response}");
    assert_eq!(body_of(&response)["error_type"], "request_timeout");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // Idle keep-alive: closed after the keep-alive timeout.
    let mut idle = connect(&s);
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&first[..n])), 200);
    let (took, _) = until_closed(&mut idle);
    assert!(
        took < Duration::from_secs(4),
        "idle keep-alive open {took:?}"
    );
    let metrics = metrics_text(&reqwest::Client::new(), &s).await;
    assert!(
        metrics.contains("ofa_rejections_total{reason=\"request_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_cannot_starve_the_probes() {
    // 256 descriptors: the cap lands below it, and the oldest idle connections make room.
    let s = Server::start_with_open_files(
        &[("HEADER_TIMEOUT", "60"), ("MAX_CONNECTIONS", "5000")],
        256,
    );
    let info: Value = reqwest::get(s.url("/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cap = info["limits"]["max_connections"].as_u64().unwrap();
    assert!(
        cap < 256,
        "max_connections {cap} not under the descriptor limit"
    );
    let flood: Vec<TcpStream> = (0..400).map(|_| connect(&s)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let t = Instant::now();
        assert_eq!(blocking_status(&s.url(path)).unwrap(), 200, "{path}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            t.elapsed()
        );
    }
    let r = reqwest::Client::new()
        .post(s.url("/predict"))
        .multipart(form(image("tiny_8x8.png"), "a photo."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(flood);
}

/// Sends raw bytes and reads the whole answer.
fn raw(s: &Server, request: &str) -> (Duration, String) {
    let mut c = connect(s);
    c.write_all(request.as_bytes()).unwrap();
    until_closed(&mut c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hopeless_requests_are_refused_at_once_with_one_error_shape() {
    let s = Server::start(&[("PAYLOAD_LIMIT", "1MB")]);
    for path in ["/predict", "/predict/batch", "/v2/models/ofa-entail/infer"] {
        let (took, r) = raw(
            &s,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status_of(&r), 413, "{path}: {r}");
        assert_eq!(body_of(&r)["error_type"], "payload_too_large", "{path}");
        assert!(took < Duration::from_secs(2), "{path}: {took:?}");
    }
    let c = reqwest::Client::new();
    let r = c.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "not_found");
    let r = c.get(s.url("/predict")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "method_not_allowed");
    // A KServe body over the limit, sent without a declared length: JSON too, and counted.
    let big = vec![b' '; 1_100_000];
    let r = c
        .post(s.url("/v2/models/ofa-entail/infer"))
        .body(reqwest::Body::wrap_stream(futures_stream(big)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "payload_too_large");
    // Line-wrapped base64, as `base64 FILE` prints it.
    let b64 = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    let r = c
        .post(s.url("/predict"))
        .json(&json!({"image": wrapped, "text": "a photo."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = metrics_text(&c, &s).await;
    for reason in ["payload_too_large", "not_found", "method_not_allowed"] {
        assert!(
            metrics.contains(&format!("ofa_rejections_total{{reason=\"{reason}\"}}")),
            "{reason} not counted"
        );
    }
}

/// A body of unknown length (chunked), in 64 KB pieces.
fn futures_stream(
    data: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65536).map(|c| Ok(c.to_vec())).collect();
    Iter(chunks.into_iter())
}

struct Iter<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_in_flight_share_one_upload_budget() {
    let s = Server::start(&[
        ("PAYLOAD_LIMIT", "1MB"),
        ("UPLOAD_MEMORY", "3MB"),
        ("BODY_TIMEOUT", "2"),
    ]);
    // A 1 MB body counts 3 MB (body, parsed form, decoded image): the whole budget.
    let mut slow = connect(&s);
    write!(
        slow,
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = reqwest::Client::new();
    let send = || {
        c.post(s.url("/predict"))
            .multipart(form(image("tiny_8x8.png"), "a photo."))
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "too_many_concurrent", "{body}");
    assert!(body["error"].as_str().unwrap().contains("3 MB"), "{body}");
    let (_, response) = until_closed(&mut slow);
    assert_eq!(status_of(&response), 408, "{response}");
    assert_eq!(send().await.unwrap().status(), 200, "the budget came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_handler_is_that_requests_500() {
    let s = Server::start(&[("FAULT_INJECTION", "true")]);
    let c = reqwest::Client::new();
    let r = c
        .post(s.url("/debug/fault"))
        .json(&json!({"panic": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_type"], "internal");
    let r = c
        .post(s.url("/predict"))
        .multipart(form(image("tiny_8x8.png"), "a photo."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the process and its engine go on");
    assert!(s
        .log_lines()
        .iter()
        .any(|l| l["event"] == "request_panicked"));
    let metrics = metrics_text(&c, &s).await;
    assert!(
        metrics.contains("ofa_rejections_total{reason=\"internal\"} 1"),
        "{metrics}"
    );
}

/// JSON made of many tiny values (a 10 MB `[{},{},…]`, a 10 MB list of empty texts, a 10 MB
/// KServe data list) is counted before anything is built from it: refused, and the process's
/// peak memory grows by a small multiple of the body, not by the hundreds of megabytes the
/// parsed values would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tiny_json_values_cost_a_small_multiple_of_the_body() {
    let s = Server::start(&[("PAYLOAD_LIMIT", "12MB")]);
    let c = reqwest::Client::new();
    let before = peak_rss(s.pid());
    let ten_mb = 10 << 20;
    let list = |item: &str| {
        let n = ten_mb / (item.len() + 1);
        format!("[{}{item}]", format!("{item},").repeat(n - 1))
    };
    let small = base64::engine::general_purpose::STANDARD.encode(image("tiny_8x8.png"));
    let cases = [
        ("/predict/batch", list("{}"), 413, "batch_too_large"),
        (
            "/rerank",
            format!(r#"{{"image": "{small}", "texts": {}}}"#, list(r#""""#)),
            400,
            "invalid_json",
        ),
        (
            "/v2/models/ofa-entail/infer",
            format!(
                r#"{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [1], "data": {}}}]}}"#,
                list("0")
            ),
            400,
            "invalid_json",
        ),
    ];
    for (route, body, status, kind) in cases {
        assert!(body.len() > 9 << 20);
        let r = c
            .post(s.url(route))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{route}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_type"], kind, "{route}: {v}");
    }
    let growth = peak_rss(s.pid()).saturating_sub(before);
    assert!(
        growth < 6 * ten_mb as u64,
        "peak resident memory grew {} MB for 10 MB bodies",
        growth >> 20
    );
    assert_eq!(blocking_status(&s.url("/healthz")).unwrap(), 200);
}

/// `LOG_FORMAT=text` quotes and escapes what a client sent: a request id cannot add fields.
#[test]
fn text_logs_cannot_be_forged_through_a_header() {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("serve")
        .env("MODEL_DIR", fixtures().join("tiny_ofa_ve"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "text")
        .env("DRAIN_DELAY", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while blocking_status(&format!("{base}/readyz")).ok() != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: abc consumer=admin status=200\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (_, response) = until_closed(&mut c);
    assert_eq!(status_of(&response), 200);
    // Stopped as an orchestrator stops it, so the log's writer empties its queue first.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let line = lines
        .iter()
        .find(|l| l.contains("event=request") && l.contains("abc"))
        .unwrap_or_else(|| panic!("no request line: {lines:?}"));
    assert!(
        line.contains(r#"request_id="abc consumer=admin status=200""#),
        "{line}"
    );
    let rest = line.replace(r#"request_id="abc consumer=admin status=200""#, "");
    assert!(!rest.contains("consumer="), "{line}");
    assert_eq!(rest.matches("status=").count(), 1, "{line}");
}
