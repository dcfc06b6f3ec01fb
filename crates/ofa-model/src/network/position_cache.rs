//! Projected position rows, computed once. OFA's absolute position bias passes layer-normed
//! position embeddings through linear layers on every pass, yet each projected row depends only
//! on its position: image rows on the patch grid, text rows on their index. Keeping the
//! projected rows saves those products (about 50 ms of a CPU pass); a pass then concatenates
//! rows that are the same, bit for bit, as the ones it would compute, since a linear layer
//! treats each row on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{Result, Tensor};

/// Counts the values made by every cache of this kind in the process. A CUDA graph recorded
/// over cached tensors reads them at fixed addresses, and a value made anew frees the one it
/// replaces: graphs recorded before a change must not be replayed (`stage_graphs`).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many cached values have been made so far (see `GENERATION`).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// One value made for a key and a size, reused for that key at any size up to it: a new key,
/// or a larger size, makes it anew (`compute(size)` says what size it made).
#[derive(Debug)]
pub struct Grown<K, V> {
    slot: Mutex<Option<(K, usize, V)>>,
    /// Values this cache has made.
    made: AtomicU64,
}

impl<K, V> Default for Grown<K, V> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
            made: AtomicU64::new(0),
        }
    }
}

impl<K, V> Grown<K, V> {
    /// How many values this cache has made.
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }
}

impl<K: PartialEq, V: Clone> Grown<K, V> {
    pub fn get(
        &self,
        key: K,
        size: usize,
        compute: impl FnOnce(usize) -> Result<(usize, V)>,
    ) -> Result<V> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, kept, v)) = slot.as_ref() {
            if *k == key && *kept >= size {
                return Ok(v.clone());
            }
        }
        let (made, v) = compute(size)?;
        if made < size {
            candle_core::bail!("position cache: made for {made}, {size} needed");
        }
        *slot = Some((key, made, v.clone()));
        self.made.fetch_add(1, Ordering::Relaxed);
        GENERATION.fetch_add(1, Ordering::AcqRel);
        Ok(v)
    }
}

/// Per-layer attention biases, made for a key and a text length.
pub type LayerBiases<K> = Grown<K, Arc<Vec<Tensor>>>;

/// The projections (`[rows, D]` each, in the caller's order) of an image grid's position rows
/// and of the text position rows `0..R`, `R` growing to the longest text seen.
#[derive(Debug, Default)]
pub struct RowCache {
    image: Grown<(usize, usize), Vec<Tensor>>,
    text: Grown<(), Vec<Tensor>>,
}

impl RowCache {
    /// The projections of the rows of this patch grid, computed by `compute` on first use (a
    /// new grid replaces the old one: one model serves one image size).
    pub fn image(
        &self,
        grid: (usize, usize),
        compute: impl FnOnce() -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        self.image.get(grid, 0, |_| Ok((0, compute()?)))
    }

    /// Rows `0..t` of each text projection. When fewer are kept, `compute(t)` makes them anew
    /// and may return more than `t` rows, for longer texts to come.
    pub fn text(
        &self,
        t: usize,
        compute: impl FnOnce(usize) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let rows = self.text.get((), t, |t| {
            let rows = compute(t)?;
            let made = rows.iter().map(|r| r.dim(0)).collect::<Result<Vec<_>>>()?;
            Ok((made.into_iter().min().unwrap_or(usize::MAX), rows))
        })?;
        rows.iter().map(|r| r.narrow(0, 0, t)).collect()
    }
}

/// How many text rows to compute when `t` are needed: some room for longer texts, so the
/// rows are not recomputed for each new length, within the position table's `max` rows.
pub fn text_rows(t: usize, max: usize) -> usize {
    t.max(32).next_power_of_two().min(max).max(t)
}

/// How many text positions to build attention biases for when `t` are needed: rounded up to a
/// multiple of 32, so that lengths a little apart share them, within the table's `max` rows.
pub fn bias_rows(t: usize, max: usize) -> usize {
    (t.div_ceil(32).max(1) * 32).min(max).max(t)
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
    fn the_generation_moves_when_a_value_is_made_and_only_then() {
        let cache: Grown<(), u32> = Grown::default();
        let make = |size: usize| move |_| Ok((size, size as u32));
        cache.get((), 10, make(10)).unwrap();
        assert_eq!(cache.made(), 1);
        assert_eq!(
            cache.get((), 4, make(99)).unwrap(),
            10,
            "reused for a smaller size"
        );
        assert_eq!(cache.get((), 10, make(99)).unwrap(), 10);
        assert_eq!(cache.made(), 1);
        // Other tests' caches move the process-wide count too; this one's change must show.
        let before = generation();
        assert_eq!(
            cache.get((), 11, make(16)).unwrap(),
            16,
            "made anew when larger"
        );
        assert_eq!(cache.made(), 2);
        assert!(generation() > before);
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
        assert!(err.to_string().contains("made for 3, 4 needed"), "{err}");
    }
}
