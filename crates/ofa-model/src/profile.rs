//! Time per kind of operation inside a pass (`bench --profile-ops`): each named step runs
//! between two synchronisations with the device, since a GPU runs work asynchronously and a
//! stage's total does not say which of its hundreds of operations is slow. Process-wide, off
//! by default; while on, stages run plain, not from CUDA graphs (a recording cannot wait for
//! the device).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{Device, Result};

static ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

thread_local! {
    /// The stage running on this thread (`resnet`, `encoder`, `decoder`), which names share.
    static STAGE: Cell<&'static str> = const { Cell::new("") };
}

/// One kind of operation's share of what ran while profiling was on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    pub stage: &'static str,
    pub op: &'static str,
    pub calls: u64,
    pub ms: f64,
}

/// Turns the timing on or off (for the whole process) and forgets what was timed so far.
pub fn enable(on: bool) {
    take();
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// What was timed since the last call, in the order each kind first ran.
pub fn take() -> Vec<OpTime> {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// `f()` with the steps it times filed under `stage`.
pub fn stage<T>(stage: &'static str, f: impl FnOnce() -> T) -> T {
    let outer = STAGE.with(|s| s.replace(stage));
    let out = f();
    STAGE.with(|s| s.set(outer));
    out
}

fn record(op: &'static str, elapsed: Duration) {
    let stage = STAGE.with(Cell::get);
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let ms = elapsed.as_secs_f64() * 1e3;
    match totals.iter_mut().find(|t| t.op == op && t.stage == stage) {
        Some(t) => {
            t.calls += 1;
            t.ms += ms;
        }
        None => totals.push(OpTime {
            stage,
            op,
            calls: 1,
            ms,
        }),
    }
}

/// `f()`, timed under `op` when profiling is on. Steps must not nest (the outer one would
/// count the inner one's time too).
pub fn step<T>(op: &'static str, device: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    timed(op, device, f, |_| true)
}

/// [`step`] for work that may decline (`None`): only work done is counted.
pub fn step_some<T>(
    op: &'static str,
    device: &Device,
    f: impl FnOnce() -> Result<Option<T>>,
) -> Result<Option<T>> {
    timed(op, device, f, Option::is_some)
}

fn timed<T>(
    op: &'static str,
    device: &Device,
    f: impl FnOnce() -> Result<T>,
    counts: impl FnOnce(&T) -> bool,
) -> Result<T> {
    if !enabled() {
        return f();
    }
    device.synchronize()?;
    let t = Instant::now();
    let out = f()?;
    device.synchronize()?;
    if counts(&out) {
        record(op, t.elapsed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_summed_per_kind_in_first_run_order_only_while_on() {
        let d = Device::Cpu;
        let sleep = |ms| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        };
        // Other tests may run model code meanwhile: only this test's names are looked at.
        let mine = |times: Vec<OpTime>| -> Vec<OpTime> {
            times
                .into_iter()
                .filter(|t| t.op.starts_with("test "))
                .collect()
        };
        step("test off", &d, || sleep(1)).unwrap();
        enable(true);
        step("test b", &d, || sleep(3)).unwrap();
        step("test a", &d, || sleep(1)).unwrap();
        stage("test stage", || step("test b", &d, || sleep(1))).unwrap();
        step("test b", &d, || sleep(3)).unwrap();
        let times = mine(take());
        enable(false);
        step("test off", &d, || sleep(1)).unwrap();
        assert!(mine(take()).is_empty());
        let names: Vec<_> = times.iter().map(|t| (t.stage, t.op, t.calls)).collect();
        assert_eq!(
            names,
            [
                ("", "test b", 2),
                ("", "test a", 1),
                ("test stage", "test b", 1)
            ]
        );
        assert!(times[0].ms >= 6.0 && times[1].ms >= 1.0, "{times:?}");
        assert!(step("test err", &d, || -> Result<()> {
            candle_core::bail!("no")
        })
        .is_err());
        enable(true);
        step_some("test declined", &d, || Ok(None::<()>)).unwrap();
        step_some("test done", &d, || Ok(Some(()))).unwrap();
        let names: Vec<_> = mine(take()).iter().map(|t| t.op).collect();
        enable(false);
        assert_eq!(names, ["test done"]);
    }
}
