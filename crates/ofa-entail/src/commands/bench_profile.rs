//! `bench --profile-ops`: one more run per batch size with every operation timed between two
//! synchronisations, and what each stage spent outside the timed operations.

use anyhow::Result;
use ofa_model::profile::{self, OpTime};
use ofa_model::StageTimes;

/// Runs `run` once with profiling on: its operations, largest first within each stage, then
/// each stage's remainder as `(not timed separately)`.
pub fn profiled(run: impl FnOnce() -> Result<StageTimes>) -> Result<Vec<OpTime>> {
    profile::enable(true);
    let times = run();
    let ops = profile::take();
    profile::enable(false);
    let times = times?;
    let mut rows = Vec::new();
    for (stage, ms) in [
        ("resnet", times.resnet_ms),
        ("encoder", times.encoder_ms),
        ("decoder", times.decoder_ms),
    ] {
        let mut mine: Vec<OpTime> = ops.iter().filter(|o| o.stage == stage).cloned().collect();
        mine.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let timed: f64 = mine.iter().map(|o| o.ms).sum();
        rows.extend(mine);
        rows.push(OpTime {
            stage,
            op: "(not timed separately)",
            calls: 1,
            ms: (ms - timed).max(0.0),
        });
    }
    Ok(rows)
}

pub fn print(batch_size: usize, rows: &[OpTime]) {
    println!("batch {batch_size}, per operation (one run, synchronised around each):");
    for r in rows {
        println!(
            "  {:<8} {:<34} {:>5} calls {:>9.2} ms",
            r.stage, r.op, r.calls, r.ms
        );
    }
}
