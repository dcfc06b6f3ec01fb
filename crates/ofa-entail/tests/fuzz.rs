//! The fuzz targets in `fuzz/` (cargo fuzz, libFuzzer), each run for a bounded time from the
//! seed corpus kept in the repo (the hardening review's bombs included). Any crash, panic,
//! time-out or memory blow-up that libFuzzer finds fails the test with its reproducer path.

use std::path::PathBuf;
use std::process::Command;

const TARGETS: [&str; 5] = [
    "image_preprocess",
    "text_tokenize",
    "request_body",
    "kserve_binary",
    "url_policy",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo fuzz` in `fuzz/`, untouched by the outer `cargo test`'s environment.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo().join("fuzz"))
        .arg("fuzz")
        .args(args)
        // The sanitizer-free build runs on a stable toolchain; coverage still guides it.
        .args(["--release", "--sanitizer", "none"]);
    // The outer `cargo test` must not steer the inner build.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fuzzes `target` for `seconds` from its seeds; new inputs go to `corpus`, the seeds in the
/// repo stay as they are.
fn fuzz(target: &str, seconds: &str, corpus: &std::path::Path) {
    let seeds = repo().join("fuzz/seeds").join(target);
    let out = cargo_fuzz(&["run"])
        .arg(target)
        .arg(corpus)
        .arg(seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-timeout=30",
            "-rss_limit_mb=3072",
            "-print_final_stats=1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cargo fuzz (crates.io cargo-fuzz; .ci/run installs it): {e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{target}: libFuzzer found a failure (artifacts in fuzz/artifacts/{target}):\n{}",
        last_lines(&log, 60)
    );
    let runs: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(runs > 20, "{target}: only {runs} inputs ran:\n{log}");
}

#[test]
fn fuzz_targets_find_nothing_in_a_bounded_run() {
    let seconds = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "20".into());
    let scratch_guard = tempfile::Builder::new()
        .prefix("ofa-fuzz-")
        .tempdir()
        .unwrap();
    let scratch = scratch_guard.path().to_path_buf();
    // One build of every target first, so the runs below only run.
    let built = cargo_fuzz(&["build"])
        .output()
        .unwrap_or_else(|e| panic!("cargo fuzz (crates.io cargo-fuzz; .ci/run installs it): {e}"));
    assert!(
        built.status.success(),
        "cargo fuzz build:\n{}",
        last_lines(&String::from_utf8_lossy(&built.stderr), 60)
    );
    // A libFuzzer process uses one core: as many targets at once as there are cores, so each
    // gets the CPU time it would alone and the whole run takes a fraction as long.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for group in TARGETS.chunks(cores) {
        std::thread::scope(|s| {
            for target in group {
                let corpus = scratch.join(target);
                std::fs::create_dir_all(&corpus).unwrap();
                let seconds = seconds.as_str();
                s.spawn(move || fuzz(target, seconds, &corpus));
            }
        });
    }
}
