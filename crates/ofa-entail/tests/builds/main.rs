//! The two tests that build the project again in another form: the `--features cuda` build and
//! the fuzz targets. They are one test executable so that they run side by side. Each leaves a
//! core idle for minutes on its own (pip's download and nvcc's largest kernel file on one side,
//! libFuzzer's single process on the other), and run one after the other they were half of CI's
//! time.

mod cuda_build;
mod fuzz;

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo` for an inner build that the outer `cargo test` must not steer (its `CARGO_*`
/// variables and `RUSTFLAGS` removed; `CARGO_HOME` kept).
fn inner_cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
            cmd.env_remove(k);
        }
    }
    cmd
}
