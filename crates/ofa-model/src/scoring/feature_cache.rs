//! Image features kept across batches, least recently used out, within a byte budget: the
//! common "one product photo, many claims" pattern runs the ResNet once. Keyed by the SHA-256
//! of the resized pixels the ResNet reads, so a hit is exactly the tensor a recomputation
//! would give, and of the caller's scope, so scopes never see each other's entries.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Tensor;
use sha2::{Digest, Sha256};

pub type Key = [u8; 32];

pub fn key(scope: u64, pixels: &[u8]) -> Key {
    let mut h = Sha256::new();
    h.update(scope.to_le_bytes());
    h.update(pixels);
    h.finalize().into()
}

/// The distinct images among a batch's `(pixels, scope)`: for each, the first pair that holds it
/// and (when `keyed`) its cache key; and for each pair, the index of its image. Images are
/// never shared across scopes: within one, a shared pixel buffer is one image without
/// hashing, and with keys, equal pixels are too.
pub fn distinct(
    images: &[(&Arc<[u8]>, u64)],
    keyed: bool,
) -> (Vec<(usize, Option<Key>)>, Vec<u32>) {
    let mut firsts: Vec<(usize, Option<Key>)> = Vec::new();
    let mut which = Vec::with_capacity(images.len());
    for (b, (pixels, scope)) in images.iter().enumerate() {
        let shared = firsts
            .iter()
            .position(|(f, _)| Arc::ptr_eq(images[*f].0, pixels) && images[*f].1 == *scope);
        let i = shared.unwrap_or_else(|| {
            let key = keyed.then(|| key(*scope, pixels));
            key.and_then(|k| firsts.iter().position(|(_, fk)| *fk == Some(k)))
                .unwrap_or_else(|| {
                    firsts.push((b, key));
                    firsts.len() - 1
                })
        });
        which.push(i as u32);
    }
    (firsts, which)
}

/// Pixel buffers whose features were computed last, known by the buffer's identity: a request's
/// pairs share one decoded buffer, so its later batches find their image here without hashing.
/// A `Weak` keeps the allocation reserved, so no other buffer can take its address meanwhile.
#[derive(Debug, Default)]
pub struct RecentFeatures {
    entries: Vec<(std::sync::Weak<[u8]>, u64, Tensor)>,
}

/// Buffers remembered: enough for the images of a few interleaved requests.
const RECENT: usize = 4;

impl RecentFeatures {
    pub fn get(&mut self, pixels: &Arc<[u8]>, scope: u64) -> Option<Tensor> {
        self.entries.retain(|(w, _, _)| w.strong_count() > 0);
        self.entries
            .iter()
            .find(|(w, s, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(pixels)) && *s == scope)
            .map(|(_, _, t)| t.clone())
    }

    pub fn insert(&mut self, pixels: &Arc<[u8]>, scope: u64, features: &Tensor) {
        if self.entries.len() >= RECENT {
            self.entries.remove(0);
        }
        self.entries
            .push((Arc::downgrade(pixels), scope, features.clone()));
    }
}

#[derive(Debug)]
pub struct FeatureCache {
    capacity: u64,
    bytes: u64,
    tick: u64,
    entries: HashMap<Key, (Tensor, u64)>,
}

fn size_of(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl FeatureCache {
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity: capacity_bytes,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&mut self, k: &Key) -> Option<Tensor> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(k).map(|(t, used)| {
            *used = tick;
            t.clone()
        })
    }

    /// Keeps `features` (one image's), evicting the least recently used until it fits; a tensor
    /// larger than the whole budget is not kept.
    pub fn insert(&mut self, k: Key, features: Tensor) {
        let size = size_of(&features);
        if size > self.capacity {
            return;
        }
        if let Some((old, _)) = self.entries.remove(&k) {
            self.bytes -= size_of(&old);
        }
        while self.bytes + size > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((t, _)) = self.entries.remove(&oldest) {
                self.bytes -= size_of(&t);
            }
        }
        self.tick += 1;
        self.bytes += size;
        self.entries.insert(k, (features, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: f32) -> Tensor {
        Tensor::new(&[v; 4], &Device::Cpu).unwrap()
    }

    #[test]
    fn distinct_images_are_shared_buffers_or_equal_pixels_in_one_scope() {
        let pixels = |p: &[u8]| -> Arc<[u8]> { Arc::from(p) };
        let (a, a2, b) = (pixels(b"aa"), pixels(b"aa"), pixels(b"bb"));
        let batch = [(&a, 0), (&a, 0), (&a2, 0), (&b, 0), (&a2, 7)];
        let (firsts, which) = distinct(&batch, false);
        assert_eq!(which, [0, 0, 1, 2, 3], "no keys: only shared buffers");
        assert!(firsts.iter().all(|(_, k)| k.is_none()));
        let (firsts, which) = distinct(&batch, true);
        assert_eq!(
            which,
            [0, 0, 0, 1, 2],
            "equal pixels in one scope, not across scopes"
        );
        assert_eq!(
            firsts.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [0, 3, 4]
        );
    }

    #[test]
    fn least_recently_used_goes_first_within_the_budget() {
        let mut c = FeatureCache::new(32); // two 16-byte tensors
        c.insert(key(0, b"a"), t(1.0));
        c.insert(key(0, b"b"), t(2.0));
        assert!(c.get(&key(0, b"a")).is_some()); // b is now the oldest
        c.insert(key(0, b"c"), t(3.0));
        assert_eq!(c.len(), 2);
        assert!(c.get(&key(0, b"b")).is_none());
        let a: Vec<f32> = c.get(&key(0, b"a")).unwrap().to_vec1().unwrap();
        assert_eq!(a, [1.0; 4]);
        assert_eq!(c.bytes(), 32);
        assert!(
            c.get(&key(1, b"a")).is_none(),
            "another scope's entry is not seen"
        );
        c.insert(
            key(0, b"huge"),
            Tensor::new(&[0f32; 16], &Device::Cpu).unwrap(),
        );
        assert!(
            c.get(&key(0, b"huge")).is_none(),
            "larger than the budget: not kept"
        );
    }
}
