//! What the job commands' tests share: an image host on loopback, scratch directories, the
//! results file, and `predict`'s answer to compare with.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::{fixtures, image};

/// A loopback image host: `/grace.jpg` (200), `/flaky.png` (500, counted), anything else 404.
pub fn image_host() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let flaky = Arc::new(AtomicUsize::new(0));
    let count = flaky.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let (status, body) = match path.as_str() {
                "/grace.jpg" => ("200 OK", image("grace_hopper.jpg")),
                "/flaky.png" => {
                    count.fetch_add(1, Ordering::SeqCst);
                    ("500 Internal Server Error", b"try later".to_vec())
                }
                _ => ("404 Not Found", b"no".to_vec()),
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (base, flaky)
}

pub fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ofa-jobs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn results(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

pub fn predict(image_name: &str, text: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .arg("predict")
        .arg("--model-dir")
        .arg(fixtures().join("tiny_ofa_ve"))
        .arg("--image")
        .arg(fixtures().join("golden/images").join(image_name))
        .args(["--text", text])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}
