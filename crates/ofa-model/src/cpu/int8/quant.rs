//! int8 quantisation for the CPU kernels: weights packed once, activations per row.
//!
//! Weights are kept packed for the AVX-512 VNNI kernel (`int8_vnni`): blocks of 64 outputs, in
//! each block 4 consecutive inputs of an output side by side, so one 64-byte load feeds one
//! `vpdpbusd` for 16 outputs. VNNI multiplies unsigned by signed bytes, so activations are
//! stored as `q + 128` and `128·Σw` is taken off each sum afterwards.

use candle_core::{CpuStorage, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Outputs per packed block (4 vectors of 16 lanes).
pub const BLOCK: usize = 64;

/// A weight matrix `[n, k]` quantised and packed.
#[derive(Debug, Clone)]
pub struct Int8Weights {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of 4.
    pub kp: usize,
    /// `[ceil(n / 64)][kp / 4][64][4]`, zero past `n` and `k`: i8 values stored as u8.
    packed: PackedBytes,
    /// Per output: the weights are `packed · scale`.
    pub scale: Vec<f32>,
    /// Per output: `128 · Σ_k q[o, k]`, what the `+128` of the activations adds.
    pub offset: Vec<i32>,
}

impl Int8Weights {
    /// Quantises `w` `[n, k]` (f32 on the host), each row by its largest magnitude.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        let kp = k.div_ceil(4) * 4;
        let blocks = n.div_ceil(BLOCK);
        let mut packed = vec![0u8; blocks * kp * BLOCK];
        let mut scale = vec![0f32; n];
        let mut offset = vec![0i32; n];
        packed
            .par_chunks_mut(kp * BLOCK)
            .zip(scale.par_chunks_mut(BLOCK))
            .zip(offset.par_chunks_mut(BLOCK))
            .enumerate()
            .for_each(|(b, ((dst, scale), offset))| {
                for (j, (s, off)) in scale.iter_mut().zip(offset.iter_mut()).enumerate() {
                    let row = &w[(b * BLOCK + j) * k..(b * BLOCK + j + 1) * k];
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *s = if max > 0.0 { max / 127.0 } else { 1.0 };
                    let mut sum = 0i32;
                    for (c, &v) in row.iter().enumerate() {
                        let q = (v / *s).round().clamp(-127.0, 127.0) as i8;
                        dst[(c / 4) * BLOCK * 4 + j * 4 + c % 4] = q as u8;
                        sum += i32::from(q);
                    }
                    *off = 128 * sum;
                }
            });
        let len = packed.len();
        Self {
            n,
            k,
            kp,
            packed: PackedBytes::Owned(
                Tensor::from_vec(packed, len, &Device::Cpu).expect("length matches"),
            ),
            scale,
            offset,
        }
    }

    /// The packed weights, borrowed for the kernels.
    pub fn with_packed<R>(&self, f: impl FnOnce(Packed<'_>) -> R) -> Result<R> {
        let guard;
        let bytes = match &self.packed {
            PackedBytes::Mapped(m) => m.bytes(),
            PackedBytes::Owned(t) => {
                guard = t.storage_and_layout();
                match (&*guard.0, guard.1.contiguous_offsets()) {
                    (candle_core::Storage::Cpu(CpuStorage::U8(v)), Some((a, b))) => &v[a..b],
                    _ => candle_core::bail!("int8 weights: contiguous u8 CPU bytes expected"),
                }
            }
        };
        // SAFETY: u8 and i8 have the same size and alignment; every bit pattern is valid.
        let data = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const i8, bytes.len()) };
        Ok(f(Packed { data, kp: self.kp }))
    }

    /// Stored as three tensors (packed bytes as u8, scales, offsets), to travel through a
    /// `VarBuilder` and an engine-layout file.
    pub fn to_tensors(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let packed = match &self.packed {
            PackedBytes::Owned(t) => t.clone(),
            PackedBytes::Mapped(m) => m.to_tensor()?,
        };
        Ok((
            packed,
            Tensor::from_vec(self.scale.clone(), self.n, &Device::Cpu)?,
            Tensor::from_vec(self.offset.clone(), self.n, &Device::Cpu)?,
        ))
    }

    /// The inverse of [`Int8Weights::to_tensors`], for a `[n, k]` weight, the packed bytes
    /// owned or left in a file's mapping; the offsets recomputed when not given.
    pub fn from_parts(
        packed: PackedBytes,
        scale: &Tensor,
        offset: Option<&Tensor>,
        n: usize,
        k: usize,
    ) -> Result<Self> {
        let kp = k.div_ceil(4) * 4;
        let scale = scale.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut w = Self {
            n,
            k,
            kp,
            packed,
            scale,
            offset: Vec::new(),
        };
        let bytes = w.with_packed(|p| p.data.len())?;
        if bytes != n.div_ceil(BLOCK) * kp * BLOCK || w.scale.len() != n {
            candle_core::bail!(
                "int8 weights: {bytes} bytes and {} scales do not fit [{n}, {k}]",
                w.scale.len()
            );
        }
        w.offset = match offset {
            Some(o) if o.elem_count() == n => o.to_dtype(DType::I32)?.to_vec1::<i32>()?,
            Some(o) => {
                candle_core::bail!("int8 weights: {} offsets for {n} outputs", o.elem_count())
            }
            None => w.with_packed(|p| offsets(p, n))?,
        };
        Ok(w)
    }
}

/// Per output, `128 · Σ_k q[o, k]`: block by block in parallel, each read front to back (four
/// inputs of its 64 outputs at a time).
fn offsets(p: Packed<'_>, n: usize) -> Vec<i32> {
    p.data
        .par_chunks(p.kp * BLOCK)
        .enumerate()
        .flat_map_iter(|(b, block)| {
            let mut sums = [0i32; BLOCK];
            for group in block.chunks_exact(BLOCK * 4) {
                for (sum, four) in sums.iter_mut().zip(group.chunks_exact(4)) {
                    *sum += four.iter().map(|&v| i32::from(v)).sum::<i32>();
                }
            }
            let outputs = (n - b * BLOCK).min(BLOCK);
            sums.into_iter().take(outputs).map(|s| 128 * s)
        })
        .collect()
}

/// Where the packed bytes live: memory of their own, or an engine-layout file's mapping.
#[derive(Debug, Clone)]
pub enum PackedBytes {
    Owned(Tensor),
    Mapped(crate::load::mapped::MappedTensor),
}

/// Packed weights as the kernels read them.
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    pub data: &'a [i8],
    pub kp: usize,
}

/// Activations quantised per row: `q + 128` as u8, `[rows, kp]`, and each row's scale.
pub struct Int8Rows {
    pub q: Vec<u8>,
    pub scale: Vec<f32>,
    pub kp: usize,
}

/// Nearest integer (ties to even) of `|v| < 2^22`: adding 1.5·2^23 leaves it in the low
/// mantissa bits. `round()` and `as i32` would each keep the loop from vectorising.
#[inline(always)]
fn round_to_int(v: f32) -> i32 {
    (v + 12_582_912.0).to_bits() as i32 - 0x4B40_0000
}

/// The largest magnitude in `x`, 16 lanes at a time: a plain `fold` with `f32::max` stays
/// scalar (its NaN rules keep the compiler from reordering it).
fn max_abs(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let m = tail
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    lanes.iter().fold(m, |m, &v| if v > m { v } else { m })
}

/// One row `x` into `q` (`q + 128`, as long as `x` or longer, padding left alone); its scale.
pub fn quantize_row(x: &[f32], q: &mut [u8]) -> f32 {
    let max = max_abs(x);
    let s = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (round_to_int((v * inv).clamp(-127.0, 127.0)) + 128) as u8;
    }
    s
}

pub fn quantize_rows(x: &[f32], k: usize) -> Int8Rows {
    let kp = k.div_ceil(4) * 4;
    let rows = x.len() / k;
    let mut q = vec![128u8; rows * kp];
    let mut scale = vec![0f32; rows];
    q.par_chunks_mut(kp)
        .zip(scale.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((q, s), x)| *s = quantize_row(x, q));
    Int8Rows { q, scale, kp }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_survive_the_tensor_round_trip() {
        let w: Vec<f32> = (0..70 * 9).map(|i| (i % 17) as f32 - 8.5).collect();
        let q = Int8Weights::quantize(&w, 70, 9);
        let (p, s, o) = q.to_tensors().unwrap();
        let bytes = |w: &Int8Weights| w.with_packed(|p| p.data.to_vec()).unwrap();
        // With the offsets stored, and recomputed from the bytes when they are not.
        for offset in [Some(&o), None] {
            let back =
                Int8Weights::from_parts(PackedBytes::Owned(p.clone()), &s, offset, 70, 9).unwrap();
            assert_eq!(
                (bytes(&back), &back.scale, &back.offset),
                (bytes(&q), &q.scale, &q.offset)
            );
        }
        let owned = || PackedBytes::Owned(p.clone());
        assert!(Int8Weights::from_parts(owned(), &s, None, 71, 9).is_err());
        let short = o.narrow(0, 0, 69).unwrap();
        assert!(Int8Weights::from_parts(owned(), &s, Some(&short), 70, 9).is_err());
    }
}
