//! `x·Wᵀ + b` on the CPU in one call:
//! - for many rows, gemm accumulating onto the broadcast bias, instead of candle's matmul and
//!   then a second pass over the output to add the bias;
//! - for a handful of rows (the decoder's few tokens), dot products straight off the weights.
//!   gemm packs the whole weight matrix on every call, which for a few rows costs as much as
//!   the product and doubles the memory traffic of a memory-bound layer (the decoder spent
//!   ~0.15 s of 0.55 s per pair there).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Up to this many rows the dot-product path wins over gemm (measured on OFA-large shapes).
pub const MAX_ROWS: usize = 32;

/// Output features per task.
const BLOCK: usize = 32;
const LANES: usize = 16;

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    // Lane-wise partial sums, so the compiler keeps them in vector registers.
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out[r·n + o] = dot(x_r, w_o) + b_o` for the outputs `o0..o0 + out.len() / rows` (written
/// output-major into `out`).
#[inline(always)]
fn block_generic(x: &[f32], w: &[f32], k: usize, o0: usize, rows: usize, out: &mut [f32]) {
    for (j, o) in out.chunks_mut(rows).enumerate() {
        let wo = &w[(o0 + j) * k..(o0 + j + 1) * k];
        for (r, v) in o.iter_mut().enumerate() {
            *v = dot_generic(&x[r * k..(r + 1) * k], wo);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_avx512(x: &[f32], w: &[f32], k: usize, o0: usize, rows: usize, out: &mut [f32]) {
    block_generic(x, w, k, o0, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], w: &[f32], k: usize, o0: usize, rows: usize, out: &mut [f32]) {
    block_generic(x, w, k, o0, rows, out)
}

fn block(x: &[f32], w: &[f32], k: usize, o0: usize, rows: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { block_avx512(x, w, k, o0, rows, out) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { block_avx2(x, w, k, o0, rows, out) };
        }
    }
    block_generic(x, w, k, o0, rows, out)
}

struct CpuLinear<'a> {
    bias: Option<&'a [f32]>,
}

/// `[rows, n]` from the output-major blocks of the few-row path.
fn skinny(x: &[f32], w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let rows = x.len() / k;
    let mut t = vec![0f32; n * rows];
    t.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(i, o)| block(x, w, k, i * BLOCK, rows, o));
    let mut out = vec![0f32; rows * n];
    for (r, row) in out.chunks_mut(n).enumerate() {
        for (o, v) in row.iter_mut().enumerate() {
            *v = t[o * rows + r] + bias.map_or(0.0, |b| b[o]);
        }
    }
    out
}

fn with_gemm(x: &[f32], w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let rows = x.len() / k;
    let mut out = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * n],
    };
    // SAFETY: `x` is `[rows, k]`, `w` `[n, k]` (read as `Wᵀ` through its strides) and `out`
    // `[rows, n]`, all row-major and in bounds.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    out
}

impl CustomOp2 for CpuLinear<'_> {
    fn name(&self) -> &'static str {
        "cpu-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = crate::conv::f32_slice(xs, xl)?;
        let w = crate::conv::f32_slice(ws, wl)?;
        let (n, k) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        if dims.last() != Some(&k) || self.bias.is_some_and(|b| b.len() != n) {
            candle_core::bail!(
                "linear: x {:?} does not fit weights {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let out = if x.len() / k <= MAX_ROWS {
            skinny(x, w, k, n, self.bias)
        } else {
            with_gemm(x, w, k, n, self.bias)
        };
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = n;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `x·Wᵀ (+ b)` for `x` `[…, K]`, `w` `[N, K]`; f32 on the CPU.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &CpuLinear { bias })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_matmul_with_and_without_bias_for_odd_sizes() {
        let d = Device::Cpu;
        // Both paths: a few rows, and more than MAX_ROWS.
        for (rows, k, n) in [
            (1, 7, 3),
            (5, 1024, 100),
            (3, 33, 70),
            (MAX_ROWS + 9, 65, 130),
        ] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, k), &d).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &d).unwrap();
            let b: Vec<f32> = (0..n).map(|v| v as f32 * 0.01).collect();
            let bt = Tensor::from_slice(&b, n, &d).unwrap();
            let want = x
                .broadcast_matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            let got = linear(&x, &w, Some(&b)).unwrap();
            assert_eq!(got.dims(), &[1, rows, n]);
            let diff = crate::max_diff(want, got);
            assert!(diff < 1e-4, "{rows}×{k}→{n}: {diff}");
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let diff = crate::max_diff(want, linear(&x, &w, None).unwrap());
            assert!(diff < 1e-4, "{rows}×{k}→{n} without bias: {diff}");
        }
    }
}
