//! The hub client against the hub imitation on loopback: downloads, resume, verification,
//! errors, revisions, offline mode and cache sharing.

mod fakehub;
#[path = "../../ofa-model/tests/common/tiny_bin.rs"]
mod tiny_bin;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fakehub::{FakeHub, Fault, TempDir, PRIVATE, TINY, TOKEN};
use ofa_hub::{fetch, HubConfig, HubError, RepoId, Silent, Source};

fn fixture() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny_ofa_ve");
    tiny_bin::ensure(&dir);
    dir
}

fn config(endpoint: &str, cache: &Path, extra: &[(&str, &str)]) -> HubConfig {
    let mut c = HubConfig::new(cache.to_path_buf());
    c.endpoint = ofa_hub::config::normalize_endpoint(endpoint);
    // Keep the backoff short; the tests count attempts, not seconds.
    c.retry_max_delay = std::time::Duration::from_millis(50);
    c.connect_timeout = std::time::Duration::from_secs(2);
    c.read_timeout = std::time::Duration::from_secs(5);
    for (k, v) in extra {
        match *k {
            "token" => c.token = Some(v.to_string()),
            "offline" => c.offline = true,
            "max_retries" => c.max_retries = v.parse().unwrap(),
            "retry_max_delay" => {
                c.retry_max_delay = std::time::Duration::from_secs(v.parse().unwrap())
            }
            "verify" => c.verify = true,
            other => panic!("no setting {other}"),
        }
    }
    c
}

/// Which files were cache hits, and whether each took hashing.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, bool)>>);

impl Recorder {
    fn cached(&self) -> Vec<bool> {
        self.0.lock().unwrap().iter().map(|(_, h)| *h).collect()
    }
}

impl ofa_hub::Progress for Recorder {
    fn event(&self, event: ofa_hub::Event<'_>) {
        if let ofa_hub::Event::Cached { path, hashed } = event {
            self.0.lock().unwrap().push((path.to_string(), hashed));
        }
    }
}

fn id(s: &str) -> RepoId {
    s.parse().unwrap()
}

/// Every file of the repo at `rev` is in `dir`, byte for byte, with no partial files around.
fn assert_complete(hub: &FakeHub, repo: &str, rev: &str, dir: &Path) {
    let listed = fakehub::tiny_repo_files(&fixture(), "");
    for path in listed.keys() {
        let got = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == hub.file(repo, rev, path), "{path} differs");
    }
    assert_no_partials(dir);
}

fn assert_no_partials(dir: &Path) {
    for entry in walk(dir) {
        let name = entry.display().to_string();
        assert!(!name.ends_with(".incomplete"), "left behind: {name}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_download_lands_in_the_python_layout_then_hits_the_cache() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("fresh");
    let cfg = config(&hub.url, &cache.0, &[]);
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_eq!(
        snap.dir,
        cache.0.join("models/iic--ofa_tiny_ve/snapshots/master")
    );
    assert_eq!(
        snap.source,
        Source::Downloaded {
            files: 9,
            bytes: walk(&snap.dir)
                .iter()
                .filter(|p| !p.ends_with(ofa_hub::manifest::FILE))
                .map(|p| p.metadata().unwrap().len())
                .sum()
        }
    );
    assert_complete(&hub, TINY, "master", &snap.dir);
    // The listing asked for the revision recursively, as the Python client does.
    let first = &hub.requests()[0];
    assert_eq!(first.path, "/api/v1/models/iic/ofa_tiny_ve/repo/files");
    assert_eq!(first.query["Revision"], "master");
    assert_eq!(first.query["Recursive"], "True");
    assert!(hub.file_requests("examples/note.txt").len() == 1);
    // Nothing sends credentials that were never given.
    assert!(hub
        .requests()
        .iter()
        .all(|r| r.authorization.is_none() && r.cookie.is_none()));

    hub.reset_log();
    let seen = Recorder::default();
    let again = fetch(&cfg, &id(TINY), "master", &seen).await.unwrap();
    assert_eq!(again.source, Source::Cached);
    // The manifest of the verified download vouches for untouched files: no re-hashing.
    assert_eq!(seen.cached(), vec![false; 9]);
    // A file touched since is hashed again (and, unchanged, still a hit).
    let vocab = snap.dir.join("vocab.json");
    let f = std::fs::File::options().write(true).open(&vocab).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    let seen = Recorder::default();
    fetch(&cfg, &id(TINY), "master", &seen).await.unwrap();
    let hashed: Vec<String> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, h)| *h)
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(hashed, ["vocab.json"]);
    assert_eq!(
        hub.requests().len(),
        2,
        "only the listings: {:?}",
        hub.requests()
    );

    // A file changed on disk is caught by its hash and fetched again.
    let cfg_path = snap.dir.join("config.json");
    let mut bytes = std::fs::read(&cfg_path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&cfg_path, bytes).unwrap();
    hub.reset_log();
    let repaired = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert!(matches!(
        repaired.source,
        Source::Downloaded { files: 1, .. }
    ));
    assert_complete(&hub, TINY, "master", &repaired.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_resumes_with_a_range_request() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("resume");
    let cfg = config(&hub.url, &cache.0, &[]);
    hub.fault(
        "pytorch_model.bin",
        Fault {
            drop_after: Some(5_000_000),
            ..Fault::default()
        },
    );
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_complete(&hub, TINY, "master", &snap.dir);
    let reqs = hub.file_requests("pytorch_model.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=5000000-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_file_is_resumed_whatever_status_the_range_comes_with() {
    let hub = FakeHub::start(&fixture());
    let weights = hub.file(TINY, "master", "pytorch_model.bin");
    // 206, 200 with Content-Range (append), 200 with the whole body (start over).
    for fault in [
        Fault::default(),
        Fault {
            range_as_200: true,
            ..Fault::default()
        },
        Fault {
            ignore_range: true,
            ..Fault::default()
        },
    ] {
        let cache = TempDir::new("partial");
        let cfg = config(&hub.url, &cache.0, &[]);
        // A partial left by an interrupted run, of this client or of the Python one.
        let dir = cache.0.join("models/iic--ofa_tiny_ve/snapshots/master");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pytorch_model.bin.incomplete"), &weights[..1234]).unwrap();
        hub.fault("pytorch_model.bin", fault.clone());
        hub.reset_log();
        let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
        assert_complete(&hub, TINY, "master", &snap.dir);
        let reqs = hub.file_requests("pytorch_model.bin");
        assert_eq!(reqs.len(), 1, "{fault:?}: {reqs:?}");
        assert_eq!(reqs[0].range.as_deref(), Some("bytes=1234-"), "{fault:?}");
    }
    // A partial longer than the file is thrown away, not trusted.
    let cache = TempDir::new("partial-long");
    let cfg = config(&hub.url, &cache.0, &[]);
    hub.clear_faults();
    let dir = cache.0.join("models/iic--ofa_tiny_ve/snapshots/master");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json.incomplete"), vec![b'x'; 100_000]).unwrap();
    hub.reset_log();
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_complete(&hub, TINY, "master", &snap.dir);
    assert_eq!(hub.file_requests("config.json")[0].range, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_mismatch_is_retried_then_rejected_leaving_nothing_trusted() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("checksum");
    let cfg = config(&hub.url, &cache.0, &[]);
    hub.fault(
        "config.json",
        Fault {
            corrupt: true,
            ..Fault::default()
        },
    );
    let err = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("sha256"),
        "{msg}"
    );
    assert_eq!(hub.file_requests("config.json").len(), 3);
    let dir = cache.0.join("models/iic--ofa_tiny_ve/snapshots/master");
    assert!(!dir.join("config.json").exists());
    assert_no_partials(&dir);

    // Without a hash in the listing, the CDN's X-Linked-ETag is checked instead.
    hub.fault(
        "config.json",
        Fault {
            corrupt: true,
            hide_sha: true,
            ..Fault::default()
        },
    );
    hub.reset_log();
    let err = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap_err();
    assert!(matches!(err, HubError::Checksum { .. }), "{err}");
    assert!(!dir.join("config.json").exists());

    // The next run, with the hub serving good bytes again, completes the snapshot.
    hub.clear_faults();
    hub.reset_log();
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_complete(&hub, TINY, "master", &snap.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_size_mismatch_is_rejected() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("size");
    let cfg = config(&hub.url, &cache.0, &[]);
    let real = hub.file(TINY, "master", "vocab.json").len() as u64;
    hub.fault(
        "vocab.json",
        Fault {
            listed_size: Some(real + 10),
            ..Fault::default()
        },
    );
    let err = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap_err();
    match &err {
        HubError::Size {
            expected, actual, ..
        } => assert_eq!((*expected, *actual), (real + 10, real)),
        other => panic!("{other}"),
    }
    assert_eq!(hub.file_requests("vocab.json").len(), 2);
    let dir = cache.0.join("models/iic--ofa_tiny_ve/snapshots/master");
    assert!(!dir.join("vocab.json").exists());
    assert_no_partials(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_and_retry_after_is_honoured() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("transient");
    let cfg = config(&hub.url, &cache.0, &[("retry_max_delay", "5")]);
    hub.fault(
        "merges.txt",
        Fault {
            status: Some((503, 1, Some(1))),
            ..Fault::default()
        },
    );
    hub.fault(
        "vocab.json",
        Fault {
            status: Some((429, 1, Some(1))),
            ..Fault::default()
        },
    );
    let t = Instant::now();
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "Retry-After: 1 twice"
    );
    assert_complete(&hub, TINY, "master", &snap.dir);
    assert_eq!(hub.file_requests("merges.txt").len(), 2);
    assert_eq!(hub.file_requests("vocab.json").len(), 2);

    // A hub that keeps failing: the retry budget ends it, the error says so.
    let cache = TempDir::new("transient2");
    let cfg = config(&hub.url, &cache.0, &[("max_retries", "2")]);
    hub.fault(
        "config.json",
        Fault {
            status: Some((502, 100, None)),
            ..Fault::default()
        },
    );
    hub.reset_log();
    let err = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("gave up after 3 attempts") && msg.contains("HTTP 502"),
        "{msg}"
    );
    assert_eq!(hub.file_requests("config.json").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_private_models_give_clear_errors_without_retries() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("auth");
    let cfg = config(&hub.url, &cache.0, &[]);
    let err = fetch(&cfg, &id("iic/no_such_model"), "master", &Silent)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("iic/no_such_model not found") && msg.contains("MODELSCOPE_API_TOKEN"),
        "{msg}"
    );
    assert_eq!(hub.requests().len(), 1);

    for status in [401u16, 403, 404] {
        hub.deny_with(status);
        hub.reset_log();
        let err = fetch(&cfg, &id(PRIVATE), "master", &Silent)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(PRIVATE) && msg.contains("MODELSCOPE_API_TOKEN"),
            "{msg}"
        );
        assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
        assert_eq!(hub.requests().len(), 1, "no retry on {status}");
    }
    hub.deny_with(403);
    let bad = config(&hub.url, &cache.0, &[("token", "ms-wrong")]);
    let msg = fetch(&bad, &id(PRIVATE), "master", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("is not accepted"), "{msg}");
    assert!(
        !msg.contains("ms-wrong"),
        "the token is never printed: {msg}"
    );

    // With the token, and weights behind a redirect to another host as the hub does for LFS
    // files: the credentials go to the hub, never to the blob host.
    hub.lfs_over(Some(1_000_000));
    hub.reset_log();
    let good = config(&hub.url, &cache.0, &[("token", TOKEN)]);
    let snap = fetch(&good, &id(PRIVATE), "master", &Silent).await.unwrap();
    assert_complete(&hub, PRIVATE, "master", &snap.dir);
    let reqs = hub.requests();
    let api_port: u16 = hub.url.rsplit(':').next().unwrap().parse().unwrap();
    let (api, blob): (Vec<_>, Vec<_>) = reqs.iter().partition(|r| r.port == api_port);
    assert!(!blob.is_empty(), "the weights came from the blob host");
    assert!(api.iter().all(
        |r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))
            && r.cookie.as_deref() == Some(&format!("m_session_id={TOKEN}"))
    ));
    assert!(
        blob.iter()
            .all(|r| r.authorization.is_none() && r.cookie.is_none()),
        "{blob:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revisions_are_pinned_and_unknown_ones_are_named() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("revision");
    let cfg = config(&hub.url, &cache.0, &[]);
    let snap = fetch(&cfg, &id(TINY), "v1.0.0", &Silent).await.unwrap();
    assert_eq!(
        snap.dir,
        cache.0.join("models/iic--ofa_tiny_ve/snapshots/v1.0.0")
    );
    assert_eq!(
        std::fs::read_to_string(snap.dir.join("README.md")).unwrap(),
        "# tiny OFA, v1.0.0\n"
    );
    assert!(hub
        .requests()
        .iter()
        .all(|r| r.query["Revision"] == "v1.0.0"));
    for rev in ["nope", "main"] {
        let err = fetch(&cfg, &id(TINY), rev, &Silent).await.unwrap_err();
        assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("no revision \"{rev}\"")),
            "{err}"
        );
    }
    // Offline, the pinned revision is found and the other one is pointed at.
    let off = config(&hub.url, &cache.0, &[("offline", "1")]);
    let got = fetch(&off, &id(TINY), "v1.0.0", &Silent).await.unwrap();
    assert_eq!(got.dir, snap.dir);
    let msg = fetch(&off, &id(TINY), "master", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("revision(s) v1.0.0"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_mode_makes_no_connection() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("offline");
    {
        let off = config(&hub.url, &cache.0, &[("offline", "1")]);
        let err = fetch(&off, &id(TINY), "master", &Silent).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HubError::NotCached { .. }), "{msg}");
        assert!(
            msg.contains("iic/ofa_tiny_ve") && msg.contains("ofa-entail download"),
            "{msg}"
        );
    }
    assert_eq!(hub.connections(), 0);
    assert!(!cache.0.join("models").exists(), "offline creates nothing");

    let online = config(&hub.url, &cache.0, &[]);
    let snap = fetch(&online, &id(TINY), "master", &Silent).await.unwrap();
    hub.reset_log();
    let off = config(&hub.url, &cache.0, &[("offline", "1")]);
    let got = fetch(&off, &id(TINY), "master", &Silent).await.unwrap();
    assert_eq!((got.dir, got.source), (snap.dir.clone(), Source::Offline));
    assert_eq!(hub.connections(), 0);

    // The manifest written with the download lets an offline start check the cache: a
    // truncated file is caught by its size at once, a changed byte by MODEL_VERIFY's hashing.
    let weights = snap.dir.join("pytorch_model.bin");
    let good = std::fs::read(&weights).unwrap();
    let mut flipped = good.clone();
    flipped[1000] ^= 1;
    std::fs::write(&weights, &flipped).unwrap();
    assert!(fetch(&off, &id(TINY), "master", &Silent).await.is_ok());
    let verify = config(&hub.url, &cache.0, &[("offline", "1"), ("verify", "1")]);
    let msg = fetch(&verify, &id(TINY), "master", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("pytorch_model.bin has sha256"), "{msg}");
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let err = fetch(&off, &id(TINY), "master", &Silent).await.unwrap_err();
    assert!(matches!(err, HubError::CacheCorrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "pytorch_model.bin is {} bytes, not {}",
            good.len() / 2,
            good.len()
        )) && msg.contains("ofa-entail download"),
        "{msg}"
    );
    std::fs::remove_file(snap.dir.join("vocab.json")).unwrap();
    let msg = fetch(&off, &id(TINY), "master", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("vocab.json is missing"), "{msg}");
    assert_eq!(hub.connections(), 0);
    // Online, the damage is repaired.
    let repaired = fetch(&online, &id(TINY), "master", &Silent).await.unwrap();
    assert!(matches!(
        repaired.source,
        Source::Downloaded { files: 2, .. }
    ));
    assert_complete(&hub, TINY, "master", &repaired.dir);
    assert!(fetch(&verify, &id(TINY), "master", &Silent).await.is_ok());

    // Online but the hub is unreachable: a restart still comes up from the cache.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let cfg = config(&dead, &cache.0, &[("max_retries", "1")]);
    let got = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_eq!((got.dir, got.source), (snap.dir, Source::CacheFallback));
}

#[test]
fn concurrent_downloads_into_one_cache_fetch_each_file_once() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("concurrent");
    // Slow the weights so that the two downloads overlap.
    hub.fault(
        "pytorch_model.bin",
        Fault {
            chunk_delay: Some(Duration::from_millis(2)),
            ..Fault::default()
        },
    );
    let run = || {
        let cfg = config(&hub.url, &cache.0, &[]);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { fetch(&cfg, &id(TINY), "master", &Silent).await })
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_eq!(a.dir, b.dir);
    assert_complete(&hub, TINY, "master", &a.dir);
    for path in ["pytorch_model.bin", "vocab.json", "config.json"] {
        assert_eq!(hub.file_requests(path).len(), 1, "{path} fetched once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_legacy_directory_is_reused_and_unsafe_paths_are_refused() {
    let hub = FakeHub::start(&fixture());
    let cache = TempDir::new("legacy");
    // modelscope ≤ 1.37 left a copy here; the Python client would keep using it, so we do too.
    let legacy = cache.0.join("models/iic/ofa_tiny_ve");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("config.json"), b"stale").unwrap();
    let cfg = config(&hub.url, &cache.0, &[]);
    let snap = fetch(&cfg, &id(TINY), "master", &Silent).await.unwrap();
    assert_eq!(snap.dir, legacy);
    assert_complete(&hub, TINY, "master", &legacy);
    assert!(!cache.0.join("models/iic--ofa_tiny_ve").exists());

    let mut files = std::collections::BTreeMap::new();
    files.insert("../../escape.txt".to_string(), b"x".to_vec());
    hub.add("evil/model", "master", files, false);
    let err = fetch(&cfg, &id("evil/model"), "master", &Silent)
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::UnsafePath(_)), "{err}");
    assert!(!cache.0.join("escape.txt").exists());
    assert!(!cache.0.parent().unwrap().join("escape.txt").exists());
}
