//! Pillow's antialiased bicubic resize (`Resample.c`, 8-bit path), bit for bit: double-precision
//! filter weights turned into 22-bit fixed point, horizontal pass first into a uint8 image that
//! holds only the rows the vertical pass reads.
//!
//! Pillow's order makes some legal shapes ruinous (a 1 x 3,000,000 image costs billions of
//! multiply-adds and an intermediate image of 480 x 3,000,000): [`check_cost`] tells from the
//! dimensions alone, before anything is decoded or allocated, whether a resize stays within
//! fixed bounds of work and memory.

const PRECISION_BITS: u32 = 22;

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

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes packed RGB (HWC) from `w`×`h` to `ow`×`oh`.
pub fn resize_rgb(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    if w == ow && h == oh {
        return src.to_vec();
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    let vert = precompute(h, oh);
    // The vertical pass reads the source itself when there is no horizontal pass: never copied.
    let horizontal;
    let (mut img, mut iw, mut row_shift) = (src, w, 0usize);
    if w != ow {
        let horiz = precompute(w, ow);
        let first = vert.bounds[0].0;
        let (lmin, lcount) = vert.bounds[oh - 1];
        let last = lmin + lcount;
        let rows = last - first;
        let mut tmp = vec![0u8; ow * rows * 3];
        for y in 0..rows {
            let srow = &src[(y + first) * w * 3..(y + first + 1) * w * 3];
            let drow = &mut tmp[y * ow * 3..(y + 1) * ow * 3];
            for (xx, &(xmin, xmax)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + xmax];
                let mut acc = [half; 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &srow[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    acc[0] += i32::from(p[0]) * kx;
                    acc[1] += i32::from(p[1]) * kx;
                    acc[2] += i32::from(p[2]) * kx;
                }
                drow[xx * 3] = clip8(acc[0]);
                drow[xx * 3 + 1] = clip8(acc[1]);
                drow[xx * 3 + 2] = clip8(acc[2]);
            }
        }
        horizontal = tmp;
        img = &horizontal;
        iw = ow;
        row_shift = first;
    }
    // Pillow skips a pass whose size does not change; the horizontal pass then kept every row.
    if h == oh {
        return img.to_vec();
    }
    let mut out = vec![0u8; iw * oh * 3];
    for (yy, &(ymin, ymax)) in vert.bounds.iter().enumerate() {
        let ymin = ymin - row_shift;
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + ymax];
        let drow = &mut out[yy * iw * 3..(yy + 1) * iw * 3];
        for (xx, d) in drow.chunks_exact_mut(3).enumerate() {
            let mut acc = [half; 3];
            for (y, &ky) in k.iter().enumerate() {
                let o = ((ymin + y) * iw + xx) * 3;
                acc[0] += i32::from(img[o]) * ky;
                acc[1] += i32::from(img[o + 1]) * ky;
                acc[2] += i32::from(img[o + 2]) * ky;
            }
            d[0] = clip8(acc[0]);
            d[1] = clip8(acc[1]);
            d[2] = clip8(acc[2]);
        }
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
