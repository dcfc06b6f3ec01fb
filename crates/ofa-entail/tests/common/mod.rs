//! The service under test: the real `ofa-entail serve` binary on an ephemeral loopback port.
#![allow(dead_code)]

#[path = "../../../ofa-model/tests/common/tiny_bin.rs"]
mod tiny_bin;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod catalogue;
pub mod image_host;
pub mod jobs;
pub mod queue_cli;
pub mod rabbit;
#[path = "../../../ofa-access/tests/common/redis_server.rs"]
pub mod redis_server;

/// The repo's `fixtures/`, with the tiny model's `pytorch_model.bin` rebuilt if missing.
pub fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    static BIN: std::sync::Once = std::sync::Once::new();
    BIN.call_once(|| tiny_bin::ensure(&dir.join("tiny_ofa_ve")));
    dir
}

pub fn image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("golden/images").join(name)).unwrap()
}

/// One server at a time: each test measures one service on a 2-core machine, and parallel
/// servers would make their timings (deadlines, overload, batching) meaningless.
static SERIAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds [`SERIAL`] until dropped; unlike a `MutexGuard` it may move between threads.
pub struct SerialGuard;

impl SerialGuard {
    fn acquire() -> SerialGuard {
        use std::sync::atomic::Ordering;
        while SERIAL
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        SerialGuard
    }
}

impl Drop for SerialGuard {
    fn drop(&mut self) {
        SERIAL.store(false, std::sync::atomic::Ordering::Release);
    }
}

pub struct Server {
    _serial: Option<SerialGuard>,
    pub child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `ofa-entail serve` on an ephemeral port and waits until it is ready.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_without(env, &[])
    }

    /// As [`Server::start`], with the variables in `unset` removed (`MODEL_DIR`, to fetch by id).
    pub fn start_without(env: &[(&str, &str)], unset: &[&str]) -> Server {
        Server::launch(env, unset, None)
    }

    /// A second replica beside `first` (which holds the one-server-at-a-time turn).
    pub fn start_beside(_first: &Server, env: &[(&str, &str)]) -> Server {
        Server::launch_as(None, env, &[], None)
    }

    /// As [`Server::start`], under a soft limit of `open_files` file descriptors.
    pub fn start_with_open_files(env: &[(&str, &str)], open_files: u32) -> Server {
        Server::launch(env, &[], Some(open_files))
    }

    fn launch(env: &[(&str, &str)], unset: &[&str], open_files: Option<u32>) -> Server {
        Server::launch_as(Some(SerialGuard::acquire()), env, unset, open_files)
    }

    fn launch_as(
        serial: Option<SerialGuard>,
        env: &[(&str, &str)],
        unset: &[&str],
        open_files: Option<u32>,
    ) -> Server {
        let bin = env!("CARGO_BIN_EXE_ofa-entail");
        let mut cmd = match open_files {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" serve"), bin]);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.arg("serve");
                c
            }
        };
        cmd.env("MODEL_DIR", fixtures().join("tiny_ofa_ve"))
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RATE_LIMIT", "off")
            .env("DRAIN_DELAY", "0.3")
            .env("MAX_BATCH_SIZE", "4")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in unset {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("start the server");
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "starting" {
                        let _ = tx.send(v["listen"].as_str().unwrap_or_default().to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server announces its address");
        let server = Server {
            _serial: serial,
            child,
            base: format!("http://{addr}"),
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = blocking_status(&format!("{}/readyz", server.base)) {
                if r == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_lines(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The log lines once `ready` holds for them, or as they are after 5 s. Another thread
    /// reads them from the server's output, so a request's line may arrive a moment after its
    /// response.
    pub fn log_lines_once(&self, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.log_lines();
            if ready(&lines) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Minimal blocking GET for the readiness poll (no runtime needed).
pub fn blocking_status(url: &str) -> std::io::Result<u16> {
    {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap();
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }
}

/// A `/predict` form as `curl -F image=@x -F text=...` sends it.
pub fn form(img: Vec<u8>, text: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(img).file_name("x.jpg"),
        )
        .text("text", text.to_owned())
}

/// The `/metrics` page as text.
pub async fn metrics_text(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A sample's value on `/metrics` (see [`metric_value`]).
pub async fn metric(c: &reqwest::Client, s: &Server, line_prefix: &str) -> f64 {
    metric_value(&metrics_text(c, s).await, line_prefix)
}

/// The sample's value; a labelled sample not yet recorded reads 0, but its family must be
/// exported, so a renamed or missing metric fails the test.
pub fn metric_value(text: &str, line_prefix: &str) -> f64 {
    let sample = |l: &&str| {
        l.strip_prefix(line_prefix).is_some_and(|rest| {
            rest.starts_with(' ') || (!line_prefix.contains('{') && rest.starts_with('{'))
        })
    };
    if let Some(line) = text.lines().find(sample) {
        return line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unparsable sample {line:?}"));
    }
    let name = line_prefix.split('{').next().unwrap_or(line_prefix);
    let family = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    assert!(
        line_prefix.contains('{') && text.contains(&format!("# TYPE {family} ")),
        "metric {line_prefix:?} is not exported:\n{text}"
    );
    0.0
}

/// Environment variables a command reads, from its `--help`.
pub fn env_vars_read_by(command: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .args([command, "--help"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next().map(str::to_owned))
        .collect()
}

/// Runs a tool the tests drive; it must exist and succeed.
pub fn tool(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch file named `{prefix}…{suffix}`, removed when dropped (whether the test passes
/// or not).
pub fn temp_file(prefix: &str, suffix: &str) -> tempfile::NamedTempFile {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile()
        .unwrap()
}

/// `kubernetes-validate --strict` on rendered manifests.
pub fn validate_strictly(name: &str, rendered: &str) {
    let file_guard = temp_file(&format!("ofa-render-{name}-"), ".yaml");
    let file = file_guard.path().to_path_buf();
    std::fs::write(&file, rendered).unwrap();
    tool(
        Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(&file),
        "kubernetes-validate (PyPI)",
    );
}
