//! The row kernels of [`crate::resize`]: one output row of each pass, in 22-bit fixed point as
//! Pillow computes it. Integer sums in any order equal Pillow's, so the vector kernels give the
//! same bytes as the plain ones.

/// Fixed-point bits of Pillow's 8-bit resampling weights.
pub(crate) const PRECISION_BITS: u32 = 22;

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Taps handled at once by the horizontal pass: four RGBX pixels fill one 16-lane vector.
const GROUP: usize = 4;

/// The horizontal weights spread for [`horizontal_row`]: per output pixel, `groups` blocks of
/// 16 lanes, each tap's weight repeated over its pixel's four lanes, zero past the last tap.
pub(crate) struct Spread {
    starts: Vec<usize>,
    groups: usize,
    lanes: Vec<[i32; 4 * GROUP]>,
}

impl Spread {
    /// From each output's first input and its `ksize` fixed-point weights (zero past its taps).
    pub(crate) fn new(bounds: &[(usize, usize)], ksize: usize, weights: &[i32]) -> Self {
        let groups = ksize.div_ceil(GROUP);
        let mut lanes = vec![[0i32; 4 * GROUP]; bounds.len() * groups];
        for (xx, k) in weights.chunks_exact(ksize).enumerate() {
            for (t, &kx) in k.iter().enumerate() {
                let block = &mut lanes[xx * groups + t / GROUP];
                block[(t % GROUP) * 4..(t % GROUP) * 4 + 4].fill(kx);
            }
        }
        Spread {
            starts: bounds.iter().map(|&(xmin, _)| xmin).collect(),
            groups,
            lanes,
        }
    }
}

/// One output row of the horizontal pass. Pixels are widened to four `i32` lanes (RGBX) and
/// padded, so each output sums whole 16-lane blocks: taps past the last have zero weight.
/// Integer sums in any order equal Pillow's.
#[inline(always)]
pub(crate) fn horizontal_row(src: &[u8], sp: &Spread, wide: &mut Vec<i32>, out: &mut [u8]) {
    each_output(src, sp, wide, out, |px, blocks, d| {
        let mut acc = [0i32; 4];
        for (p, k) in px.chunks_exact(4).zip(blocks.iter().flatten().step_by(4)) {
            for c in 0..4 {
                acc[c] += p[c] * k;
            }
        }
        store_pixel(acc, d);
    });
}

/// Widens the row, then calls `pixel` for each output with the pixels its blocks cover, the
/// blocks, and its three bytes.
#[inline(always)]
fn each_output(
    src: &[u8],
    sp: &Spread,
    wide: &mut Vec<i32>,
    out: &mut [u8],
    mut pixel: impl FnMut(&[i32], &[[i32; 4 * GROUP]], &mut [u8]),
) {
    wide.clear();
    wide.resize((src.len() / 3 + sp.groups * GROUP) * 4, 0);
    for (p, q) in src.chunks_exact(3).zip(wide.chunks_exact_mut(4)) {
        q[0] = i32::from(p[0]);
        q[1] = i32::from(p[1]);
        q[2] = i32::from(p[2]);
    }
    for ((&xmin, blocks), d) in sp
        .starts
        .iter()
        .zip(sp.lanes.chunks_exact(sp.groups))
        .zip(out.chunks_exact_mut(3))
    {
        pixel(&wide[xmin * 4..xmin * 4 + sp.groups * 4 * GROUP], blocks, d);
    }
}

#[inline(always)]
fn store_pixel(acc: [i32; 4], d: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    d[0] = clip8(half + acc[0]);
    d[1] = clip8(half + acc[1]);
    d[2] = clip8(half + acc[2]);
}

/// [`horizontal_row`] with one 16-lane multiply-add per block of four taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn horizontal_row_avx512(
    src: &[u8],
    sp: &Spread,
    wide: &mut Vec<i32>,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    each_output(src, sp, wide, out, |px, blocks, d| {
        let mut acc = _mm512_setzero_si512();
        for (p, k) in px.chunks_exact(4 * GROUP).zip(blocks) {
            // SAFETY: both are 16 in-bounds i32s (unaligned loads).
            let (p, k) = unsafe {
                (
                    _mm512_loadu_si512(p.as_ptr().cast()),
                    _mm512_loadu_si512(k.as_ptr().cast()),
                )
            };
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(p, k));
        }
        let quarters = [
            _mm512_extracti32x4_epi32::<0>(acc),
            _mm512_extracti32x4_epi32::<1>(acc),
            _mm512_extracti32x4_epi32::<2>(acc),
            _mm512_extracti32x4_epi32::<3>(acc),
        ];
        let sum = _mm_add_epi32(
            _mm_add_epi32(quarters[0], quarters[1]),
            _mm_add_epi32(quarters[2], quarters[3]),
        );
        store_rgbx(sum, d);
    });
}

/// [`horizontal_row`] with two 8-lane multiply-adds per block of four taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn horizontal_row_avx2(
    src: &[u8],
    sp: &Spread,
    wide: &mut Vec<i32>,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    each_output(src, sp, wide, out, |px, blocks, d| {
        let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (p, k) in px.chunks_exact(4 * GROUP).zip(blocks) {
            // SAFETY: both are 16 in-bounds i32s (unaligned loads).
            unsafe {
                let (p, k) = (p.as_ptr().cast::<__m256i>(), k.as_ptr().cast::<__m256i>());
                let (p1, k1) = (p.add(1), k.add(1));
                lo = _mm256_add_epi32(
                    lo,
                    _mm256_mullo_epi32(_mm256_loadu_si256(p), _mm256_loadu_si256(k)),
                );
                hi = _mm256_add_epi32(
                    hi,
                    _mm256_mullo_epi32(_mm256_loadu_si256(p1), _mm256_loadu_si256(k1)),
                );
            }
        }
        let both = _mm256_add_epi32(lo, hi);
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(both),
            _mm256_extracti128_si256::<1>(both),
        );
        store_rgbx(sum, d);
    });
}

/// Pillow's rounding and clip done in the vector: add half, shift, saturate to bytes (the
/// shifted sums are far below 2^15, so the two saturating packs clip exactly at 0 and 255).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn store_rgbx(sum: std::arch::x86_64::__m128i, d: &mut [u8]) {
    use std::arch::x86_64::*;
    let half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(_mm_add_epi32(sum, half));
    let v = _mm_packus_epi16(_mm_packus_epi32(v, v), _mm_setzero_si128());
    let rgbx = (_mm_cvtsi128_si32(v) as u32).to_le_bytes();
    d.copy_from_slice(&rgbx[..3]);
}

/// Columns the vertical pass sums at once: their accumulators stay in registers across taps.
const COLUMNS: usize = 64;

/// One output row of the vertical pass: the taps' rows are contiguous, so each block of
/// columns is summed over every tap before it is written.
#[inline(always)]
pub(crate) fn vertical_row(rows: &[u8], stride: usize, k: &[i32], out: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut start = 0;
    for d in out.chunks_mut(COLUMNS) {
        let mut acc = [half; COLUMNS];
        for (t, &ky) in k.iter().enumerate() {
            let row = &rows[t * stride + start..t * stride + start + d.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * ky;
            }
        }
        for (o, &a) in d.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
        start += d.len();
    }
}
