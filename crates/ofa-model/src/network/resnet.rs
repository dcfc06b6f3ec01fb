//! OFA's image backbone: torchvision-v1.5 bottleneck ResNet, stem plus the first three stages
//! (stride 16, 1024 channels). BatchNorm (eval mode) is folded into the preceding convolution.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use std::collections::HashMap;

use crate::cpu::int8::resnet::{Int8Conv, Nhwc};
use crate::network::bottleneck::Bottleneck;
use crate::network::conv_bn::{ConvBn, FOLDED_BIAS, FOLDED_WEIGHT};
use crate::network::resnet_nhwc::ConvNhwc;
use crate::profile::step;

/// A block's place in the network: its name under the ResNet (`layer2.0`), channels in,
/// planes, stride.
struct BlockSpec {
    name: String,
    in_c: usize,
    planes: usize,
    stride: usize,
}

fn block_specs(layers: [usize; 3]) -> Vec<BlockSpec> {
    let mut specs = Vec::new();
    let mut in_c = 64;
    for (stage, (&n, planes)) in layers.iter().zip([64usize, 128, 256]).enumerate() {
        for i in 0..n {
            let first_stride = if stage == 0 { 1 } else { 2 };
            specs.push(BlockSpec {
                name: format!("layer{}.{i}", stage + 1),
                in_c,
                planes,
                stride: if i == 0 { first_stride } else { 1 },
            });
            in_c = planes * 4;
        }
    }
    specs
}

/// A block's int8 convolutions as an int8 engine-layout file holds them (folded and quantised
/// by `convert`); `None` where `vb` holds the checkpoint's.
fn int8_bottleneck(spec: &BlockSpec, vb: VarBuilder) -> Result<Option<Bottleneck<Int8Conv>>> {
    let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder| {
        let Some(w) = crate::network::linear::int8_weights(&vb, c_out, c_in * k * k)? else {
            return Ok(None);
        };
        let bias = vb
            .get(c_out, FOLDED_BIAS)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        Int8Conv::from_parts(w, bias, k, stride, k / 2).map(Some)
    };
    let (in_c, planes, out_c) = (spec.in_c, spec.planes, spec.planes * 4);
    let Some(conv1) = conv(in_c, planes, 1, 1, vb.pp("conv1"))? else {
        return Ok(None);
    };
    let present = |c: Option<Int8Conv>, name: &str| {
        c.ok_or_else(|| {
            candle_core::Error::Msg(format!("{}.{name}: int8 weights missing", vb.prefix()))
        })
    };
    let downsample = match spec.stride != 1 || in_c != out_c {
        true => Some(present(
            conv(in_c, out_c, 1, spec.stride, vb.pp("downsample.0"))?,
            "downsample.0",
        )?),
        false => None,
    };
    Ok(Some(Bottleneck {
        conv1,
        conv2: present(
            conv(planes, planes, 3, spec.stride, vb.pp("conv2"))?,
            "conv2",
        )?,
        conv3: present(conv(planes, out_c, 1, 1, vb.pp("conv3"))?, "conv3")?,
        downsample,
    }))
}

/// For an engine-layout file: every convolution and BatchNorm under `prefix` replaced by the
/// convolution with the BatchNorm folded in, and with `int8` the blocks' also quantised, made
/// as a start from the checkpoint makes them.
pub fn fold_into_layout(
    tensors: &mut HashMap<String, Tensor>,
    prefix: &str,
    layers: [usize; 3],
    int8: bool,
) -> Result<()> {
    use crate::network::dense_form::{OFFSET, PACKED, SCALE};
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &candle_core::Device::Cpu);
    let mut resnet = ResNet::new(layers, vb.pp(prefix))?;
    if int8 {
        resnet.quantize_int8()?;
    } else if resnet.blocks.is_empty() {
        candle_core::bail!("{prefix}: the f32 blocks fold in candle's layout only");
    }
    let specs = block_specs(layers);
    let mut gone: Vec<String> = specs
        .iter()
        .map(|s| format!("{prefix}.{}.", s.name))
        .collect();
    gone.extend([format!("{prefix}.conv1."), format!("{prefix}.bn1.")]);
    tensors.retain(|name, _| !gone.iter().any(|g| name.starts_with(g)));
    let mut put = |at: String, parts: Vec<(String, Tensor)>| {
        for (name, t) in parts {
            tensors.insert(format!("{at}.{name}"), t);
        }
    };
    let folded = |c: &ConvBn| -> Result<Vec<(String, Tensor)>> {
        let (weight, bias) = c.folded_tensors()?;
        Ok(vec![
            (FOLDED_WEIGHT.into(), weight),
            (FOLDED_BIAS.into(), bias),
        ])
    };
    put(format!("{prefix}.conv1"), folded(&resnet.stem)?);
    let quantised = |c: &Int8Conv| -> Result<Vec<(String, Tensor)>> {
        let (packed, scale, offset, bias) = c.to_tensors()?;
        let w = |suffix: &str| format!("weight{suffix}");
        Ok(vec![
            (w(PACKED), packed),
            (w(SCALE), scale),
            (w(OFFSET), offset),
            (FOLDED_BIAS.into(), bias),
        ])
    };
    for (i, spec) in specs.iter().enumerate() {
        let at = |name: &str| format!("{prefix}.{}.{name}", spec.name);
        match int8 {
            true => {
                for (name, c) in resnet.int8_blocks[i].named() {
                    put(at(name), quantised(c)?)
                }
            }
            false => {
                for (name, c) in resnet.blocks[i].named() {
                    put(at(name), folded(c)?)
                }
            }
        }
    }
    Ok(())
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
        let specs = block_specs(layers);
        let mut resnet = Self {
            stem,
            blocks: Vec::new(),
            int8_blocks: Vec::new(),
            nhwc_blocks: Vec::new(),
        };
        // An int8 engine-layout file: the blocks as they run, nothing folded or quantised now.
        for spec in &specs {
            match int8_bottleneck(spec, vb.pp(&spec.name))? {
                Some(block) => resnet.int8_blocks.push(block),
                None => break,
            }
        }
        if !resnet.int8_blocks.is_empty() {
            if resnet.int8_blocks.len() != specs.len() {
                candle_core::bail!(
                    "{}: int8 weights for {} of {} blocks",
                    vb.prefix(),
                    resnet.int8_blocks.len(),
                    specs.len()
                );
            }
            return Ok(resnet);
        }
        for spec in &specs {
            let svb = vb.pp(&spec.name);
            resnet
                .blocks
                .push(bottleneck(spec.in_c, spec.planes, spec.stride, svb)?);
        }
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
        if !self.stem.device().is_cpu() || !self.nhwc_blocks.is_empty() {
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
