//! A product catalogue's image server on loopback, as a CDN behaves: each image with an
//! `ETag` (the digest of its bytes) and a `Last-Modified`, `304 Not Modified` to a request
//! whose `If-None-Match` names the current version, an optional delay per request, images
//! replaced while it runs, and counts of what it served.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Served {
    /// Requests read, counted before the delay.
    pub requests: AtomicUsize,
    pub bodies: AtomicUsize,
    pub not_modified: AtomicUsize,
    pub conditional: AtomicUsize,
}

pub struct Catalogue {
    base: String,
    images: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    pub served: Arc<Served>,
}

fn etag(body: &[u8]) -> String {
    let d = Sha256::digest(body);
    format!(
        "\"{}\"",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl Catalogue {
    /// Serves what [`Catalogue::put`] adds, each answer after `delay`, one thread per connection.
    pub fn start(delay: Duration) -> Catalogue {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let images: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served: Arc<Served> = Arc::default();
        let (shared, counts) = (images.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (images, served) = (shared.clone(), counts.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut if_none_match = None;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = h.split_once(':') {
                            if name.eq_ignore_ascii_case("if-none-match") {
                                if_none_match = Some(value.trim().to_owned());
                            }
                        }
                    }
                    served.requests.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    let body = images.lock().unwrap().get(&path).cloned();
                    let mut s = stream;
                    let Some(body) = body else {
                        let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    };
                    let tag = etag(&body);
                    let head = format!(
                        "ETag: {tag}\r\nLast-Modified: Sun, 06 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n"
                    );
                    if if_none_match.is_some() {
                        served.conditional.fetch_add(1, Ordering::SeqCst);
                    }
                    if if_none_match.as_deref() == Some(tag.as_str()) {
                        served.not_modified.fetch_add(1, Ordering::SeqCst);
                        let _ = write!(s, "HTTP/1.1 304 Not Modified\r\n{head}\r\n");
                    } else {
                        served.bodies.fetch_add(1, Ordering::SeqCst);
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{head}\r\n",
                            body.len()
                        );
                        let _ = s.write_all(&body);
                    }
                });
            }
        });
        Catalogue {
            base,
            images,
            served,
        }
    }

    /// Adds or replaces the image at `/name`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.images
            .lock()
            .unwrap()
            .insert(format!("/{name}"), bytes);
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// `host:port`, for IMAGE_URL_ALLOW.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn reset_counts(&self) {
        for c in [
            &self.served.bodies,
            &self.served.not_modified,
            &self.served.conditional,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }
}
