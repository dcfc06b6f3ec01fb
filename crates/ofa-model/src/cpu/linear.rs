//! `x·Wᵀ + b` on the CPU in one call: gemm accumulating onto the broadcast bias, instead of
//! candle's matmul and then a second pass over the output to add the bias.
//!
//! A dot-product path for a few rows (the decoder's tokens) was ~0.08 s per pair faster, but
//! switching paths by row count made a text's scores depend, in the last bits, on what it was
//! batched with; one path for every row count keeps answers independent of batching.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

struct CpuLinear<'a> {
    bias: Option<&'a [f32]>,
    /// The weight is `Wt` `[K, N]` rather than `W` `[N, K]`.
    transposed: bool,
}

fn with_gemm(
    x: &[f32],
    w: &[f32],
    (k, n): (usize, usize),
    transposed: bool,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / k;
    let mut out = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * n],
    };
    // gemm's right-hand side `[k, n]`: `Wt` row by row, or `W` read through its strides.
    let (w_cs, w_rs) = match transposed {
        true => (1, n as isize),
        false => (k as isize, 1),
    };
    // SAFETY: `x` is `[rows, k]`, `w` `[n, k]` or `[k, n]` as the strides say, and `out`
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
            w_cs,
            w_rs,
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
        let x = crate::network::conv::f32_slice(xs, xl)?;
        let w = crate::network::conv::f32_slice(ws, wl)?;
        let (n, k) = match self.transposed {
            true => wl.shape().dims2().map(|(k, n)| (n, k))?,
            false => wl.shape().dims2()?,
        };
        run(x, xl, w, (k, n), self.transposed, self.bias)
    }
}

/// `x·Wt (+ b)` with `Wt` borrowed from memory candle does not own (a file's mapping).
struct CpuLinearHost<'a> {
    wt: &'a [f32],
    /// `Wt` is `[k, n]`.
    k: usize,
    n: usize,
    bias: Option<&'a [f32]>,
}

impl CustomOp1 for CpuLinearHost<'_> {
    fn name(&self) -> &'static str {
        "cpu-linear-host"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::network::conv::f32_slice(xs, xl)?;
        if self.wt.len() != self.k * self.n {
            candle_core::bail!(
                "linear: {} weights do not make [{}, {}]",
                self.wt.len(),
                self.k,
                self.n
            );
        }
        run(x, xl, self.wt, (self.k, self.n), true, self.bias)
    }
}

/// Checks `x` against the weight's `k` and the bias against its `n`, then runs the gemm.
fn run(
    x: &[f32],
    xl: &Layout,
    w: &[f32],
    (k, n): (usize, usize),
    transposed: bool,
    bias: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let dims = xl.shape().dims();
    if dims.last() != Some(&k) || bias.is_some_and(|b| b.len() != n) {
        candle_core::bail!(
            "linear: x {:?} does not fit weights of {k} inputs and {n} outputs",
            xl.shape(),
        );
    }
    let out = with_gemm(x, w, (k, n), transposed, bias);
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("checked above") = n;
    Ok((CpuStorage::F32(out), Shape::from(shape)))
}

/// `x·Wᵀ (+ b)` for `x` `[…, K]`, `w` `[N, K]`; f32 on the CPU.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    let op = CpuLinear {
        bias,
        transposed: false,
    };
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op)
}

/// `x·Wt (+ b)` for `x` `[…, K]`, `wt` `[K, N]`; f32 on the CPU.
pub fn linear_t(x: &Tensor, wt: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    let op = CpuLinear {
        bias,
        transposed: true,
    };
    x.contiguous()?.apply_op2_no_bwd(&wt.contiguous()?, &op)
}

/// `x·Wt (+ b)` for `x` `[…, K]`, `wt` `[K, N]` as a slice of f32 on the host.
pub fn linear_t_host(
    x: &Tensor,
    wt: &[f32],
    (k, n): (usize, usize),
    bias: Option<&[f32]>,
) -> Result<Tensor> {
    let op = CpuLinearHost { wt, k, n, bias };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_matmul_with_and_without_bias_for_odd_sizes() {
        let d = Device::Cpu;
        for (rows, k, n) in [(1, 7, 3), (5, 1024, 100), (3, 33, 70), (41, 65, 130)] {
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
            let diff = crate::max_diff(want.clone(), linear(&x, &w, None).unwrap());
            assert!(diff < 1e-4, "{rows}×{k}→{n} without bias: {diff}");
            let wt = w.t().unwrap().contiguous().unwrap();
            let diff = crate::max_diff(want.clone(), linear_t(&x, &wt, None).unwrap());
            assert!(diff < 1e-4, "{rows}×{k}→{n} transposed: {diff}");
            // The same gemm, so the same bits, whoever owns the weight.
            let host = wt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let owned = linear_t(&x, &wt, Some(&b)).unwrap();
            let borrowed = linear_t_host(&x, &host, (k, n), Some(&b)).unwrap();
            assert_eq!(crate::max_diff(owned, borrowed), 0.0, "{rows}×{k}→{n}");
        }
    }
}
