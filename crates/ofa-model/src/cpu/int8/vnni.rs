//! The int8 kernel for CPUs with AVX-512 VNNI: a tile of `ROWS` activation rows against one
//! packed block of 64 outputs, `ROWS × 4` vector accumulators held in registers, one
//! `vpdpbusd` (64 multiply-adds) per accumulator for every 4 inputs.

use crate::cpu::int8::quant::{Int8Rows, Packed, BLOCK};

/// Activation rows per tile: 6 × 4 accumulators, 4 weight vectors and a broadcast fit in the
/// 32 vector registers.
pub const ROWS: usize = 6;

/// The sums of one tile: `[row][output in block]`, rows past the tile left zero.
pub type TileSums = [[i32; BLOCK]; ROWS];

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Sums of rows `r0..r0 + rows` (`rows ≤ ROWS`) against block `block` of `w`.
///
/// # Safety
/// The CPU must support the kernel ([`available`]); `x` and `w` must share `kp`, and the rows
/// and block must exist.
#[cfg(target_arch = "x86_64")]
pub unsafe fn block_sums(
    x: &Int8Rows,
    w: Packed<'_>,
    block: usize,
    r0: usize,
    rows: usize,
) -> TileSums {
    assert!(rows <= ROWS && (r0 + rows) * w.kp <= x.q.len() && x.kp == w.kp);
    assert!((block + 1) * w.kp * BLOCK <= w.data.len());
    let xq = x.q.as_ptr().add(r0 * w.kp);
    let wb = w.data.as_ptr().add(block * w.kp * BLOCK);
    // SAFETY (all arms): bounds checked above; the caller vouches for the CPU.
    match rows {
        6 => tile::<6>(xq, wb, w.kp),
        5 => tile::<5>(xq, wb, w.kp),
        4 => tile::<4>(xq, wb, w.kp),
        3 => tile::<3>(xq, wb, w.kp),
        2 => tile::<2>(xq, wb, w.kp),
        _ => tile::<1>(xq, wb, w.kp),
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn block_sums(
    _x: &Int8Rows,
    _w: Packed<'_>,
    _block: usize,
    _r0: usize,
    _rows: usize,
) -> TileSums {
    unreachable!("no VNNI kernel on this architecture")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize>(xq: *const u8, wb: *const i8, kp: usize) -> TileSums {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for g in 0..kp / 4 {
        let wp = wb.add(g * BLOCK * 4);
        let wv = [
            _mm512_loadu_si512(wp as *const _),
            _mm512_loadu_si512(wp.add(64) as *const _),
            _mm512_loadu_si512(wp.add(128) as *const _),
            _mm512_loadu_si512(wp.add(192) as *const _),
        ];
        for (r, a) in acc.iter_mut().enumerate() {
            let four = (xq.add(r * kp + g * 4) as *const i32).read_unaligned();
            let xv = _mm512_set1_epi32(four);
            for (a, &w) in a.iter_mut().zip(&wv) {
                *a = _mm512_dpbusd_epi32(*a, xv, w);
            }
        }
    }
    let mut out = [[0i32; BLOCK]; ROWS];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (j, v) in a.iter().enumerate() {
            _mm512_storeu_si512(o[j * 16..].as_mut_ptr() as *mut _, *v);
        }
    }
    out
}
