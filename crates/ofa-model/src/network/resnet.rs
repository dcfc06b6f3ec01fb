//! OFA's image backbone: torchvision-v1.5 bottleneck ResNet, stem plus the first three stages
//! (stride 16, 1024 channels). BatchNorm (eval mode) is folded into the preceding convolution.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::int8::resnet::{Int8Conv, Nhwc};
use crate::network::bottleneck::{BlockConv, Bottleneck};
use crate::network::resnet_nhwc::ConvNhwc;
use crate::profile::step;

const BN_EPS: f64 = 1e-5;

/// A bias-free convolution followed by eval-mode BatchNorm, folded into one convolution.
#[derive(Debug, Clone)]
struct ConvBn {
    /// `[O, C, k, k]`, or `[9, O, C]` when `shifted` (see `conv3x3`).
    weight: Tensor,
    shifted: bool,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    fn new(
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

    /// The weights in candle's layout, `[O, C, k, k]`.
    fn nchw_weight(&self) -> Result<Tensor> {
        match self.shifted {
            true => crate::cpu::conv3x3::unshifted_weights(&self.weight),
            false => Ok(self.weight.clone()),
        }
    }

    /// The convolution channels-last (generic operations, a GPU).
    fn to_nhwc(&self) -> Result<ConvNhwc> {
        ConvNhwc::new(&self.nchw_weight()?, &self.bias, self.stride, self.padding)
    }

    fn from_nhwc(conv: &ConvNhwc) -> Result<Self> {
        let (weight, bias, stride, padding) = conv.nchw_parts()?;
        Self::folded(weight, bias, stride, padding)
    }

    /// The convolution in int8 (CPU).
    fn to_int8(&self) -> Result<Int8Conv> {
        let weight = self.nchw_weight()?;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        Int8Conv::new(&f32(&weight)?, &f32(&self.bias)?, self.stride, self.padding)
    }

    /// Convolution + bias (+ residual), then ReLU if asked, the epilogue in one pass.
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
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

/// A block's convolutions from the checkpoint: `in_c` channels in, `planes · 4` out.
fn bottleneck(
    in_c: usize,
    planes: usize,
    stride: usize,
    vb: VarBuilder,
) -> Result<Bottleneck<ConvBn>> {
    let out_c = planes * 4;
    let downsample = if stride != 1 || in_c != out_c {
        Some(ConvBn::new(
            in_c,
            out_c,
            1,
            stride,
            0,
            vb.pp("downsample.0"),
            vb.pp("downsample.1"),
        )?)
    } else {
        None
    };
    Ok(Bottleneck {
        conv1: ConvBn::new(in_c, planes, 1, 1, 0, vb.pp("conv1"), vb.pp("bn1"))?,
        conv2: ConvBn::new(planes, planes, 3, stride, 1, vb.pp("conv2"), vb.pp("bn2"))?,
        conv3: ConvBn::new(planes, out_c, 1, 1, 0, vb.pp("conv3"), vb.pp("bn3"))?,
        downsample,
    })
}

/// How the bottleneck blocks hold their activations between convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResNetLayout {
    /// `[B, C, H, W]`: the CPU's own kernels; on a GPU, one small GEMM per image and
    /// convolution (how a GPU ran it before 2026-12-01).
    ChannelsFirst,
    /// `[B, H, W, C]`: each convolution one GEMM over every pixel of the batch. The default
    /// where generic operations run (a GPU); the int8 blocks' own layout too.
    ChannelsLast,
}

impl std::fmt::Display for ResNetLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ChannelsFirst => "channels-first",
            Self::ChannelsLast => "channels-last",
        })
    }
}

impl std::str::FromStr for ResNetLayout {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "channels-first" | "nchw" => Ok(Self::ChannelsFirst),
            "channels-last" | "nhwc" => Ok(Self::ChannelsLast),
            _ => Err(format!(
                "unknown ResNet layout {s:?}: channels-first (nchw) or channels-last (nhwc)"
            )),
        }
    }
}

/// Stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool) and stages with `layers` bottlenecks each.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Bottleneck<ConvBn>>,
    /// The blocks once quantised (`--precision int8`), replacing `blocks`; the stem, on three
    /// input channels, stays f32.
    int8_blocks: Vec<Bottleneck<Int8Conv>>,
    /// The blocks channels-last, replacing `blocks` where generic operations run (a GPU): each
    /// convolution one GEMM over the whole batch. The stem stays NCHW, as the input arrives.
    nhwc_blocks: Vec<Bottleneck<ConvNhwc>>,
}

impl ResNet {
    pub const OUT_CHANNELS: usize = 1024;

    pub fn new(layers: [usize; 3], vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(3, 64, 7, 2, 3, vb.pp("conv1"), vb.pp("bn1"))?;
        let mut blocks = Vec::new();
        let mut in_c = 64;
        for (stage, (&n, planes)) in layers.iter().zip([64usize, 128, 256]).enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            let svb = vb.pp(format!("layer{}", stage + 1));
            for i in 0..n {
                blocks.push(bottleneck(
                    in_c,
                    planes,
                    if i == 0 { stride } else { 1 },
                    svb.pp(i.to_string()),
                )?);
                in_c = planes * 4;
            }
        }
        let mut resnet = Self {
            stem,
            blocks,
            int8_blocks: Vec::new(),
            nhwc_blocks: Vec::new(),
        };
        if !crate::network::kernels::fused(vb.device()) {
            resnet.set_layout(ResNetLayout::ChannelsLast)?;
        }
        Ok(resnet)
    }

    /// The blocks' layout now (int8 blocks are channels-last).
    pub fn layout(&self) -> ResNetLayout {
        match self.blocks.is_empty() {
            true => ResNetLayout::ChannelsLast,
            false => ResNetLayout::ChannelsFirst,
        }
    }

    /// Converts the blocks to `layout` (their weights are rearranged, nothing else changes).
    pub fn set_layout(&mut self, layout: ResNetLayout) -> Result<()> {
        if !self.int8_blocks.is_empty() {
            if layout == ResNetLayout::ChannelsLast {
                return Ok(());
            }
            candle_core::bail!("the int8 ResNet runs channels-last, with its own kernels");
        }
        match layout {
            ResNetLayout::ChannelsLast if !self.blocks.is_empty() => {
                self.nhwc_blocks = self
                    .blocks
                    .iter()
                    .map(|b| b.map(ConvBn::to_nhwc))
                    .collect::<Result<_>>()?;
                self.blocks.clear();
            }
            ResNetLayout::ChannelsFirst if !self.nhwc_blocks.is_empty() => {
                self.blocks = self
                    .nhwc_blocks
                    .iter()
                    .map(|b| b.map(ConvBn::from_nhwc))
                    .collect::<Result<_>>()?;
                self.nhwc_blocks.clear();
            }
            _ => {}
        }
        Ok(())
    }

    /// Quantises the bottleneck blocks to int8 and frees their f32 weights. CPU only.
    pub fn quantize_int8(&mut self) -> Result<()> {
        if !self.stem.weight.device().is_cpu() || !self.nhwc_blocks.is_empty() {
            candle_core::bail!("int8 weights run on the CPU only, with its own kernels");
        }
        let int8 = self
            .blocks
            .iter()
            .map(|b| b.map(ConvBn::to_int8))
            .collect::<Result<Vec<_>>>()?;
        self.int8_blocks.extend(int8);
        self.blocks.clear();
        Ok(())
    }
}

impl Module for ResNet {
    /// `[B, 3, S, S]` → `[B, 1024, S/16, S/16]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward(x, None, true)?;
        // Zero padding equals -inf padding here: the input is post-ReLU, so never negative.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        if !self.int8_blocks.is_empty() {
            let mut h = Nhwc::from_nchw(&x.to_dtype(DType::F32)?)?;
            for block in &self.int8_blocks {
                h = block.forward(&h)?;
            }
            return h.to_nchw(x.device())?.to_dtype(x.dtype());
        }
        if !self.nhwc_blocks.is_empty() {
            let d = x.device();
            let to_nhwc = || x.permute((0, 2, 3, 1))?.contiguous();
            let mut h = step("to and from channels-last", d, to_nhwc)?;
            for block in &self.nhwc_blocks {
                h = block.forward(&h)?;
            }
            let to_nchw = || h.permute((0, 3, 1, 2))?.contiguous();
            return step("to and from channels-last", d, to_nchw);
        }
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x)
    }
}
