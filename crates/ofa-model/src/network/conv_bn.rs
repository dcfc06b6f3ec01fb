//! A bias-free convolution and the eval-mode BatchNorm after it, folded into one convolution:
//! the ResNet's unit, in candle's layout, with its conversions to channels-last and int8.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::int8::resnet::Int8Conv;
use crate::network::bottleneck::BlockConv;
use crate::network::resnet_nhwc::ConvNhwc;
use crate::profile::step;

const BN_EPS: f64 = 1e-5;

/// Where an engine-layout file keeps a convolution's weight `[O, C, k, k]` and bias with its
/// BatchNorm already folded in (`convert`), beside the convolution's own name.
pub(crate) const FOLDED_WEIGHT: &str = "folded_weight";
pub(crate) const FOLDED_BIAS: &str = "folded_bias";

/// A bias-free convolution followed by eval-mode BatchNorm, folded into one convolution.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    /// `[O, C, k, k]`, or `[9, O, C]` when `shifted` (see `conv3x3`).
    weight: Tensor,
    shifted: bool,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    pub(crate) fn new(
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        conv: VarBuilder,
        bn: VarBuilder,
    ) -> Result<Self> {
        // Folded in f32 whatever the model's precision, then stored in it.
        let dtype = conv.dtype();
        let (conv, bn) = (conv.to_dtype(DType::F32), bn.to_dtype(DType::F32));
        if conv.contains_tensor(FOLDED_WEIGHT) {
            let weight = conv.get((out_c, in_c, k, k), FOLDED_WEIGHT)?;
            let bias = conv.get(out_c, FOLDED_BIAS)?;
            return Self::folded(
                weight.to_dtype(dtype)?,
                bias.to_dtype(dtype)?,
                stride,
                padding,
            );
        }
        let w = conv.get((out_c, in_c, k, k), "weight")?;
        let gamma = bn.get(out_c, "weight")?;
        let beta = bn.get(out_c, "bias")?;
        let mean = bn.get(out_c, "running_mean")?;
        let var = bn.get(out_c, "running_var")?;
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let weight = w
            .broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?
            .to_dtype(dtype)?;
        let bias = (beta - (mean * &scale)?)?.to_dtype(dtype)?;
        Self::folded(weight, bias, stride, padding)
    }

    /// From folded weights in candle's layout, `[O, C, k, k]`, and their bias.
    fn folded(weight: Tensor, bias: Tensor, stride: usize, padding: usize) -> Result<Self> {
        let k = weight.dim(2)?;
        let dtype = weight.dtype();
        // On the CPU, 3×3 convolutions of stride 1 run as nine shifted GEMMs, which want the
        // weights per kernel offset.
        let shifted = k == 3
            && stride == 1
            && padding == 1
            && crate::network::kernels::fused(weight.device())
            && dtype == DType::F32;
        let weight = if shifted {
            crate::cpu::conv3x3::shifted_weights(&weight)?
        } else {
            weight
        };
        Ok(Self {
            weight,
            shifted,
            bias,
            stride,
            padding,
        })
    }

    pub(crate) fn device(&self) -> &candle_core::Device {
        self.weight.device()
    }

    /// The folded convolution without its bias.
    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        if self.shifted {
            if crate::network::kernels::fused(x.device()) {
                return crate::cpu::conv3x3::conv3x3(x, &self.weight);
            }
            // Generic operations forced after loading (tests): back to candle's layout.
            let w = crate::cpu::conv3x3::unshifted_weights(&self.weight)?;
            return crate::network::conv::conv2d(x, &w, 1, 1);
        }
        let (out_c, in_c, k, _) = self.weight.dims4()?;
        if k != 1 || self.stride > 2 {
            return crate::network::conv::conv2d(x, &self.weight, self.stride, self.padding);
        }
        // A 1×1 convolution is a matmul over channels; striding is a subsample.
        let x = if self.stride == 2 {
            let (b, c, h, w) = x.dims4()?;
            if h % 2 != 0 || w % 2 != 0 {
                return crate::network::conv::conv2d(x, &self.weight, self.stride, self.padding);
            }
            x.reshape((b, c, h / 2, 2, w / 2, 2))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((b, c, h / 2, w / 2))?
        } else {
            x.clone()
        };
        let (b, _, h, w) = x.dims4()?;
        let wm = self.weight.reshape((out_c, in_c))?;
        let xm = x.reshape((b, in_c, h * w))?;
        wm.broadcast_left(b)?.matmul(&xm)?.reshape((b, out_c, h, w))
    }

    /// The folded weight `[O, C, k, k]` and bias, as an engine-layout file stores them.
    pub(crate) fn folded_tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.nchw_weight()?, self.bias.clone()))
    }

    /// The weights in candle's layout, `[O, C, k, k]`.
    fn nchw_weight(&self) -> Result<Tensor> {
        match self.shifted {
            true => crate::cpu::conv3x3::unshifted_weights(&self.weight),
            false => Ok(self.weight.clone()),
        }
    }

    /// The convolution channels-last (generic operations, a GPU).
    pub(crate) fn to_nhwc(&self) -> Result<ConvNhwc> {
        ConvNhwc::new(&self.nchw_weight()?, &self.bias, self.stride, self.padding)
    }

    pub(crate) fn from_nhwc(conv: &ConvNhwc) -> Result<Self> {
        let (weight, bias, stride, padding) = conv.nchw_parts()?;
        Self::folded(weight, bias, stride, padding)
    }

    /// The convolution in int8 (CPU).
    pub(crate) fn to_int8(&self) -> Result<Int8Conv> {
        let weight = self.nchw_weight()?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        Int8Conv::new(&f32(&weight)?, &f32(&self.bias)?, self.stride, self.padding)
    }

    /// Convolution + bias (+ residual), then ReLU if asked, the epilogue in one pass.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        let d = x.device();
        let name = match (self.shifted, self.weight.dim(2)?) {
            (true, _) | (false, 3) => "conv 3×3 (channels-first)",
            (false, 1) => "conv 1×1 (channels-first)",
            (false, 7) => "conv 7×7 stem",
            _ => "conv (channels-first)",
        };
        let y = step(name, d, || self.conv(x))?;
        step("conv bias, shortcut, ReLU", d, || {
            crate::network::conv::bias_act(&y, &self.bias, residual, relu)
        })
    }
}

impl BlockConv for ConvBn {
    type Act = Tensor;

    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        ConvBn::forward(self, x, residual, relu)
    }
}

/// A fixed 3×3 convolution and BatchNorm, folded (and with `int8`, quantised) as a start
/// would: what an engine-layout file's fingerprint hashes, so a build that folds or quantises
/// otherwise does not trust a file another made.
pub fn fold_sample(int8: bool) -> Result<Vec<Tensor>> {
    let d = candle_core::Device::Cpu;
    let (o, c) = (8, 8);
    let values = |n: usize, step: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * step) % 37) as f32 / 9.0 - 2.0)
            .collect()
    };
    let tensors = std::collections::HashMap::from([
        (
            "c.weight".to_owned(),
            Tensor::from_vec(values(o * c * 9, 7), (o, c, 3, 3), &d)?,
        ),
        (
            "b.weight".to_owned(),
            Tensor::from_vec(values(o, 3), o, &d)?,
        ),
        ("b.bias".to_owned(), Tensor::from_vec(values(o, 5), o, &d)?),
        (
            "b.running_mean".to_owned(),
            Tensor::from_vec(values(o, 11), o, &d)?,
        ),
        (
            "b.running_var".to_owned(),
            Tensor::from_vec(vec![0.5f32; o], o, &d)?,
        ),
    ]);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &d);
    let conv = ConvBn::new(c, o, 3, 1, 1, vb.pp("c"), vb.pp("b"))?;
    let (weight, bias) = conv.folded_tensors()?;
    let mut out = vec![weight, bias];
    if int8 {
        let (packed, scale, offset, bias) = conv.to_int8()?.to_tensors()?;
        out.extend([packed, scale, offset, bias]);
    }
    Ok(out)
}
