//! Tensors used where they lie in a memory-mapped engine-layout file, never copied: the dense
//! layers' weights, already transposed or quantised by `convert`, are three quarters of the
//! model's bytes, and copying them out (and faulting in fresh memory for them) was most of a
//! start. The pages are the page cache's, shared by every process that maps the file.
//!
//! The file must not change in place while mapped: `convert` writes a new file and renames it
//! over the old one, so a running process keeps reading the inode it mapped.
//!
//! candle's tensors own their storage, and its `VarBuilder` hands out nothing else, so the
//! mapped tensors ride beside it for the length of one model's construction ([`within`]) and
//! the one constructor that can run on borrowed weights (`linear`) takes its own ([`take`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use memmap2::Mmap;

/// One tensor's bytes inside a mapping, which it keeps alive.
#[derive(Clone)]
pub struct MappedTensor {
    map: Arc<Mmap>,
    bytes: Range<usize>,
    dtype: DType,
    shape: Vec<usize>,
}

impl std::fmt::Debug for MappedTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedTensor({:?} {:?})", self.dtype, self.shape)
    }
}

impl MappedTensor {
    /// `bytes` of `map` as a `dtype` tensor of `shape`; `None` unless the range fits the
    /// mapping, the shape and the dtype's alignment (then the caller copies it instead).
    pub fn new(
        map: Arc<Mmap>,
        bytes: Range<usize>,
        dtype: DType,
        shape: Vec<usize>,
    ) -> Option<Self> {
        let size = dtype.size_in_bytes();
        let fits = bytes.end <= map.len()
            && bytes.start <= bytes.end
            && bytes.len() == shape.iter().product::<usize>() * size
            && (map.as_ptr() as usize + bytes.start).is_multiple_of(size);
        fits.then_some(Self {
            map,
            bytes,
            dtype,
            shape,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        &self.shape
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map[self.bytes.clone()]
    }

    /// The values of an f32 tensor.
    pub fn f32s(&self) -> Result<&[f32]> {
        if self.dtype != DType::F32 {
            candle_core::bail!("mapped tensor: f32 expected, not {:?}", self.dtype);
        }
        let b = self.bytes();
        // SAFETY: alignment and length were checked in `new`; every bit pattern is an f32.
        Ok(unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len() / 4) })
    }

    /// A copy as an owned tensor, for the paths that need candle's operations.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_raw_buffer(self.bytes(), self.dtype, &self.shape, &Device::Cpu)
    }
}

/// The mapped tensors of one load, by name.
#[derive(Default)]
pub struct MappedTensors {
    tensors: HashMap<String, MappedTensor>,
}

impl MappedTensors {
    pub fn insert(&mut self, name: String, t: MappedTensor) {
        self.tensors.insert(name, t);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<MappedTensors>> = const { RefCell::new(None) };
}

/// Runs `build` (a model's construction, on this thread) with `mapped` available to [`take`];
/// returns what it built and the tensors it did not take.
pub fn within<R>(mapped: MappedTensors, build: impl FnOnce() -> R) -> (R, MappedTensors) {
    /// Puts back what was there before, even if `build` panics.
    struct Scope(Option<MappedTensors>);
    impl Drop for Scope {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let scope = Scope(CURRENT.with(|c| c.replace(Some(mapped))));
    let built = build();
    let left = CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(scope);
    (built, left)
}

/// The mapped tensor `name` of the load under way, taken out of it.
pub fn take(name: &str) -> Option<MappedTensor> {
    CURRENT.with(|c| c.borrow_mut().as_mut()?.tensors.remove(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(len: usize) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; len]).unwrap();
        // SAFETY: a private temporary file nothing else writes.
        Arc::new(unsafe { Mmap::map(&f) }.unwrap())
    }

    #[test]
    fn only_a_range_that_fits_its_shape_and_alignment_is_mapped() {
        let map = mapping(64);
        let ok = MappedTensor::new(map.clone(), 8..24, DType::F32, vec![2, 2]).unwrap();
        assert_eq!(ok.f32s().unwrap().len(), 4);
        assert_eq!(ok.to_tensor().unwrap().dims(), &[2, 2]);
        assert!(MappedTensor::new(map.clone(), 9..25, DType::F32, vec![4]).is_none());
        assert!(MappedTensor::new(map.clone(), 8..24, DType::F32, vec![3]).is_none());
        assert!(MappedTensor::new(map.clone(), 56..72, DType::F32, vec![4]).is_none());
        let bytes = MappedTensor::new(map, 3..8, DType::U8, vec![5]).unwrap();
        assert!(bytes.f32s().is_err());
    }

    #[test]
    fn a_build_takes_what_it_uses_and_the_rest_comes_back() {
        let map = mapping(16);
        let mut mapped = MappedTensors::default();
        for name in ["a", "b"] {
            let t = MappedTensor::new(map.clone(), 0..16, DType::U8, vec![16]).unwrap();
            mapped.insert(name.into(), t);
        }
        let (took, left) = within(mapped, || (take("a").is_some(), take("a").is_some()));
        assert_eq!(took, (true, false));
        assert_eq!(left.names().collect::<Vec<_>>(), ["b"]);
        // Nothing lingers for the next build on this thread, even after a panic.
        assert!(take("b").is_none());
        let panicked = std::panic::catch_unwind(|| within(left, || panic!("a failed build")));
        assert!(panicked.is_err());
        assert!(take("b").is_none());
    }
}
