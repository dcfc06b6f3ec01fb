//! int8 linear layers for the CPU (`--precision int8`): weights quantised once at load,
//! symmetric per output feature; activations quantised per row on the fly (`int8_quant`);
//! products summed in i32 (exactly) by the AVX-512 VNNI kernel (`int8_vnni`) or the same
//! arithmetic in plain Rust, then scaled back to f32 with the bias added.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::disjoint::OutPtr;
use crate::cpu::int8::quant::{quantize_rows, Int8Rows, Int8Weights, Packed, BLOCK};
use crate::cpu::int8::vnni::TileSums;

/// Parallel tasks a product is cut into, at least.
const TASKS: usize = 16;

/// The sums of rows `r0..r0 + rows` against one block of outputs, in plain Rust.
fn block_sums_generic(
    x: &Int8Rows,
    w: Packed<'_>,
    block: usize,
    r0: usize,
    rows: usize,
) -> TileSums {
    let kp = w.kp;
    let wb = &w.data[block * kp * BLOCK..(block + 1) * kp * BLOCK];
    let mut out = [[0i32; BLOCK]; crate::cpu::int8::vnni::ROWS];
    for (t, acc) in out.iter_mut().take(rows).enumerate() {
        let xr = &x.q[(r0 + t) * kp..(r0 + t + 1) * kp];
        for g in 0..kp / 4 {
            let wg = &wb[g * BLOCK * 4..(g + 1) * BLOCK * 4];
            for (j, a) in acc.iter_mut().enumerate() {
                for c in 0..4 {
                    *a += i32::from(xr[g * 4 + c]) * i32::from(wg[j * 4 + c]);
                }
            }
        }
    }
    out
}

/// `y = x·Wᵀ + b` for `x` `[rows, k]`; `y` `[rows, n]`.
pub fn linear(x: &[f32], w: &Int8Weights, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    w.with_packed(|packed| linear_packed(x, w, packed, bias))
}

/// What is applied to each output as it is written: `relu?(y + bias (+ residual))`.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// `[rows, n]`, as the output.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// The same for rows already quantised (`kp` as `w`'s), with an epilogue.
pub fn linear_rows(xq: &Int8Rows, w: &Int8Weights, epilogue: Epilogue<'_>) -> Result<Vec<f32>> {
    let rows = xq.scale.len();
    if xq.kp != w.kp || xq.q.len() != rows * xq.kp {
        candle_core::bail!(
            "int8 linear: rows of {} do not fit [{}, {}]",
            xq.kp,
            w.n,
            w.k
        );
    }
    if epilogue.bias.is_some_and(|b| b.len() != w.n)
        || epilogue.residual.is_some_and(|r| r.len() != rows * w.n)
    {
        candle_core::bail!(
            "int8 linear: bias or residual does not fit {rows} × {}",
            w.n
        );
    }
    w.with_packed(|packed| sums_to_f32(xq, w, packed, epilogue))
}

fn linear_packed(x: &[f32], w: &Int8Weights, packed: Packed<'_>, bias: Option<&[f32]>) -> Vec<f32> {
    let epilogue = Epilogue {
        bias,
        ..Epilogue::default()
    };
    sums_to_f32(&quantize_rows(x, w.k), w, packed, epilogue)
}

fn sums_to_f32(
    xq: &Int8Rows,
    w: &Int8Weights,
    packed: Packed<'_>,
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    let rows = xq.scale.len();
    let vnni = crate::cpu::int8::vnni::available();
    let mut out = vec![0f32; rows * w.n];
    let out_ptr = OutPtr::new(&mut out);
    // Tasks of (block of outputs, span of rows): a layer with few outputs (the ResNet's first
    // stage has 64) still keeps every core busy. Each row's sums are exact whatever the split.
    let blocks = w.n.div_ceil(BLOCK);
    let spans = TASKS.div_ceil(blocks);
    let span = rows
        .div_ceil(spans)
        .next_multiple_of(crate::cpu::int8::vnni::ROWS)
        .max(1);
    let tasks = (0..blocks).flat_map(|b| (0..rows).step_by(span).map(move |r| (b, r)));
    let tasks: Vec<(usize, usize)> = tasks.collect();
    tasks.into_par_iter().for_each(|(block, start)| {
        let o0 = block * BLOCK;
        let width = BLOCK.min(w.n - o0);
        let end = (start + span).min(rows);
        let mut r0 = start;
        while r0 < end {
            let tile = crate::cpu::int8::vnni::ROWS.min(end - r0);
            let sums = if vnni {
                // SAFETY: the CPU has the instructions (checked above); shapes as packed.
                unsafe { crate::cpu::int8::vnni::block_sums(xq, packed, block, r0, tile) }
            } else {
                block_sums_generic(xq, packed, block, r0, tile)
            };
            for (t, acc) in sums.iter().take(tile).enumerate() {
                let r = r0 + t;
                let sx = xq.scale[r];
                // SAFETY: row r, columns o0..o0 + width belong to this task alone.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(out_ptr.at(r * w.n + o0), width) };
                let (off, sw) = (&w.offset[o0..o0 + width], &w.scale[o0..o0 + width]);
                // Plain multiply and add (no `mul_add`): vectorised on any x86-64, and the
                // same rounding whichever kernel made the sums.
                for (((y, &a), &off), &sw) in dst.iter_mut().zip(acc).zip(off).zip(sw) {
                    *y = (a - off) as f32 * (sx * sw);
                }
                if let Some(b) = epilogue.bias {
                    for (y, &b) in dst.iter_mut().zip(&b[o0..o0 + width]) {
                        *y += b;
                    }
                }
                if let Some(res) = epilogue.residual {
                    let res = &res[r * w.n + o0..r * w.n + o0 + width];
                    for (y, &v) in dst.iter_mut().zip(res) {
                        *y += v;
                    }
                }
                if epilogue.relu {
                    dst.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
            r0 += tile;
        }
    });
    out
}

struct Int8Linear<'a> {
    w: &'a Int8Weights,
    bias: Option<&'a [f32]>,
}

impl CustomOp1 for Int8Linear<'_> {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::network::conv::f32_slice(s, l)?;
        let dims = l.shape().dims();
        if dims.last() != Some(&self.w.k) {
            candle_core::bail!(
                "int8 linear: x {:?} does not fit [{}, {}] weights",
                l.shape(),
                self.w.n,
                self.w.k
            );
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = self.w.n;
        Ok((
            CpuStorage::F32(linear(x, self.w, self.bias)?),
            Shape::from(shape),
        ))
    }
}

/// `x·Wᵀ (+ b)` for an f32 CPU tensor `x` `[…, K]`.
pub fn linear_tensor(x: &Tensor, w: &Int8Weights, bias: Option<&[f32]>) -> Result<Tensor> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() {
        candle_core::bail!(
            "int8 linear: f32 CPU activations only, not {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    x.contiguous()?.apply_op1_no_bwd(&Int8Linear { w, bias })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| (v / (1u32 << 24) as f32 - 0.5) * 4.0)
            .collect()
    }

    #[test]
    fn close_to_f32_and_the_same_with_and_without_vnni() {
        for (rows, k, n) in [(1, 8, 3), (7, 64, 130), (37, 130, 64)] {
            let x = data(rows * k, 1);
            let w = data(n * k, 2);
            let b = data(n, 3);
            let q = Int8Weights::quantize(&w, n, k);
            let got = linear(&x, &q, Some(&b)).unwrap();
            let mut worst = 0f32;
            for r in 0..rows {
                for o in 0..n {
                    let exact: f32 =
                        (0..k).map(|c| x[r * k + c] * w[o * k + c]).sum::<f32>() + b[o];
                    worst = worst.max((got[r * n + o] - exact).abs() / (k as f32).sqrt());
                }
            }
            // Two 8-bit roundings of values up to 2 in magnitude: ~1e-2 per product at worst.
            assert!(worst < 0.05, "{rows}×{k}→{n}: {worst}");
            if crate::cpu::int8::vnni::available() {
                let xq = quantize_rows(&x, k);
                for block in 0..n.div_ceil(BLOCK) {
                    for r0 in (0..rows).step_by(crate::cpu::int8::vnni::ROWS) {
                        let tile = crate::cpu::int8::vnni::ROWS.min(rows - r0);
                        let (plain, fast) = q
                            .with_packed(|p| {
                                let plain = block_sums_generic(&xq, p, block, r0, tile);
                                // SAFETY: the CPU has VNNI (checked above) and the block and rows
                                // are within the packed weights and the quantised input.
                                let fast = unsafe {
                                    crate::cpu::int8::vnni::block_sums(&xq, p, block, r0, tile)
                                };
                                (plain, fast)
                            })
                            .unwrap();
                        assert_eq!(plain, fast, "{rows}×{k}→{n} block {block} rows {r0}");
                    }
                }
            }
        }
    }
}
