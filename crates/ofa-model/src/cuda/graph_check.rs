//! Whether a recorded CUDA graph may stand in for its stage's plain run: on the device it runs
//! on, once per shape, right after recording, its replay must give the plain run's results and
//! take less time. A graph that reads a buffer it should not, or replays kernels whose shape
//! parameters it never captured, gives other numbers; one that does not pay (a batch already
//! bound by the GPU's arithmetic) only costs memory. Either way the shape runs plain, and why is
//! reported.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

/// What the check found for one shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphCheck {
    /// RMS of (replay − plain) over RMS of plain, all results together.
    pub difference: f64,
    /// One plain run and one replay (inputs copied in, results out), each between two
    /// synchronisations with the device.
    pub plain_ms: f64,
    pub replay_ms: f64,
}

/// Largest relative difference a replay may show for results in `dtype`. The same kernels on
/// the same inputs should agree bit for bit; a library choosing another algorithm while
/// recording may move the last bits (a few 1e-7 relative in f32, an ulp of a half type, each
/// carried through the layers), whereas reading the wrong buffer changes results wholesale.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 | DType::F64 => 1e-4,
        _ => 1e-2,
    }
}

/// RMS of `replayed − plain` over RMS of `plain`, all tensors together, in f32. NaN where
/// either holds a NaN; 0 for two all-zero sets.
pub fn relative_difference(plain: &[Tensor], replayed: &[Tensor]) -> Result<f64> {
    if plain.len() != replayed.len() {
        candle_core::bail!(
            "{} results replayed where the plain run gave {}",
            replayed.len(),
            plain.len()
        );
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (p, r) in plain.iter().zip(replayed) {
        if p.shape() != r.shape() {
            candle_core::bail!("a replayed result of {:?} for {:?}", r.shape(), p.shape());
        }
        let p = p.to_dtype(DType::F32)?;
        let r = r.to_dtype(DType::F32)?;
        diff += f64::from((&r - &p)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
        norm += f64::from(p.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(if diff == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    })
}

/// The least precise type among `results` (the one whose tolerance applies).
pub fn least_precise(results: &[Tensor]) -> DType {
    results
        .iter()
        .map(Tensor::dtype)
        .find(|d| matches!(d, DType::BF16 | DType::F16))
        .unwrap_or(DType::F32)
}

impl GraphCheck {
    /// `Err(why)` when the graph must not replace the plain run of results in `dtype`.
    pub fn verdict(&self, dtype: DType) -> std::result::Result<(), String> {
        // A NaN difference fails too.
        if self.difference.is_nan() || self.difference > tolerance(dtype) {
            return Err(format!(
                "its replay differs from the plain run (relative RMS difference {:.1e}, at most {:.0e} allowed in {dtype:?})",
                self.difference,
                tolerance(dtype)
            ));
        }
        if self.replay_ms >= self.plain_ms {
            return Err(format!(
                "its replay took {:.2} ms, the plain run {:.2} ms",
                self.replay_ms, self.plain_ms
            ));
        }
        Ok(())
    }

    /// For logs: the times and the difference.
    pub fn describe(&self) -> String {
        format!(
            "plain {:.2} ms, replay {:.2} ms, difference {:.1e}",
            self.plain_ms, self.replay_ms, self.difference
        )
    }
}

/// `f`'s result and its wall time in ms, between two synchronisations with `device`.
pub fn time_ms<T>(device: &Device, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    device.synchronize()?;
    let t = Instant::now();
    let out = f()?;
    device.synchronize()?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_difference_is_relative_and_over_all_results() {
        let plain = [t(&[3.0, 4.0]), t(&[0.0])];
        assert_eq!(relative_difference(&plain, &plain).unwrap(), 0.0);
        // RMS ratio: sqrt(0.25 / 25) = 0.1, whatever tensor the difference is in.
        let off = [t(&[3.0, 4.0]), t(&[0.5])];
        assert!((relative_difference(&plain, &off).unwrap() - 0.1).abs() < 1e-9);
        let off = [t(&[3.5, 4.0]), t(&[0.0])];
        assert!((relative_difference(&plain, &off).unwrap() - 0.1).abs() < 1e-9);
        // Half types are compared in f32.
        let half: Vec<Tensor> = plain
            .iter()
            .map(|x| x.to_dtype(DType::BF16).unwrap())
            .collect();
        assert_eq!(relative_difference(&plain, &half).unwrap(), 0.0);
        assert_eq!(least_precise(&half), DType::BF16);
        assert_eq!(least_precise(&plain), DType::F32);
        // A NaN in the replay is a difference, not a pass.
        let nan = [t(&[3.0, f32::NAN]), t(&[0.0])];
        assert!(relative_difference(&plain, &nan).unwrap().is_nan());
        assert!(relative_difference(&plain, &plain[..1]).is_err());
        assert!(relative_difference(&plain, &[t(&[3.0]), t(&[0.0])]).is_err());
    }

    #[test]
    fn a_graph_is_kept_only_when_it_agrees_and_is_faster() {
        let check = |difference, plain_ms, replay_ms| GraphCheck {
            difference,
            plain_ms,
            replay_ms,
        };
        assert_eq!(check(0.0, 20.0, 4.0).verdict(DType::F32), Ok(()));
        assert_eq!(check(5e-3, 20.0, 4.0).verdict(DType::BF16), Ok(()));
        let why = check(5e-3, 20.0, 4.0).verdict(DType::F32).unwrap_err();
        assert!(why.contains("differs from the plain run"), "{why}");
        assert!(check(0.5, 20.0, 4.0).verdict(DType::BF16).is_err());
        assert!(check(f64::NAN, 20.0, 4.0).verdict(DType::F32).is_err());
        let why = check(0.0, 20.0, 20.5).verdict(DType::F32).unwrap_err();
        assert!(
            why.contains("replay took 20.50 ms, the plain run 20.00 ms"),
            "{why}"
        );
        assert!(check(0.0, 1.0, 0.5).describe().contains("replay 0.50 ms"));
    }

    #[test]
    fn timing_synchronises_and_returns_the_result() {
        let (v, ms) = time_ms(&Device::Cpu, || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(7)
        })
        .unwrap();
        assert_eq!(v, 7);
        assert!((5.0..1000.0).contains(&ms), "{ms}");
    }
}
