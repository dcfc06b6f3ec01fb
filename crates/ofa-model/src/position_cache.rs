//! Projected position rows, computed once. OFA's absolute position bias passes layer-normed
//! position embeddings through linear layers on every pass, yet each projected row depends only
//! on its position: image rows on the patch grid, text rows on their index. Keeping the
//! projected rows saves those products (about 50 ms of a CPU pass); a pass then concatenates
//! rows that are the same, bit for bit, as the ones it would compute, since a linear layer
//! treats each row on its own.

use std::sync::{Mutex, PoisonError};

use candle_core::{Result, Tensor};

/// A patch grid and its rows' projections.
type GridRows = ((usize, usize), Vec<Tensor>);

/// The projections (`[rows, D]` each, in the caller's order) of an image grid's position rows
/// and of the text position rows `0..R`, `R` growing to the longest text seen.
#[derive(Debug, Default)]
pub struct RowCache {
    image: Mutex<Option<GridRows>>,
    text: Mutex<Option<Vec<Tensor>>>,
}

impl RowCache {
    /// The projections of the rows of this patch grid, computed by `compute` on first use (a
    /// new grid replaces the old one: one model serves one image size).
    pub fn image(
        &self,
        grid: (usize, usize),
        compute: impl FnOnce() -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let mut slot = self.image.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((g, rows)) = slot.as_ref() {
            if *g == grid {
                return Ok(rows.clone());
            }
        }
        let rows = compute()?;
        *slot = Some((grid, rows.clone()));
        Ok(rows)
    }

    /// Rows `0..t` of each text projection. When fewer are kept, `compute(t)` makes them anew
    /// and may return more than `t` rows, for longer texts to come.
    pub fn text(
        &self,
        t: usize,
        compute: impl FnOnce(usize) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let mut slot = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match slot.as_ref().and_then(|rows| rows.first()) {
            Some(first) => Some(first.dim(0)?),
            None => None,
        };
        if kept.is_none_or(|kept| kept < t) {
            let rows = compute(t)?;
            for r in &rows {
                if r.dim(0)? < t {
                    candle_core::bail!("position cache: {} rows computed, {t} needed", r.dim(0)?);
                }
            }
            *slot = Some(rows);
        }
        let rows = slot.as_ref().expect("filled above");
        rows.iter().map(|r| r.narrow(0, 0, t)).collect()
    }
}

/// How many text rows to compute when `t` are needed: some room for longer texts, so the
/// rows are not recomputed for each new length, within the position table's `max` rows.
pub fn text_rows(t: usize, max: usize) -> usize {
    t.max(32).next_power_of_two().min(max).max(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn text_rows_grow_and_are_reused() {
        let cache = RowCache::default();
        let d = Device::Cpu;
        let mut calls = Vec::new();
        let mut get = |t: usize| {
            cache
                .text(t, |n| {
                    let n = text_rows(n, 100);
                    calls.push(n);
                    let rows: Vec<f32> = (0..n * 2).map(|v| v as f32).collect();
                    Ok(vec![Tensor::from_vec(rows, (n, 2), &d)?])
                })
                .unwrap()
        };
        assert_eq!(get(5)[0].dims(), [5, 2]);
        assert_eq!(get(20)[0].to_vec2::<f32>().unwrap()[19], [38.0, 39.0]);
        assert_eq!(get(40)[0].dims(), [40, 2]);
        assert_eq!(get(0)[0].dims(), [0, 2]);
        assert_eq!(get(100)[0].dims(), [100, 2]);
        // Computed for 5 (32 rows), then 40 (64), then 100 (the table's 100); reused otherwise.
        assert_eq!(calls, [32, 64, 100]);
    }

    #[test]
    fn a_new_grid_replaces_the_old() {
        let cache = RowCache::default();
        let d = Device::Cpu;
        let mut calls = 0;
        let mut get = |g: (usize, usize)| {
            cache
                .image(g, || {
                    calls += 1;
                    Ok(vec![Tensor::zeros(
                        (g.0 * g.1, 2),
                        candle_core::DType::F32,
                        &d,
                    )?])
                })
                .unwrap()
        };
        assert_eq!(get((3, 3))[0].dims(), [9, 2]);
        assert_eq!(get((3, 3))[0].dims(), [9, 2]);
        assert_eq!(get((2, 4))[0].dims(), [8, 2]);
        assert_eq!(calls, 2);
    }

    #[test]
    fn too_few_rows_is_an_error() {
        let cache = RowCache::default();
        let d = Device::Cpu;
        let err = cache
            .text(4, |_| {
                Ok(vec![Tensor::zeros((3, 2), candle_core::DType::F32, &d)?])
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("3 rows computed, 4 needed"),
            "{err}"
        );
    }
}
