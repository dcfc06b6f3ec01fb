//! Getting the model as a user does: `ofa-entail download`, `predict` and `serve` by model id,
//! against the hub imitation on loopback, and the cache shared with the real Python client.

mod common;
#[path = "../../ofa-hub/tests/fakehub/mod.rs"]
mod fakehub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, Server};
use fakehub::{FakeHub, Fault, TempDir, PRIVATE, TINY};
use serde_json::Value;

/// The binary with a clean hub environment pointing at `hub` and caching in `cache`.
fn cmd(hub: &str, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    c.args(args)
        .env_remove("MODEL_DIR")
        .env_remove("MODEL_ID")
        .env_remove("MODEL_OFFLINE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("MODELSCOPE_API_TOKEN")
        .env("MODELSCOPE_ENDPOINT", hub)
        .env("MODEL_CACHE", cache)
        .env("MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS", "0.05");
    c
}

fn run(hub: &str, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = cmd(hub, cache, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `download TINY --convert=false`, which must succeed: (the directory it printed, stderr).
fn download_tiny(hub: &str, cache: &Path) -> (String, String) {
    let out = run(hub, cache, &["download", TINY, "--convert=false"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (dir, stderr(&out))
}

fn image() -> String {
    fixtures()
        .join("golden/images/coffee.png")
        .display()
        .to_string()
}

const TEXT: &str = "the cup is full of coffee.";

fn predict(hub: &str, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let img = image();
    let mut args = vec!["predict", "--image", &img, "--text", TEXT];
    args.extend_from_slice(extra);
    let out = run(hub, cache, &args, env);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn python_client_available() -> bool {
    Command::new("python3")
        .args(["-c", "import modelscope_hub"])
        .status()
        .is_ok_and(|s| s.success())
}

fn python_snapshot(hub: &str, cache: &Path, mode: &str) -> Output {
    let script = fixtures().join("../tests/clients/modelscope_snapshot.py");
    Command::new("python3")
        .arg(script)
        .args([TINY, "master", mode])
        .env("MODELSCOPE_ENDPOINT", hub)
        .env("MODELSCOPE_CACHE", cache)
        .env_remove("MODELSCOPE_API_TOKEN")
        .output()
        .unwrap()
}

/// Runs `command` (a download into `cache`) with the weights served slowly, kills it once
/// their partial file holds 4 MB, and clears the hub's faults and log. Returns the partial file
/// and the bytes it kept.
fn interrupt(hub: &FakeHub, cache: &Path, mut command: Command) -> (PathBuf, u64) {
    hub.fault(
        "pytorch_model.bin",
        Fault {
            chunk_delay: Some(Duration::from_millis(5)),
            ..Fault::default()
        },
    );
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial =
        cache.join("models/iic--ofa_tiny_ve/snapshots/master/pytorch_model.bin.incomplete");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 4_000_000 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hub.clear_faults();
    hub.reset_log();
    let kept = std::fs::metadata(&partial).unwrap().len();
    (partial, kept)
}

#[test]
fn download_then_predict_offline_from_the_cache_with_identical_answers() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("download");
    let out = run(&hub.url, &cache.0, &["download", TINY], &[]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(
        dir,
        cache.0.join("models/iic--ofa_tiny_ve/snapshots/master")
    );
    // Not a terminal: plain progress lines, one per file, and the conversion.
    assert!(
        log.contains("pytorch_model.bin: downloading 32.4 MB"),
        "{log}"
    );
    assert!(
        log.contains("pytorch_model.bin: 32.4 MB done, sha256 verified"),
        "{log}"
    );
    assert!(log.contains("downloaded 9 file(s)"), "{log}");
    assert!(!log.contains('\r'), "no bar redraws in a log");
    assert!(dir.join("model.safetensors").is_file(), "{log}");

    // The answer from the cache equals the answer from the fixture directory, and offline
    // mode never opens a connection.
    hub.reset_log();
    let offline = predict(&hub.url, &cache.0, &["--model-id", TINY, "--offline"], &[]);
    let via_env = predict(
        &hub.url,
        &cache.0,
        &[],
        &[("MODEL_ID", TINY), ("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(hub.connections(), 0);
    let direct = predict(
        &hub.url,
        &cache.0,
        &[
            "--model-dir",
            &fixtures().join("tiny_ofa_ve").display().to_string(),
        ],
        &[],
    );
    assert_eq!(offline, direct);
    assert_eq!(via_env, direct);
    // A model id that names a local directory is that directory.
    let tiny = fixtures().join("tiny_ofa_ve").display().to_string();
    assert_eq!(
        predict(&hub.url, &cache.0, &["--model-id", &tiny], &[]),
        direct
    );
    assert_eq!(hub.connections(), 0);

    // Offline with --verify, a cached file changed since its verified download is refused.
    let merges = dir.join("merges.txt");
    let good = std::fs::read(&merges).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&merges, &bad).unwrap();
    let img = image();
    let args = [
        "predict",
        "--model-id",
        TINY,
        "--offline",
        "--verify",
        "--image",
        &img,
        "--text",
        TEXT,
    ];
    let out = run(&hub.url, &cache.0, &args, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("merges.txt has sha256"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&merges, &good).unwrap();
    assert!(run(&hub.url, &cache.0, &args, &[]).status.success());

    // `convert` round trip: the pickled weights alone give the same answer as the safetensors.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let from_bin = predict(&hub.url, &cache.0, &["--model-id", TINY, "--offline"], &[]);
    assert_eq!(from_bin, direct);

    // A second download finds everything cached: one listing request, no file transfers.
    hub.reset_log();
    let (_, again) = download_tiny(&hub.url, &cache.0);
    assert!(again.contains("cached, verified"), "{again}");
    assert_eq!(hub.requests().len(), 1);
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("errors");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["download", "iic/no_such_model"],
            vec![],
            "model iic/no_such_model not found",
        ),
        (
            vec!["download", PRIVATE],
            vec![],
            "set MODELSCOPE_API_TOKEN",
        ),
        (
            vec!["download", PRIVATE],
            vec![("MODELSCOPE_API_TOKEN", "ms-wrong")],
            "or this MODELSCOPE_API_TOKEN cannot see it",
        ),
        (
            vec!["download", TINY, "--revision", "v9"],
            vec![],
            "has no revision \"v9\"",
        ),
        (vec!["download", "not-an-id"], vec![], "invalid model id"),
        (
            vec![
                "predict",
                "--model-id",
                TINY,
                "--image",
                "x.png",
                "--text",
                "t",
            ],
            vec![],
            "cannot read image x.png",
        ),
        (
            vec!["download", TINY, "--offline"],
            vec![],
            "offline: model iic/ofa_tiny_ve revision \"master\" is not in the cache",
        ),
    ];
    for (args, env, want) in cases {
        let out = run(&hub.url, &cache.0, &args, &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("ms-wrong"),
            "{err}"
        );
    }
    // With the token the private model downloads.
    let out = run(
        &hub.url,
        &cache.0,
        &["download", PRIVATE, "--convert=false"],
        &[("MODELSCOPE_API_TOKEN", fakehub::TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_killed_download_resumes_where_it_stopped() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("killed");
    let (partial, kept) = interrupt(&hub, &cache.0, cmd(&hub.url, &cache.0, &["download", TINY]));
    assert!(!partial.with_file_name("pytorch_model.bin").exists());
    let (_, log) = download_tiny(&hub.url, &cache.0);
    assert!(log.contains(&format!("resuming at {:.1} MB", kept as f64 / 1e6)));
    let reqs = hub.file_requests("pytorch_model.bin");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].range, Some(format!("bytes={kept}-")));
    let got = std::fs::read(partial.with_file_name("pytorch_model.bin")).unwrap();
    assert!(got == hub.file(TINY, "master", "pytorch_model.bin"));
    assert!(!partial.exists());
}

#[test]
fn two_processes_sharing_a_cache_download_once() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("shared");
    hub.fault(
        "pytorch_model.bin",
        Fault {
            chunk_delay: Some(Duration::from_millis(2)),
            ..Fault::default()
        },
    );
    let spawn = || {
        // Both convert too, as init containers do: one writes model.safetensors, the other
        // finds it written.
        cmd(&hub.url, &cache.0, &["download", TINY])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(a.stdout, b.stdout);
    let waited = [&a, &b]
        .iter()
        .filter(|o| stderr(o).contains("another process is downloading it"))
        .count();
    assert!(waited >= 1, "{}\n{}", stderr(&a), stderr(&b));
    for path in [
        "pytorch_model.bin",
        "vocab.json",
        "merges.txt",
        "config.json",
    ] {
        assert_eq!(hub.file_requests(path).len(), 1, "{path}");
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&a.stdout).trim());
    assert!(
        std::fs::read(dir.join("pytorch_model.bin")).unwrap()
            == hub.file(TINY, "master", "pytorch_model.bin")
    );
    let wrote = [&a, &b]
        .iter()
        .filter(|o| stderr(o).contains("wrote "))
        .count();
    assert_eq!(wrote, 1, "{}\n{}", stderr(&a), stderr(&b));
    let p = predict(&hub.url, &cache.0, &["--model-id", TINY, "--offline"], &[]);
    assert_eq!(p["label"], "Yes");
}

#[test]
fn serve_fetches_by_id_then_restarts_offline() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("serve");
    let cache_s = cache.0.display().to_string();
    let env = [
        ("MODEL_ID", TINY),
        ("MODEL_CACHE", cache_s.as_str()),
        ("MODELSCOPE_ENDPOINT", hub.url.as_str()),
        ("WARMUP", "false"),
    ];
    let server = Server::start_without(&env, &["MODEL_DIR", "MODEL_OFFLINE", "HF_HUB_OFFLINE"]);
    let client = http::blocking_client();
    let answer = |server: &Server| -> Value {
        let form = [("text", TEXT)];
        let img = std::fs::read(image()).unwrap();
        client.predict(&server.url("/predict"), &img, &form)
    };
    let first = answer(&server);
    let logs = server.log_lines();
    let fetched = logs.iter().find(|l| l["event"] == "model_fetched").unwrap();
    assert!(fetched["source"]
        .as_str()
        .unwrap()
        .starts_with("downloaded 9 file(s)"));
    assert!(logs
        .iter()
        .any(|l| l["event"] == "model_file_verified" && l["file"] == "pytorch_model.bin"));
    let info: Value = client.get_json(&server.url("/info"));
    assert_eq!(info["model_id"], TINY);
    drop(server);

    // Restart as the Deployment runs it after the init container: offline, zero requests.
    hub.reset_log();
    let mut offline = env.to_vec();
    offline.push(("MODEL_OFFLINE", "1"));
    let server = Server::start_without(&offline, &["MODEL_DIR", "HF_HUB_OFFLINE"]);
    assert_eq!(answer(&server), first);
    assert_eq!(hub.connections(), 0);
}

#[test]
fn the_python_client_and_ofa_entail_share_one_cache_both_ways() {
    assert!(
        python_client_available(),
        "PyPI modelscope-hub is needed (.ci/run installs it)"
    );
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));

    // Python downloads; ofa-entail serves predictions from that cache offline.
    let cache = TempDir::new("py-first");
    let out = python_snapshot(&hub.url, &cache.0, "online");
    assert!(out.status.success(), "{}", stderr(&out));
    let py_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    hub.reset_log();
    let ours = run(&hub.url, &cache.0, &["download", TINY, "--offline"], &[]);
    assert!(ours.status.success(), "{}", stderr(&ours));
    assert_eq!(
        PathBuf::from(String::from_utf8_lossy(&ours.stdout).trim()),
        py_dir
    );
    let p = predict(&hub.url, &cache.0, &["--model-id", TINY, "--offline"], &[]);
    assert_eq!(p["label"], "Yes");
    // Online, ofa-entail verifies Python's files against the listing and fetches none again.
    let (_, ours) = download_tiny(&hub.url, &cache.0);
    assert!(ours.contains("cached, verified"), "{ours}");
    assert_eq!(hub.connections(), 1, "{:?}", hub.requests());

    // ofa-entail downloads; Python finds the snapshot, online (no file fetched) and offline.
    let cache = TempDir::new("rust-first");
    let (our_dir, _) = download_tiny(&hub.url, &cache.0);
    hub.reset_log();
    for mode in ["online", "offline"] {
        let out = python_snapshot(&hub.url, &cache.0, mode);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            our_dir,
            "{mode}"
        );
    }
    let files: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.query.contains_key("FilePath"))
        .collect();
    assert!(files.is_empty(), "Python re-downloaded {files:?}");

    // Partial files: each client resumes the `.incomplete` the other left when it was killed.
    for first_is_ours in [true, false] {
        let cache = TempDir::new(if first_is_ours {
            "partial-rs"
        } else {
            "partial-py"
        });
        let first = if first_is_ours {
            cmd(&hub.url, &cache.0, &["download", TINY])
        } else {
            let mut c = Command::new("python3");
            c.arg(fixtures().join("../tests/clients/modelscope_snapshot.py"))
                .args([TINY, "master", "online"])
                .env("MODELSCOPE_ENDPOINT", &hub.url)
                .env("MODELSCOPE_CACHE", &cache.0);
            c
        };
        let (partial, kept) = interrupt(&hub, &cache.0, first);
        if first_is_ours {
            let second = python_snapshot(&hub.url, &cache.0, "online");
            assert!(second.status.success(), "{}", stderr(&second));
        } else {
            download_tiny(&hub.url, &cache.0);
        }
        let reqs = hub.file_requests("pytorch_model.bin");
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(
            reqs[0].range,
            Some(format!("bytes={kept}-")),
            "ours first: {first_is_ours}"
        );
        let whole = std::fs::read(partial.with_file_name("pytorch_model.bin")).unwrap();
        assert!(whole == hub.file(TINY, "master", "pytorch_model.bin"));
    }
}

/// A tiny blocking HTTP client over reqwest's async one, for these few calls.
mod http {
    pub struct Client(tokio::runtime::Runtime, ::reqwest::Client);

    pub fn blocking_client() -> Client {
        Client(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            ::reqwest::Client::new(),
        )
    }

    impl Client {
        pub fn predict(
            &self,
            url: &str,
            image: &[u8],
            fields: &[(&str, &str)],
        ) -> serde_json::Value {
            self.0.block_on(async {
                let mut form = ::reqwest::multipart::Form::new().part(
                    "image",
                    ::reqwest::multipart::Part::bytes(image.to_vec()).file_name("coffee.png"),
                );
                for (k, v) in fields {
                    form = form.text(k.to_string(), v.to_string());
                }
                let r = self.1.post(url).multipart(form).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json().await.unwrap()
            })
        }

        pub fn get_json(&self, url: &str) -> serde_json::Value {
            self.0
                .block_on(async { self.1.get(url).send().await.unwrap().json().await.unwrap() })
        }
    }
}

/// A pod whose cache volume is mounted read-only, started without MODEL_OFFLINE: the cached,
/// verified files serve without a lock or a write (run as an unprivileged user: root ignores
/// permissions).
#[test]
fn a_read_only_cache_still_resolves_online() {
    let hub = FakeHub::start(&fixtures().join("tiny_ofa_ve"));
    let cache = TempDir::new("read-only");
    let (dir, _) = download_tiny(&hub.url, &cache.0);
    let status = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(&cache.0)
        .status()
        .unwrap();
    assert!(status.success());
    let as_nobody = |extra: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_ofa-entail"))
            .args(["download", TINY, "--convert=false"])
            .args(extra)
            .env_remove("MODEL_OFFLINE")
            .env_remove("HF_HUB_OFFLINE")
            .env("MODELSCOPE_ENDPOINT", &hub.url)
            .env("MODEL_CACHE", &cache.0);
        c.output().expect("setpriv (util-linux) runs")
    };
    for extra in [&[][..], &["--offline"][..]] {
        let out = as_nobody(extra);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dir);
    }
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&cache.0)
        .status();
}
