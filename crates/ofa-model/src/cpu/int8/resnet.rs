//! The ResNet's bottleneck blocks in int8 (`--precision int8`), on images kept channels-last
//! (`[pixels, C]`). Every convolution is then one int8 GEMM (`int8::linear_rows`) against its
//! weights, quantised once per output channel (BatchNorm folded in first). Each row, an output
//! pixel's k×k×C window, is quantised straight from the input: no f32 column matrix.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use crate::cpu::int8::linear::{linear_rows, Epilogue};
use crate::cpu::int8::quant::{quantize_row, quantize_rows, Int8Rows, Int8Weights};
use crate::network::bottleneck::BlockConv;

/// A batch of images channels-last: `data` is `[b, h, w, c]`.
#[derive(Debug, Clone)]
pub struct Nhwc {
    pub data: Vec<f32>,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// From an f32 `[B, C, H, W]` tensor.
    pub fn from_nchw(x: &Tensor) -> Result<Self> {
        let (b, c, h, w) = x.dims4()?;
        let data = x.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { data, b, h, w, c })
    }

    /// Back to `[B, C, H, W]`.
    pub fn to_nchw(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.b, self.h, self.w, self.c), device)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// A convolution with BatchNorm folded in, its weights in int8.
#[derive(Debug, Clone)]
pub struct Int8Conv {
    /// `[O, k·k·C]`, the window in `(ky, kx, c)` order, as the rows are gathered.
    w: Int8Weights,
    bias: Vec<f32>,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Int8Conv {
    /// `weight` `[O, C, k, k]` and `bias` `[O]`, f32.
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Self> {
        let (o, c, k, k2) = weight.dims4()?;
        if k != k2 || stride == 0 {
            candle_core::bail!("int8 convolution: square kernels and strides ≥ 1 only");
        }
        let host = weight
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            w: Int8Weights::quantize(&host, o, k * k * c),
            bias: bias.to_vec1()?,
            k,
            stride,
            padding,
        })
    }

    /// From weights already folded and quantised (an engine-layout file): `w` `[O, k·k·C]`.
    pub fn from_parts(
        w: Int8Weights,
        bias: Vec<f32>,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        if k == 0 || stride == 0 || !w.k.is_multiple_of(k * k) || bias.len() != w.n {
            candle_core::bail!(
                "int8 convolution: [{}, {}] weights, {} biases do not make a {k}×{k} kernel",
                w.n,
                w.k,
                bias.len()
            );
        }
        Ok(Self {
            w,
            bias,
            k,
            stride,
            padding,
        })
    }

    /// The weights (packed bytes, scales, offsets) and the bias, for an engine-layout file.
    pub fn to_tensors(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (packed, scale, offset) = self.w.to_tensors()?;
        let bias = Tensor::from_slice(&self.bias, self.bias.len(), &Device::Cpu)?;
        Ok((packed, scale, offset, bias))
    }

    fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.padding).saturating_sub(self.k) / self.stride + 1
    }

    /// `relu?(conv(x) + bias (+ residual))`, channels-last.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Result<Nhwc> {
        if x.c * self.k * self.k != self.w.k || x.h + 2 * self.padding < self.k {
            candle_core::bail!(
                "int8 convolution: input {}×{}×{} does not fit [{}, {}] weights",
                x.h,
                x.w,
                x.c,
                self.w.n,
                self.w.k
            );
        }
        let (oh, ow) = (self.out_size(x.h), self.out_size(x.w));
        let rows = if self.k == 1 && self.stride == 1 {
            quantize_rows(&x.data, x.c)
        } else {
            self.windows(x, oh, ow)
        };
        let epilogue = Epilogue {
            bias: Some(&self.bias),
            residual: residual.map(|r| r.data.as_slice()),
            relu,
        };
        let data = linear_rows(&rows, &self.w, epilogue)?;
        let o = self.w.n;
        Ok(Nhwc {
            data,
            b: x.b,
            h: oh,
            w: ow,
            c: o,
        })
    }

    /// One quantised row per output pixel: its window, zeros outside the image.
    fn windows(&self, x: &Nhwc, oh: usize, ow: usize) -> Int8Rows {
        let (k, c) = (self.k, x.c);
        let kk = k * k * c;
        let kp = self.w.kp;
        let rows = x.b * oh * ow;
        let mut q = vec![128u8; rows * kp];
        let mut scale = vec![0f32; rows];
        q.par_chunks_mut(kp)
            .zip(scale.par_iter_mut())
            .enumerate()
            .for_each_init(
                || vec![0f32; kk],
                |window, (r, (q, s))| {
                    let (img, oy, ox) = (r / (oh * ow), r / ow % oh, r % ow);
                    for ky in 0..k {
                        for kx in 0..k {
                            let dst = &mut window[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                            let iy = (oy * self.stride + ky).checked_sub(self.padding);
                            let ix = (ox * self.stride + kx).checked_sub(self.padding);
                            match (iy, ix) {
                                (Some(iy), Some(ix)) if iy < x.h && ix < x.w => {
                                    let at = ((img * x.h + iy) * x.w + ix) * c;
                                    dst.copy_from_slice(&x.data[at..at + c]);
                                }
                                _ => dst.fill(0.0),
                            }
                        }
                    }
                    *s = quantize_row(window, q);
                },
            );
        Int8Rows { q, scale, kp }
    }
}

impl BlockConv for Int8Conv {
    type Act = Nhwc;

    fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Result<Nhwc> {
        Int8Conv::forward(self, x, residual, relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against candle's f32 convolution: within int8's error, for 1×1 and 3×3, strides 1 and 2.
    #[test]
    fn close_to_the_f32_convolution() {
        let d = Device::Cpu;
        for (c, o, k, stride, padding, hw) in [
            (8, 16, 1, 1, 0, 7),
            (8, 16, 1, 2, 0, 8),
            (6, 5, 3, 1, 1, 9),
            (6, 5, 3, 2, 1, 9),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, c, hw, hw), &d).unwrap();
            let w = Tensor::randn(0f32, 1.0, (o, c, k, k), &d).unwrap();
            let b = Tensor::randn(0f32, 1.0, o, &d).unwrap();
            let want = x
                .conv2d(&w, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            let conv = Int8Conv::new(&w, &b, stride, padding).unwrap();
            let nhwc = Nhwc::from_nchw(&x).unwrap();
            let got = conv
                .forward(&nhwc, None, false)
                .unwrap()
                .to_nchw(&d)
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = crate::max_diff(want.clone(), got);
            assert!(diff < 0.03 * scale, "{k}×{k}/{stride}: {diff} of {scale}");
            // The epilogue: residual added, then ReLU.
            let r = Tensor::randn(0f32, 1.0, want.dims(), &d).unwrap();
            let want = (want + &r).unwrap().relu().unwrap();
            let r = Nhwc::from_nchw(&r).unwrap();
            let got = conv.forward(&nhwc, Some(&r), true).unwrap();
            let diff = crate::max_diff(want, got.to_nchw(&d).unwrap());
            assert!(diff < 0.03 * scale, "{k}×{k}/{stride} + residual: {diff}");
        }
    }
}
