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

#[test]
fn fuzz_targets_find_nothing_in_a_bounded_run() {
    let seconds = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "20".into());
    let fuzz = repo().join("fuzz");
    let scratch_guard = tempfile::Builder::new()
        .prefix("ofa-fuzz-")
        .tempdir()
        .unwrap();
    let scratch = scratch_guard.path().to_path_buf();
    for target in TARGETS {
        // New inputs go to a scratch corpus; the seeds in the repo stay as they are.
        let corpus = scratch.join(target);
        std::fs::create_dir_all(&corpus).unwrap();
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz)
            // The sanitizer-free build runs on a stable toolchain; coverage still guides it.
            .args(["fuzz", "run", "--release", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg(fuzz.join("seeds").join(target))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=30",
                "-rss_limit_mb=3072",
                "-print_final_stats=1",
            ]);
        // The outer `cargo test` must not steer the inner build.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cargo fuzz (crates.io cargo-fuzz; .ci/run installs it): {e}")
        });
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{target}: libFuzzer found a failure (artifacts in fuzz/artifacts/{target}):\n{}",
            log.lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        let runs: u64 = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(runs > 20, "{target}: only {runs} inputs ran:\n{log}");
    }
}
