//! Which kernels run: the fused CPU kernels of this crate, or candle's generic operations (what
//! a GPU runs). The generic path can be forced on the CPU, so tests check the GPU's code path
//! (and its bf16/f16 handling) on any machine, against the fused one.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;

static GENERIC: AtomicBool = AtomicBool::new(false);
static FOLDED: AtomicBool = AtomicBool::new(false);

/// Runs candle's generic operations on the CPU too (process-wide; for tests and comparisons).
pub fn force_generic(on: bool) {
    GENERIC.store(on, Ordering::Relaxed);
}

/// Folds the key/value projections into every attention (`folded_attention`), not only where
/// it pays, so tests check that path on the tiny model too (process-wide).
pub fn force_folded(on: bool) {
    FOLDED.store(on, Ordering::Relaxed);
}

pub(crate) fn folded_forced() -> bool {
    FOLDED.load(Ordering::Relaxed)
}

pub fn generic_forced() -> bool {
    GENERIC.load(Ordering::Relaxed)
}

/// Whether work on `device` takes the fused CPU kernels.
pub(crate) fn fused(device: &Device) -> bool {
    device.is_cpu() && !generic_forced()
}
