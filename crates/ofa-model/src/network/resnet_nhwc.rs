//! The ResNet's bottleneck blocks channels-last (`[B, H, W, C]`), as a GPU runs them: every
//! convolution is one GEMM of the columns `[B·OH·OW, k·k·C]` (a 1×1 of stride 1 reads the input
//! itself) by the weights `[k·k·C, O]`, and its epilogue runs over rows. In NCHW each image was
//! its own GEMM with only O rows, and the 1×1 convolutions, most of the ResNet's work, were as
//! many small GEMMs as the batch has images.

use candle_core::{Result, Tensor};

use crate::network::bottleneck::BlockConv;
use crate::profile::step;

/// A convolution with its folded BatchNorm, weights laid out for channels-last columns.
#[derive(Debug, Clone)]
pub struct ConvNhwc {
    /// `[k·k·C, O]`, rows ordered (ky, kx, c) as [`im2col_nhwc`] orders its columns.
    weight: Tensor,
    bias: Tensor,
    k: usize,
    stride: usize,
    padding: usize,
}

impl ConvNhwc {
    /// From the folded weights in candle's layout, `[O, C, k, k]`.
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Self> {
        let (o, c, k, _) = weight.dims4()?;
        let weight = weight
            .permute((2, 3, 1, 0))?
            .contiguous()?
            .reshape((k * k * c, o))?;
        Ok(Self {
            weight,
            bias: bias.clone(),
            k,
            stride,
            padding,
        })
    }

    /// The weights back in candle's layout, `[O, C, k, k]`, with the bias, stride and padding.
    pub fn nchw_parts(&self) -> Result<(Tensor, Tensor, usize, usize)> {
        let (kkc, o) = self.weight.dims2()?;
        let k = self.k;
        let weight = self
            .weight
            .reshape((k, k, kkc / (k * k), o))?
            .permute((3, 2, 0, 1))?
            .contiguous()?;
        Ok((weight, self.bias.clone(), self.stride, self.padding))
    }

    /// `[B, H, W, C]` → `act(conv(x) + bias (+ residual))` `[B, OH, OW, O]`.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (k, s, p) = (self.k, self.stride, self.padding);
        let out = |n: usize| (n + 2 * p - k) / s + 1;
        let (oh, ow) = (out(h), out(w));
        let d = x.device();
        let cols = if k == 1 && s == 1 && p == 0 {
            x.reshape((b * h * w, c))?
        } else {
            step("conv im2col (channels-last)", d, || im2col_nhwc(x, k, s, p))?
        };
        let o = self.weight.dim(1)?;
        let y = step(gemm_name(k), d, || cols.matmul(&self.weight))?;
        let residual = residual.map(|r| r.reshape((b * oh * ow, o))).transpose()?;
        step("conv bias, shortcut, ReLU", d, || {
            crate::network::conv::bias_act(&y, &self.bias, residual.as_ref(), relu)
        })?
        .reshape((b, oh, ow, o))
    }
}

fn gemm_name(k: usize) -> &'static str {
    match k {
        1 => "conv 1×1 GEMM (channels-last)",
        3 => "conv 3×3 GEMM (channels-last)",
        _ => "conv GEMM (channels-last)",
    }
}

impl BlockConv for ConvNhwc {
    type Act = Tensor;

    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        ConvNhwc::forward(self, x, residual, relu)
    }
}

/// `[B, H, W, C]` → the columns `[B·OH·OW, k·k·C]` of a convolution with zero padding: row
/// `(b, oy, ox)` holds the `k×k` window at `(oy·stride − padding, ox·stride − padding)`, ordered
/// (ky, kx, c). One kernel on a GPU; candle's operations elsewhere.
pub fn im2col_nhwc(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return crate::cuda::nhwc::im2col_nhwc(x, k, stride, padding);
    }
    im2col_nhwc_generic(x, k, stride, padding)
}

/// [`im2col_nhwc`] in candle's operations, on any device: the window's rows and columns picked
/// out of the padded input with `index_select`.
pub fn im2col_nhwc_generic(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    if h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!("im2col: a {k}×{k} kernel over {h}×{w} with padding {padding}");
    }
    let (oh, ow) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let padded = x
        .pad_with_zeros(1, padding, padding)?
        .pad_with_zeros(2, padding, padding)?;
    let picks = |offset: usize, n: usize| {
        let idx: Vec<u32> = (0..n).map(|i| (offset + i * stride) as u32).collect();
        Tensor::new(idx.as_slice(), x.device())
    };
    let mut windows = Vec::with_capacity(k * k);
    for ky in 0..k {
        let rows = padded.index_select(&picks(ky, oh)?, 1)?;
        for kx in 0..k {
            windows.push(rows.index_select(&picks(kx, ow)?, 2)?);
        }
    }
    Tensor::cat(&windows, 3)?.reshape((b * oh * ow, k * k * c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn nchw_to_nhwc(t: &Tensor) -> Tensor {
        t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    #[test]
    fn a_channels_last_convolution_is_candles_convolution() {
        let d = Device::Cpu;
        // The ResNet's 3×3 of stride 1 and 2, its 1×1 of stride 1 and 2, odd sizes, a stem-like 7×7.
        for (k, s, p, h, w) in [
            (3, 1, 1, 9, 10),
            (3, 2, 1, 10, 9),
            (1, 1, 0, 5, 4),
            (1, 2, 0, 8, 7),
            (7, 2, 3, 11, 12),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, 6, h, w), &d).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (5, 6, k, k), &d).unwrap();
            let bias = Tensor::randn(0f32, 1.0, 5, &d).unwrap();
            let want = x
                .conv2d(&wt, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            let residual = Tensor::randn(0f32, 1.0, want.shape(), &d).unwrap();
            let conv = ConvNhwc::new(&wt, &bias, s, p).unwrap();
            let x = nchw_to_nhwc(&x);
            let plain = conv.forward(&x, None, false).unwrap();
            let diff = crate::max_diff(nchw_to_nhwc(&want), plain);
            assert!(diff < 1e-4, "k{k} s{s} p{p} {h}×{w}: {diff}");
            let full = conv
                .forward(&x, Some(&nchw_to_nhwc(&residual)), true)
                .unwrap();
            let want = (want + residual).unwrap().relu().unwrap();
            let diff = crate::max_diff(nchw_to_nhwc(&want), full);
            assert!(diff < 1e-4, "k{k} s{s} p{p} {h}×{w} with residual: {diff}");
        }
    }

    #[test]
    fn columns_are_ordered_by_window_offset_then_channel() {
        let d = Device::Cpu;
        // x[0, y, x, c] = 100·y + 10·x + c, so each column names where it was read from.
        let vals: Vec<f32> = (0..3)
            .flat_map(|y| {
                (0..3).flat_map(move |x| (0..2).map(move |c| (100 * y + 10 * x + c) as f32))
            })
            .collect();
        let x = Tensor::from_vec(vals, (1, 3, 3, 2), &d).unwrap();
        let cols = im2col_nhwc(&x, 3, 2, 1).unwrap();
        assert_eq!(cols.dims(), [4, 18]);
        let rows = cols.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        // Output pixel (1, 1) reads input rows and columns 1..=3 (stride 2, padding 1): the
        // input's 1..=2, then zeros past its edge.
        let mut want = Vec::new();
        for iy in 1..=3 {
            for ix in 1..=3 {
                for c in 0..2 {
                    let inside = iy < 3 && ix < 3;
                    want.push(if inside {
                        (100 * iy + 10 * ix + c) as f32
                    } else {
                        0.0
                    });
                }
            }
        }
        assert_eq!(rows[3], want);
    }
}
