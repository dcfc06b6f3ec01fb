//! The fetcher against real image servers of the test's own on 127.0.0.1, written from the red
//! team's attacks: every spelling of an internal address is refused without a connection (each
//! server counts the connections it accepts), an allowed server is reachable only on its
//! allowed port, a redirect to a forbidden address is refused before it is followed, and a
//! FIFO under the image root is refused without blocking.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ofa_fetch::{read_under, AllowList, FetchError, UrlFetcher, UrlSettings};

/// A server on 127.0.0.1: `/ok.png` answers 10 bytes, `/big` 2 KB, `/to?PORT` a 302 to that
/// port on 127.0.0.1, `/loop` a 302 to itself, anything else 404. Counts connections.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
}

fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut auth = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                auth |= h.to_ascii_lowercase().starts_with("authorization");
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, extra, body) = match path.as_str() {
                _ if auth => ("400 Credentials Sent", String::new(), Vec::new()),
                "/ok.png" => ("200 OK", String::new(), b"0123456789".to_vec()),
                "/big" => ("200 OK", String::new(), vec![7u8; 2048]),
                "/loop" => ("302 Found", "Location: /loop\r\n".into(), Vec::new()),
                p if p.starts_with("/to?") => (
                    "302 Found",
                    format!("Location: {}\r\n", &p[4..]),
                    Vec::new(),
                ),
                _ => ("404 Not Found", String::new(), b"no".to_vec()),
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    Server { port, connections }
}

fn fetcher(allow: &str) -> UrlFetcher {
    UrlFetcher::new(UrlSettings {
        allow: AllowList::parse(allow).unwrap(),
        max_bytes: 1024,
        timeout: Duration::from_secs(5),
        max_redirects: 3,
    })
    .unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn by_default_no_spelling_of_loopback_is_connected_to() {
    let s = server();
    let f = fetcher("");
    let p = s.port;
    for url in [
        format!("http://127.0.0.1:{p}/ok.png"),
        format!("http://2130706433:{p}/ok.png"),
        format!("http://0177.0.0.1:{p}/ok.png"),
        format!("http://0x7f.1:{p}/ok.png"),
        format!("http://127.1:{p}/ok.png"),
        format!("http://0:{p}/ok.png"),
        format!("http://[::ffff:127.0.0.1]:{p}/ok.png"),
        format!("http://localhost:{p}/ok.png"),
        format!("http://LocalHost:{p}/ok.png"),
        format!("http://user:pass@127.0.0.1:{p}/ok.png"),
    ] {
        let e = f.get(&url, soon()).await.unwrap_err();
        assert_eq!(e.error_type().as_str(), "image_url_forbidden", "{url}: {e}");
        assert!(!e.is_transient());
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 0, "nothing connected");
}

#[tokio::test]
async fn an_allowed_server_is_reached_only_on_its_port() {
    let s = server();
    let other = server();
    let f = fetcher(&format!("127.0.0.1:{}", s.port));
    let body = f
        .get(&format!("http://127.0.0.1:{}/ok.png", s.port), soon())
        .await
        .unwrap();
    assert_eq!(&body[..], b"0123456789");
    let e = f
        .get(&format!("http://127.0.0.1:{}/ok.png", other.port), soon())
        .await
        .unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_url_forbidden", "{e}");
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);
    // A name that resolves there is not the listed address.
    let e = f
        .get(&format!("http://localhost:{}/ok.png", s.port), soon())
        .await
        .unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_url_forbidden", "{e}");
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_listed_name_is_resolved_once_and_its_address_connected_to() {
    let s = server();
    let f = fetcher(&format!("localhost:{}", s.port));
    let body = f
        .get(&format!("http://localhost:{}/ok.png", s.port), soon())
        .await
        .unwrap();
    assert_eq!(body.len(), 10);
}

#[tokio::test]
async fn a_redirect_to_a_forbidden_address_is_refused_before_it_is_followed() {
    let allowed = server();
    let target = server();
    let f = fetcher(&format!("127.0.0.1:{}", allowed.port));
    let url = format!(
        "http://127.0.0.1:{}/to?http://127.0.0.1:{}/ok.png",
        allowed.port, target.port
    );
    let e = f.get(&url, soon()).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_url_forbidden", "{e}");
    assert!(e.to_string().contains("redirect"), "{e}");
    assert_eq!(target.connections.load(Ordering::SeqCst), 0);
    // A redirect within what is allowed is followed, and counted.
    let ok = format!(
        "http://127.0.0.1:{}/to?http://127.0.0.1:{}/ok.png",
        allowed.port, allowed.port
    );
    assert_eq!(f.get(&ok, soon()).await.unwrap().len(), 10);
    let e = f
        .get(&format!("http://127.0.0.1:{}/loop", allowed.port), soon())
        .await
        .unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_url_failed", "{e}");
    assert!(e.to_string().contains("more than 3 redirects"), "{e}");
}

#[tokio::test]
async fn failures_are_classified_without_telling_ports_apart() {
    let s = server();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = fetcher(&format!("127.0.0.1:{}, 127.0.0.1:{closed}", s.port));
    let big = f
        .get(&format!("http://127.0.0.1:{}/big", s.port), soon())
        .await
        .unwrap_err();
    assert!(matches!(big, FetchError::TooLarge(_)), "{big}");
    let gone = f
        .get(&format!("http://127.0.0.1:{}/nope", s.port), soon())
        .await
        .unwrap_err();
    assert_eq!(gone.error_type().as_str(), "image_url_failed");
    let refused = f
        .get(&format!("http://127.0.0.1:{closed}/x"), soon())
        .await
        .unwrap_err();
    assert_eq!(refused.error_type().as_str(), "image_fetch_failed");
    assert!(refused.is_transient());
    let text = refused.to_string();
    assert!(!text.to_lowercase().contains("refused"), "{text}");
    // A signed URL's token stays out of messages.
    let e = f
        .get(
            &format!("http://127.0.0.1:{}/nope?X-Signature=secret", s.port),
            soon(),
        )
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("secret"), "{e}");
    let e = f.get("not a url", soon()).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "invalid_image_url");
    let e = f.get("ftp://example.com/a.png", soon()).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_url_forbidden");
}

#[tokio::test]
async fn a_silent_server_is_bounded_by_the_deadline() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts and never answers.
    let held = std::thread::spawn(move || {
        let s = l.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let f = fetcher(&format!("127.0.0.1:{port}"));
    let t = Instant::now();
    let e = f
        .get(
            &format!("http://127.0.0.1:{port}/x"),
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(e.error_type().as_str(), "image_fetch_failed", "{e}");
    held.join().unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn only_regular_files_under_the_root_are_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), b"png bytes").unwrap();
    std::fs::write(dir.path().join("big.png"), vec![0u8; 4096]).unwrap();
    let fifo = dir.path().join("pipe.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.png")).unwrap();
    std::os::unix::fs::symlink(&fifo, dir.path().join("link-to-pipe.png")).unwrap();
    let root = Some(dir.path());
    assert_eq!(
        &read_under(root, "a.png", 1024).await.unwrap()[..],
        b"png bytes"
    );
    let t = Instant::now();
    for p in ["pipe.png", "link-to-pipe.png"] {
        let e = read_under(root, p, 1024).await.unwrap_err();
        assert_eq!(e.error_type().as_str(), "image_path_refused", "{p}: {e}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "no FIFO blocks");
    for p in ["zero.png", "../x.png", "/etc/hostname"] {
        let e = read_under(root, p, 1024).await.unwrap_err();
        assert_eq!(e.error_type().as_str(), "image_path_refused", "{p}: {e}");
    }
    let e = read_under(root, "big.png", 1024).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "payload_too_large");
    let e = read_under(root, "missing.png", 1024).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_not_found");
    let e = read_under(None, "a.png", 1024).await.unwrap_err();
    assert_eq!(e.error_type().as_str(), "image_path_refused");
}
