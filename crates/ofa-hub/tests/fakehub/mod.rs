//! A small imitation of the ModelScope hub on loopback ports, with the real API shapes: the file
//! listing envelope, raw file bytes with Range, 302 to a blob host for LFS files, private repos,
//! unknown revisions, and switchable faults. It records every request and connection.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const TINY: &str = "iic/ofa_tiny_ve";
pub const PRIVATE: &str = "iic/ofa_tiny_private";
pub const TOKEN: &str = "ms-good-token";

#[derive(Clone, Debug)]
pub struct Req {
    pub port: u16,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
}

/// Faults for one repo path.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Send the full Content-Length, then only this many bytes, then close (once).
    pub drop_after: Option<usize>,
    /// Flip one byte of every response body (the listing keeps the true hash).
    pub corrupt: bool,
    /// Answer this status this many times first, with `Retry-After` if given.
    pub status: Option<(u16, usize, Option<u32>)>,
    /// Answer a ranged request with 200 and a correct Content-Range.
    pub range_as_200: bool,
    /// Ignore Range: 200, the whole body, no Content-Range.
    pub ignore_range: bool,
    /// List this size instead of the real one.
    pub listed_size: Option<u64>,
    /// Pause between 64 KiB chunks.
    pub chunk_delay: Option<Duration>,
    /// List the file without its Sha256 (the client must use X-Linked-ETag).
    pub hide_sha: bool,
}

#[derive(Default)]
struct Repo {
    private: bool,
    /// revision → path → bytes
    revisions: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    faults: BTreeMap<String, Fault>,
    /// Status for a private repo without a valid token: 401, 403 or 404.
    deny_status: u16,
    /// 302 every file above this size to the blob host, as the hub does for LFS files.
    lfs_over: Option<usize>,
    requests: Vec<Req>,
    connections: usize,
}

/// A scratch directory (a cache, a model directory), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ofa-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct FakeHub {
    pub url: String,
    pub blob_url: String,
    state: Arc<Mutex<State>>,
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The files of the tiny model as a ModelScope repo holds them (weights as pytorch_model.bin,
/// which the caller's fixture helper rebuilds from the safetensors file),
/// plus a README, `.gitattributes` and a nested file.
pub fn tiny_repo_files(fixture: &Path, readme: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in [
        "configuration.json",
        "config.json",
        "answer2label.json",
        "vocab.json",
        "merges.txt",
        "pytorch_model.bin",
    ] {
        files.insert(name.to_string(), std::fs::read(fixture.join(name)).unwrap());
    }
    files.insert("README.md".into(), readme.as_bytes().to_vec());
    files.insert(
        ".gitattributes".into(),
        b"*.bin filter=lfs diff=lfs merge=lfs -text\n".to_vec(),
    );
    files.insert("examples/note.txt".into(), b"nested file\n".to_vec());
    files
}

impl FakeHub {
    /// Serves `TINY` (revisions `master` and `v1.0.0`, whose READMEs differ) and the private
    /// `PRIVATE` from the tiny model fixture.
    pub fn start(fixture: &Path) -> FakeHub {
        let hub = FakeHub::empty();
        hub.add(
            TINY,
            "master",
            tiny_repo_files(fixture, "# tiny OFA, master\n"),
            false,
        );
        hub.add(
            TINY,
            "v1.0.0",
            tiny_repo_files(fixture, "# tiny OFA, v1.0.0\n"),
            false,
        );
        hub.add(
            PRIVATE,
            "master",
            tiny_repo_files(fixture, "# private\n"),
            true,
        );
        hub
    }

    pub fn empty() -> FakeHub {
        let state = Arc::new(Mutex::new(State {
            deny_status: 404,
            ..State::default()
        }));
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let blob = TcpListener::bind("127.0.0.1:0").unwrap();
        // A different host name for the blob host, so a client must drop credentials there.
        let blob_url = format!("http://localhost:{}", blob.local_addr().unwrap().port());
        let url = format!("http://127.0.0.1:{}", api.local_addr().unwrap().port());
        for listener in [api, blob] {
            let state = state.clone();
            let blob_url = blob_url.clone();
            std::thread::spawn(move || {
                let port = listener.local_addr().unwrap().port();
                for conn in listener.incoming().flatten() {
                    state.lock().unwrap().connections += 1;
                    let state = state.clone();
                    let blob_url = blob_url.clone();
                    std::thread::spawn(move || handle(conn, port, &state, &blob_url));
                }
            });
        }
        FakeHub {
            url,
            blob_url,
            state,
        }
    }

    pub fn add(&self, id: &str, rev: &str, files: BTreeMap<String, Vec<u8>>, private: bool) {
        let mut s = self.state.lock().unwrap();
        let repo = s.repos.entry(id.to_string()).or_default();
        repo.private = private;
        repo.revisions.insert(rev.to_string(), files);
    }

    pub fn file(&self, id: &str, rev: &str, path: &str) -> Vec<u8> {
        self.state.lock().unwrap().repos[id].revisions[rev][path].clone()
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn deny_with(&self, status: u16) {
        self.state.lock().unwrap().deny_status = status;
    }

    pub fn lfs_over(&self, size: Option<usize>) {
        self.state.lock().unwrap().lfs_over = size;
    }

    pub fn requests(&self) -> Vec<Req> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests for one file (API and blob host).
    pub fn file_requests(&self, path: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.query.get("FilePath").map(String::as_str) == Some(path)
                    || r.path.ends_with(&format!("/{path}"))
            })
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn reset_log(&self) {
        let mut s = self.state.lock().unwrap();
        s.requests.clear();
        s.connections = 0;
    }
}

struct Request {
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    Some(Request {
        path: path.to_string(),
        query,
        headers,
    })
}

fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn envelope_error(conn: &mut TcpStream, status: u16, code: u64, message: &str) {
    let body = serde_json::json!({
        "Code": code, "Message": message, "RequestId": "fake-request-1", "Success": false
    });
    respond(
        conn,
        status,
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
    );
}

fn authorized(headers: &BTreeMap<String, String>) -> bool {
    headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"))
        || headers.get("cookie").is_some_and(|c| {
            c.split(';')
                .any(|p| p.trim() == format!("m_session_id={TOKEN}"))
        })
}

fn handle(mut conn: TcpStream, port: u16, state: &Mutex<State>, blob_url: &str) {
    let Some(req) = read_request(&conn) else {
        return;
    };
    state.lock().unwrap().requests.push(Req {
        port,
        path: req.path.clone(),
        query: req.query.clone(),
        range: req.headers.get("range").cloned(),
        authorization: req.headers.get("authorization").cloned(),
        cookie: req.headers.get("cookie").cloned(),
    });
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "models", owner, name, "repo", "files"] => {
            let id = format!("{owner}/{name}");
            listing(&mut conn, state, &id, &req)
        }
        ["api", "v1", "models", owner, name, "repo"] => {
            let id = format!("{owner}/{name}");
            let rev = req
                .query
                .get("Revision")
                .cloned()
                .unwrap_or("master".into());
            let path = req.query.get("FilePath").cloned().unwrap_or_default();
            file(
                &mut conn,
                state,
                &id,
                &rev,
                &path,
                &req.headers,
                Some(blob_url),
            )
        }
        ["blob", owner, name, rev, rest @ ..] => {
            let id = format!("{owner}/{name}");
            file(
                &mut conn,
                state,
                &id,
                rev,
                &rest.join("/"),
                &req.headers,
                None,
            )
        }
        _ => envelope_error(&mut conn, 404, 404, "no such route"),
    }
}

fn listing(conn: &mut TcpStream, state: &Mutex<State>, id: &str, req: &Request) {
    let s = state.lock().unwrap();
    let Some(repo) = s.repos.get(id) else {
        drop(s);
        return envelope_error(conn, 404, 10010205001, "record not found");
    };
    if repo.private && !authorized(&req.headers) {
        let status = s.deny_status;
        drop(s);
        return envelope_error(conn, status, 10010103009, "access denied");
    }
    let rev = req
        .query
        .get("Revision")
        .cloned()
        .unwrap_or("master".into());
    let files = repo.revisions.get(&rev).map(|files| {
        let mut list = vec![serde_json::json!({
            "Name": "examples", "Path": "examples", "Type": "tree", "Size": 0, "Sha256": ""
        })];
        for (path, bytes) in files {
            let size = s
                .faults
                .get(path)
                .and_then(|f| f.listed_size)
                .unwrap_or(bytes.len() as u64);
            let hide = s.faults.get(path).is_some_and(|f| f.hide_sha);
            list.push(serde_json::json!({
                "Name": path.rsplit('/').next().unwrap(),
                "Path": path, "Type": "blob", "Size": size,
                "Sha256": if hide { String::new() } else { sha256(bytes) },
                "Revision": "0123456789abcdef0123456789abcdef01234567",
                "IsLFS": path.ends_with(".bin"), "InCheck": false, "Mode": "33188",
            }));
        }
        list
    });
    drop(s);
    let body = serde_json::json!({
        "Code": 200, "Message": "success", "RequestId": "fake-request-2", "Success": true,
        "Data": { "Files": files }
    });
    respond(
        conn,
        200,
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
    );
}

fn file(
    conn: &mut TcpStream,
    state: &Mutex<State>,
    id: &str,
    rev: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    blob_url: Option<&str>,
) {
    let mut s = state.lock().unwrap();
    let Some(repo) = s.repos.get(id) else {
        drop(s);
        return envelope_error(conn, 404, 10010205001, "record not found");
    };
    // The blob host is reached through a signed URL: no credentials there.
    if blob_url.is_some() && repo.private && !authorized(headers) {
        let status = s.deny_status;
        drop(s);
        return envelope_error(conn, status, 10010103009, "access denied");
    }
    let Some(mut body) = repo.revisions.get(rev).and_then(|r| r.get(path)).cloned() else {
        drop(s);
        return envelope_error(conn, 404, 10990101007, "获取模型文件失败，文件内容为空");
    };
    let fault = s.faults.get(path).cloned().unwrap_or_default();
    if let Some((status, n, retry_after)) = fault.status {
        if n > 0 {
            s.faults.get_mut(path).unwrap().status = Some((status, n - 1, retry_after));
            drop(s);
            let mut h = vec![];
            if let Some(r) = retry_after {
                h.push(("Retry-After", r.to_string()));
            }
            let body = serde_json::json!({"Code": status, "Message": "busy", "Success": false});
            return respond(conn, status, &h, body.to_string().as_bytes());
        }
    }
    if let (Some(limit), Some(blob)) = (s.lfs_over, blob_url) {
        if body.len() > limit {
            drop(s);
            let location = format!("{blob}/blob/{id}/{rev}/{path}");
            return respond(conn, 302, &[("Location", location)], b"");
        }
    }
    if fault.drop_after.is_some() {
        s.faults.get_mut(path).unwrap().drop_after = None;
    }
    drop(s);
    // The stored object's hash, as a CDN reports it; corruption happens after.
    let etag = sha256(&body);
    if fault.corrupt {
        let i = body.len() / 2;
        body[i] ^= 0xff;
    }
    let total = body.len();
    let mut status = 200;
    let mut hdrs: Vec<(&str, String)> = vec![
        ("Content-Type", "application/octet-stream".into()),
        ("Accept-Ranges", "bytes".into()),
        ("X-Linked-ETag", format!("\"{etag}\"")),
    ];
    let mut slice = &body[..];
    if let Some(range) = headers.get("range").filter(|_| !fault.ignore_range) {
        let spec = range.trim_start_matches("bytes=");
        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
        let start: usize = a.parse().unwrap_or(usize::MAX);
        let end: usize = b
            .parse()
            .unwrap_or(total.saturating_sub(1))
            .min(total.saturating_sub(1));
        if start >= total {
            return respond(
                conn,
                416,
                &[("Content-Range", format!("bytes */{total}"))],
                b"",
            );
        }
        slice = &body[start..=end];
        status = if fault.range_as_200 { 200 } else { 206 };
        hdrs.push(("Content-Range", format!("bytes {start}-{end}/{total}")));
    }
    hdrs.push(("Content-Length", slice.len().to_string()));
    let send = match fault.drop_after {
        Some(k) => &slice[..k.min(slice.len())],
        None => slice,
    };
    respond(conn, status, &hdrs, b"");
    for chunk in send.chunks(64 << 10) {
        if conn.write_all(chunk).is_err() {
            return;
        }
        if let Some(d) = fault.chunk_delay {
            std::thread::sleep(d);
        }
    }
    let _ = conn.flush();
    if fault.drop_after.is_some() {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    // Drain what the client may still send, so closing does not reset the connection early.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = conn.read(&mut [0u8; 64]);
}
