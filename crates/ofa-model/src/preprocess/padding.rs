//! A batch's id lists as one right-padded `[B, width]` tensor. The width is the longest list,
//! or, with a bucket, the next multiple of it: a GPU replaying CUDA graphs records one graph per
//! input shape, and texts of every length would each be a shape of their own. Padding is masked
//! (encoder keys) or lies after every real position (the causal decoder), so the answers do not
//! change beyond the order of a sum.

use candle_core::{Device, Result, Tensor};

/// The width for lists whose longest has `longest` ids: rounded up to a multiple of `bucket`
/// (0: not rounded), but never past `limit` (the model's position table) unless `longest` is.
pub fn padded_width(longest: usize, bucket: usize, limit: usize) -> usize {
    if bucket == 0 {
        return longest;
    }
    longest
        .div_ceil(bucket)
        .saturating_mul(bucket)
        .min(limit)
        .max(longest)
}

/// `rows` right-padded with `pad` to [`padded_width`].
pub fn padded(
    rows: &[&[u32]],
    pad: u32,
    bucket: usize,
    limit: usize,
    device: &Device,
) -> Result<Tensor> {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let width = padded_width(longest, bucket, limit);
    let mut data = Vec::with_capacity(rows.len() * width);
    for r in rows {
        data.extend_from_slice(r);
        data.extend(std::iter::repeat_n(pad, width - r.len()));
    }
    Tensor::from_vec(data, (rows.len(), width), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_up_to_the_bucket_within_the_limit() {
        assert_eq!(padded_width(13, 0, 1024), 13);
        assert_eq!(padded_width(13, 16, 1024), 16);
        assert_eq!(padded_width(16, 16, 1024), 16);
        assert_eq!(padded_width(17, 16, 1024), 32);
        assert_eq!(padded_width(17, 16, 20), 20);
        assert_eq!(
            padded_width(30, 16, 20),
            30,
            "never shorter than the longest"
        );
        assert_eq!(padded_width(0, 16, 1024), 0);
    }

    #[test]
    fn rows_are_right_padded_with_the_pad_id() {
        let t = padded(&[&[0, 5, 2], &[0, 2]], 1, 4, 1024, &Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<u32>().unwrap(),
            [[0, 5, 2, 1], [0, 2, 1, 1]].map(Vec::from).to_vec()
        );
        let t = padded(&[&[0, 5, 2], &[0, 2]], 1, 0, 1024, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, 3]);
    }
}
