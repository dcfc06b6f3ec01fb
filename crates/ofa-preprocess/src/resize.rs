//! Pillow's antialiased bicubic resize (`Resample.c`, 8-bit path), bit for bit: double-precision
//! filter weights turned into 22-bit fixed point, horizontal pass first into a uint8 image that
//! holds only the rows the vertical pass reads.
//!
//! Pillow's order makes some legal shapes ruinous (a 1 x 3,000,000 image costs billions of
//! multiply-adds and an intermediate image of 480 x 3,000,000): [`check_cost`] tells from the
//! dimensions alone, before anything is decoded or allocated, whether a resize stays within
//! fixed bounds of work and memory.

use crate::resize_rows::{horizontal_row, vertical_row, Spread, PRECISION_BITS};

/// Resized uint8 RGB image, HWC, exactly as `Resize((s, s), BICUBIC)` on a PIL image.
pub fn resize_square(rgb: &image::RgbImage, size: usize) -> Vec<u8> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    resize_rgb(rgb.as_raw(), w, h, size, size)
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output sample: first input index, number of taps, and fixed-point weights (`ksize` each).
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, &kx) in k.iter().enumerate().take(xmax) {
            let w = if ww != 0.0 { kx / ww } else { kx };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

/// Most multiply-adds (per channel) one resize may take: a 13000 x 13000 photo needs 0.7e9.
pub const MAX_MULTIPLY_ADDS: u64 = 2_000_000_000;
/// Most entries of the two weight tables (4 bytes each): 64 MB.
pub const MAX_TABLE_ENTRIES: u64 = 1 << 24;
/// Most pixels of the intermediate image between the passes (3 bytes each): 96 MB.
pub const MAX_INTERMEDIATE_PIXELS: u64 = 1 << 25;

fn taps(in_size: usize, out_size: usize) -> u64 {
    if in_size == out_size {
        return 0;
    }
    let filterscale = (in_size as f64 / out_size as f64).max(1.0);
    (2.0 * filterscale).ceil() as u64 * 2 + 1
}

/// Bytes of the two weight tables for this resize.
pub fn table_bytes(w: usize, h: usize, ow: usize, oh: usize) -> u64 {
    (ow as u64 * taps(w, ow) + oh as u64 * taps(h, oh)) * 4
}

/// Whether resizing `w`×`h` to `ow`×`oh` stays within the bounds above; the error names the
/// bound it would pass.
pub fn check_cost(w: usize, h: usize, ow: usize, oh: usize) -> Result<(), String> {
    let (kh, kv) = (taps(w, ow), taps(h, oh));
    let (h64, ow64, oh64) = (h as u64, ow as u64, oh as u64);
    let work = h64
        .saturating_mul(ow64)
        .saturating_mul(kh)
        .saturating_add(oh64.saturating_mul(ow64).saturating_mul(kv));
    let tables = ow64.saturating_mul(kh) + oh64.saturating_mul(kv);
    let intermediate = if kh > 0 && kv > 0 { h64 * ow64 } else { 0 };
    let shape = format!("a {w}x{h} image resized to {ow}x{oh}");
    if work > MAX_MULTIPLY_ADDS {
        return Err(format!(
            "{shape} needs {work} multiply-adds, more than the limit of {MAX_MULTIPLY_ADDS} (its aspect ratio is too extreme)"
        ));
    }
    if tables > MAX_TABLE_ENTRIES {
        return Err(format!(
            "{shape} needs {tables} filter weights, more than the limit of {MAX_TABLE_ENTRIES} (it is too wide or too tall)"
        ));
    }
    if intermediate > MAX_INTERMEDIATE_PIXELS {
        return Err(format!(
            "{shape} needs an intermediate image of {intermediate} pixels, more than the limit of {MAX_INTERMEDIATE_PIXELS} (it is too tall for its width)"
        ));
    }
    Ok(())
}

/// Resizes packed RGB (HWC) from `w`×`h` to `ow`×`oh`.
pub fn resize_rgb(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { resize_avx512(src, w, h, ow, oh) };
        }
        if has!("avx2") {
            // SAFETY: as above.
            return unsafe { resize_avx2(src, w, h, ow, oh) };
        }
    }
    resize_generic(src, w, h, ow, oh)
}

// Integer arithmetic: every instruction set gives the same bytes; wider vectors only go faster.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn resize_avx512(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    resize_with(src, w, h, ow, oh, |s, sp, wide, out| {
        // SAFETY: this function runs only where AVX-512F is present.
        unsafe { crate::resize_rows::horizontal_row_avx512(s, sp, wide, out) }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_avx2(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    resize_with(src, w, h, ow, oh, |s, sp, wide, out| {
        // SAFETY: this function runs only where AVX2 is present.
        unsafe { crate::resize_rows::horizontal_row_avx2(s, sp, wide, out) }
    })
}

fn resize_generic(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    resize_with(src, w, h, ow, oh, horizontal_row)
}

#[inline(always)]
fn resize_with(
    src: &[u8],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
    horizontal_row: impl Fn(&[u8], &Spread, &mut Vec<i32>, &mut [u8]),
) -> Vec<u8> {
    if w == ow && h == oh {
        return src.to_vec();
    }
    let vert = precompute(h, oh);
    // The vertical pass reads the source itself when there is no horizontal pass: never copied.
    let horizontal;
    let (mut img, mut iw, mut row_shift) = (src, w, 0usize);
    if w != ow {
        let horiz = precompute(w, ow);
        let first = vert.bounds[0].0;
        let (lmin, lcount) = vert.bounds[oh - 1];
        let rows = lmin + lcount - first;
        let mut tmp = vec![0u8; ow * rows * 3];
        let spread = Spread::new(&horiz.bounds, horiz.ksize, &horiz.weights);
        let mut wide = Vec::new();
        for (y, drow) in tmp.chunks_exact_mut(ow * 3).enumerate() {
            let srow = &src[(y + first) * w * 3..(y + first + 1) * w * 3];
            horizontal_row(srow, &spread, &mut wide, drow);
        }
        // Pillow skips a pass whose size does not change; the horizontal pass then kept every
        // row and is the result.
        if h == oh {
            return tmp;
        }
        horizontal = tmp;
        img = &horizontal;
        iw = ow;
        row_shift = first;
    }
    let stride = iw * 3;
    let mut out = vec![0u8; stride * oh];
    for (yy, drow) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, n) = vert.bounds[yy];
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        let rows = &img[(ymin - row_shift) * stride..(ymin - row_shift + n) * stride];
        vertical_row(rows, stride, k, drow);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_rgb(&src, 4, 3, 4, 3), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 7 * 5 * 3];
        let out = resize_rgb(&src, 7, 5, 13, 2);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn ruinous_shapes_are_refused_from_their_dimensions() {
        assert!(check_cost(13000, 13000, 480, 480).is_ok());
        assert!(check_cost(4000, 3000, 480, 480).is_ok());
        assert!(check_cost(1, 1, 480, 480).is_ok());
        assert!(check_cost(65535, 2730, 480, 480).is_ok());
        let tall = check_cost(1, 3_000_000, 480, 480).unwrap_err();
        assert!(tall.contains("multiply-adds"), "{tall}");
        let wide = check_cost(100_000_000, 1, 480, 480).unwrap_err();
        assert!(wide.contains("filter weights"), "{wide}");
        let thin = check_cost(200, 300_000, 480, 480).unwrap_err();
        assert!(thin.contains("intermediate"), "{thin}");
    }

    /// Pillow's loops as written in `Resample.c`, one multiply-add at a time.
    fn pillow_loops(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
        let clip = |acc: i32| (acc >> PRECISION_BITS).clamp(0, 255) as u8;
        let half = 1i32 << (PRECISION_BITS - 1);
        let pass = |img: &[u8], iw: usize, ih: usize, c: &Coeffs, horizontal: bool| {
            let (nw, nh) = if horizontal {
                (c.bounds.len(), ih)
            } else {
                (iw, c.bounds.len())
            };
            let mut out = vec![0u8; nw * nh * 3];
            for y in 0..nh {
                for x in 0..nw {
                    let (o, (min, n)) = if horizontal {
                        (x, c.bounds[x])
                    } else {
                        (y, c.bounds[y])
                    };
                    for ch in 0..3 {
                        let mut acc = half;
                        for t in 0..n {
                            let (sx, sy) = if horizontal {
                                (min + t, y)
                            } else {
                                (x, min + t)
                            };
                            acc += i32::from(img[(sy * iw + sx) * 3 + ch])
                                * c.weights[o * c.ksize + t];
                        }
                        out[(y * nw + x) * 3 + ch] = clip(acc);
                    }
                }
            }
            out
        };
        let mut img = src.to_vec();
        let mut iw = w;
        if w != ow {
            img = pass(&img, w, h, &precompute(w, ow), true);
            iw = ow;
        }
        if h != oh {
            img = pass(&img, iw, h, &precompute(h, oh), false);
        }
        img
    }

    #[test]
    fn every_kernel_gives_pillows_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        // Down- and up-scaling, one pass or both, wide kernels (2000 -> 480: 19 taps).
        let shapes = [
            (512, 600, 480, 480),
            (2000, 97, 480, 480),
            (1, 1, 480, 480),
            (37, 900, 480, 480),
            (480, 700, 480, 480),
            (700, 480, 480, 480),
            (13, 7, 5, 11),
        ];
        for (w, h, ow, oh) in shapes {
            let src: Vec<u8> = (0..w * h * 3).map(|_| byte()).collect();
            let want = pillow_loops(&src, w, h, ow, oh);
            assert_eq!(resize_generic(&src, w, h, ow, oh), want, "generic {w}x{h}");
            assert_eq!(resize_rgb(&src, w, h, ow, oh), want, "dispatched {w}x{h}");
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    let got = unsafe { resize_avx2(&src, w, h, ow, oh) };
                    assert_eq!(got, want, "avx2 {w}x{h}");
                }
                if has!("avx512f") && has!("avx512bw") {
                    // SAFETY: the CPU has AVX-512F and BW.
                    let got = unsafe { resize_avx512(&src, w, h, ow, oh) };
                    assert_eq!(got, want, "avx512 {w}x{h}");
                }
            }
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        let c = precompute(2000, 480);
        for (i, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i64 = c.weights[i * c.ksize..i * c.ksize + n]
                .iter()
                .map(|&v| v as i64)
                .sum();
            assert!((s - (1 << 22)).abs() < 64, "row {i}: {s}");
        }
    }
}
