//! Relative-position index tables OFA computes in its constructor (never read from checkpoints).

/// Token relative-position bucket for `r = i − j`, as `make_token_bucket_position(bucket_size,
/// max_position = 1024)`: exact within ±bucket_size/2, log-spaced beyond.
pub fn token_bucket(relative: i64, bucket_size: usize) -> usize {
    // OFA builds the table with max_position 1024 whatever the config says.
    const MAX_POSITION: f64 = 1024.0;
    let mid = (bucket_size / 2) as i64;
    let abs = relative.abs();
    let bucket = if abs <= mid {
        relative
    } else {
        // float32 tensor maths divided by a float64 `math.log` scalar cast to float32, as in torch.
        let denom = ((MAX_POSITION - 1.0) / mid as f64).ln() as f32;
        let ratio = ((abs as f32) / (mid as f32)).ln() / denom;
        let log_pos = (ratio * (mid - 1) as f32).ceil() as i64 + mid;
        relative.signum() * log_pos
    };
    (bucket + bucket_size as i64 - 1) as usize
}

/// `[len, len]` token buckets, row-major (`token_rp_bucket[:len, :len]`).
pub fn token_buckets(len: usize, bucket_size: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(len * len);
    for i in 0..len {
        for j in 0..len {
            out.push(token_bucket(i as i64 - j as i64, bucket_size) as u32);
        }
    }
    out
}

/// Position ids of an `h`×`w` image grid: `r·bucket + c + 1`.
pub fn image_position_ids(h: usize, w: usize, bucket_size: usize) -> Vec<u32> {
    (0..h)
        .flat_map(|r| (0..w).map(move |c| (r * bucket_size + c + 1) as u32))
        .collect()
}

/// `[h·w, h·w]` image relative buckets (`image_rp_bucket[ids][:, ids]`):
/// `(Δr + b − 1)·(2b − 1) + (Δc + b − 1)`.
pub fn image_buckets(h: usize, w: usize, bucket_size: usize) -> Vec<u32> {
    let b = bucket_size as i64;
    let n = h * w;
    let mut out = Vec::with_capacity(n * n);
    for p in 0..n {
        let (rp, cp) = ((p / w) as i64, (p % w) as i64);
        for q in 0..n {
            let (rq, cq) = ((q / w) as i64, (q % w) as i64);
            out.push(((rp - rq + b - 1) * (2 * b - 1) + (cp - cq + b - 1)) as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sample_values() {
        for (r, m) in [
            (129, 129),
            (131, 130),
            (133, 131),
            (1007, 255),
            (5, 5),
            (128, 128),
        ] {
            assert_eq!(token_bucket(r, 256) as i64 - 255, m, "r = {r}");
            assert_eq!(255 - token_bucket(-r, 256) as i64, m, "r = -{r}");
        }
    }
}
