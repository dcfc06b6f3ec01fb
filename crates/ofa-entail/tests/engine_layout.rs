//! The engine layout as a user meets it: `convert --precision` writes it, a start uses it as it
//! is, and a start that finds it stale (the checkpoint replaced, as a new download does)
//! rewrites it before loading; where it cannot, it loads the checkpoint and says why. Real
//! process, tiny model fixture.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    c.env_remove("MODEL_DIR").env_remove("PRECISION");
    c
}

/// The tiny model's files, with its weights as model.safetensors only.
fn model_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    for f in [
        "config.json",
        "configuration.json",
        "answer2label.json",
        "vocab.json",
        "merges.txt",
        "model.safetensors",
    ] {
        std::fs::copy(fixtures().join("tiny_ofa_ve").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

const LAYOUT: &str = "engine-cpu-int8.safetensors";

fn predict(dir: &Path) -> Output {
    let image = fixtures().join("golden/images/coffee.png");
    bin()
        .args(["predict", "--precision", "int8", "--model-dir"])
        .arg(dir)
        .arg("--image")
        .arg(image)
        .args(["--text", "a cup of coffee."])
        .output()
        .unwrap()
}

/// `convert --precision int8`, which writes the layout.
fn convert(dir: &Path) {
    let out = bin()
        .args(["convert", "--precision", "int8", "--model-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(LAYOUT), "{}", stderr(&out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The same weights written anew, with a new modification time: every layout made from the
/// old file is stale.
fn replace_checkpoint(dir: &Path) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let tmp = dir.join("model.safetensors.new");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_stale_layout_is_rebuilt_by_the_next_start_or_else_ignored() {
    let guard = model_dir("ofa-layout-cli-");
    let dir = guard.path();
    convert(dir);
    let first = predict(dir);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!stderr(&first).contains("stale"), "{}", stderr(&first));

    replace_checkpoint(dir);
    let written = modified(&dir.join(LAYOUT));
    let rebuilt = predict(dir);
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    let said = stderr(&rebuilt);
    assert!(
        said.contains("made from other weights") && said.contains("rebuilt"),
        "{said}"
    );
    assert!(!said.contains("warning"), "{said}");
    assert!(
        modified(&dir.join(LAYOUT)) > written,
        "the layout rewritten"
    );
    assert_eq!(rebuilt.stdout, first.stdout, "the same answer");
    let next = predict(dir);
    assert!(!stderr(&next).contains("stale"), "{}", stderr(&next));
    assert!(!stderr(&next).contains("rebuilt"), "{}", stderr(&next));

    // A directory the start cannot write to: its lock cannot be taken (a directory stands in
    // its place, which holds for root too, unlike a read-only mode).
    replace_checkpoint(dir);
    let lock = dir.join(".model.safetensors.lock");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let written = modified(&dir.join(LAYOUT));
    let kept = predict(dir);
    assert!(kept.status.success(), "{}", stderr(&kept));
    let said = stderr(&kept);
    assert!(
        said.contains("cannot rebuild the stale engine layout")
            && said.contains("the checkpoint is transformed at load instead"),
        "{said}"
    );
    assert_eq!(
        modified(&dir.join(LAYOUT)),
        written,
        "the layout left alone"
    );
    assert_eq!(
        kept.stdout, first.stdout,
        "the same answer from the checkpoint"
    );
}

/// `serve` logs the rebuild, then loads the layout it wrote.
#[test]
fn a_server_rebuilds_a_stale_layout_and_runs_it() {
    let guard = model_dir("ofa-layout-serve-");
    let dir = guard.path();
    convert(dir);
    replace_checkpoint(dir);
    let mut child = bin()
        .arg("serve")
        .env("MODEL_DIR", dir)
        .env("PRECISION", "int8")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read on a thread, so a server that never loads fails the test instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let last = v["event"] == "model_loaded";
            if tx.send(v).is_err() || last {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut logged = Vec::new();
    while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        logged.push(v);
    }
    let _ = child.kill();
    let _ = child.wait();
    let events: Vec<&str> = logged
        .iter()
        .map(|v| v["event"].as_str().unwrap_or_default())
        .collect();
    let at = |name: &str| events.iter().position(|e| *e == name);
    let (Some(rebuilt), Some(loaded)) = (at("engine_layout_rebuilt"), at("model_loaded")) else {
        panic!("no rebuild, then load: {events:?}");
    };
    assert!(rebuilt < loaded, "{events:?}");
    assert!(
        logged[rebuilt]["file"].as_str().unwrap().ends_with(LAYOUT),
        "{}",
        logged[rebuilt]
    );
    assert_eq!(logged[loaded]["weights"], format!("{LAYOUT} (converted)"));
    assert!(at("engine_layout_ignored").is_none(), "{events:?}");
}
