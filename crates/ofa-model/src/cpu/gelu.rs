//! Exact (erf) GELU for the CPU backend, vectorised. candle calls libm's scalar `erff` per
//! element (≈ 20 ms for one 916×4096 activation on 2 cores); this evaluates both branches of a
//! branch-free erf in SIMD registers and selects (≈ 3 ulp, against libm's 1: GELU's outputs move
//! by ~2e-7 relative, far inside the model's 1e-5 tolerance).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::softmax::exp_nonpositive;

/// erf(x)/x = P(x²) on |x| ≤ 1 (least-squares fit, relative error ~2e-7 in f32).
const P: [f32; 7] = [
    std::f32::consts::FRAC_2_SQRT_PI, // erf′(0)
    -0.376_126_3,
    0.112_836_12,
    -0.026_854_806,
    0.005_190_049,
    -0.000_802_431_2,
    7.898_067e-5,
];
/// ln(erfc(t)) = Q(u), u = (t − 2.5)/1.5, on 1 ≤ t ≤ 4 (absolute error in erf ~2e-7).
const Q: [f32; 11] = [
    -7.806_815,
    -8.029_021,
    -2.123_761,
    -0.036_646_31,
    0.010_962_973,
    -0.003_194_743,
    0.000_876_392_8,
    -0.000_221_709_8,
    4.728_448e-5,
    -2.530_474e-6,
    -2.367_144_6e-6,
];

#[inline(always)]
fn erf(x: f32) -> f32 {
    let t = x.abs();
    let s = x * x;
    let mut p = P[6];
    for &c in P[..6].iter().rev() {
        p = p.mul_add(s, c);
    }
    let small = x * p;
    let u = (t.min(4.0) - 2.5) * (1.0 / 1.5);
    let mut q = Q[10];
    for &c in Q[..10].iter().rev() {
        q = q.mul_add(u, c);
    }
    // Past 4, erf rounds to ±1 in f32.
    let large = (1.0 - exp_nonpositive(q.min(0.0))).copysign(x);
    if t <= 1.0 {
        small
    } else if t < 4.0 {
        large
    } else {
        1f32.copysign(x)
    }
}

#[inline(always)]
fn gelu_slice_generic(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        // The same expression as candle's, so only erf differs.
        *o = (erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gelu_slice_avx512(x: &[f32], out: &mut [f32]) {
    gelu_slice_generic(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(x: &[f32], out: &mut [f32]) {
    gelu_slice_generic(x, out)
}

pub(crate) fn gelu_slice(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { gelu_slice_avx512(x, out) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { gelu_slice_avx2(x, out) };
        }
    }
    gelu_slice_generic(x, out)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-simd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::network::conv::f32_slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        const CHUNK: usize = 16 * 1024;
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| gelu_slice(x, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x·Φ(x)` with the exact (erf) form; candle's operation off the CPU or for other dtypes.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if crate::network::kernels::fused(x.device()) && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&GeluErf);
    }
    x.gelu_erf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_a_few_ulp_of_libm_everywhere() {
        let mut worst = 0f32;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let want = candle_core::cpu::erf::erf_f32(x);
            let err = (erf(x) - want).abs() / f32::EPSILON;
            worst = worst.max(err / want.abs().max(0.05));
        }
        assert!(worst < 4.0, "worst error {worst} ulp");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(9.0), 1.0);
        assert_eq!(erf(-f32::INFINITY), -1.0);
    }

    #[test]
    fn gelu_matches_candle_on_odd_lengths() {
        let d = candle_core::Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (3, 16_411), &d).unwrap() * 1.0).unwrap();
        let want = x.gelu_erf().unwrap();
        let got = gelu_erf(&x).unwrap();
        let diff = crate::max_diff(want, got);
        assert!(diff < 2e-6, "{diff}");
    }
}
