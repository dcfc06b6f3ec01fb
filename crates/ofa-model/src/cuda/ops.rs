//! The kernels of `kernels/ofa.cu` as candle operations (a `--features cuda` build, tensors on
//! a GPU): fused attention probabilities, per-channel epilogues and im2col. Each replaces
//! several of candle's generic passes; why is in the `.cu` file.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use half::{bf16, f16};

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ofa.ptx"));
pub(crate) const THREADS: u32 = 256;

pub(crate) fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

pub(crate) fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => bail!("no OFA CUDA kernel for {other:?}"),
    })
}

pub(crate) fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    if !l.is_contiguous() {
        bail!("OFA CUDA kernels take contiguous tensors");
    }
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

/// [`view`] of an optional operand held by [`cuda_of`].
pub(crate) fn opt_view<'a, T: CudaDType, S: std::ops::Deref<Target = Storage>>(
    held: &'a Option<(S, Layout)>,
) -> Result<Option<CudaView<'a, T>>> {
    held.as_ref()
        .map(|(s, l)| view::<T>(as_cuda(s), l))
        .transpose()
}

/// A tensor's storage, which must be on the GPU, read-locked for the launch.
pub(crate) fn cuda_of(t: &Tensor) -> Result<(impl std::ops::Deref<Target = Storage> + '_, Layout)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, Storage::Cuda(_)) {
        bail!("OFA CUDA kernels need every operand on the GPU");
    }
    Ok((s, l.clone()))
}

pub(crate) fn as_cuda(s: &Storage) -> &CudaStorage {
    match s {
        Storage::Cuda(c) => c,
        _ => unreachable!("checked by cuda_of"),
    }
}

pub(crate) fn elementwise(n: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as u64).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Dispatches a generic launch over the element type.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            other => bail!("no OFA CUDA kernel for {other:?}"),
        }
    };
}
pub(crate) use by_dtype;

struct AttnSoftmax<'a> {
    bias: &'a Tensor,
    mask: Option<&'a Tensor>,
    scale: f32,
}

impl AttnSoftmax<'_> {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        s: &CudaStorage,
        l: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, h, lq, lk) = l.shape().dims4()?;
        let (bias_s, bias_l) = cuda_of(self.bias)?;
        // A `[1, H, Lq, Lk]` view whose rows are contiguous: read in place at its strides.
        let (bias_sh, bias_sq) = match (bias_l.dims(), bias_l.stride()) {
            ([1, bh, bq, bk], [_, sh, sq, 1]) if [*bh, *bq, *bk] == [h, lq, lk] => (*sh, *sq),
            _ => bail!(
                "attention bias of {:?} (strides {:?}) for scores of {:?}",
                bias_l.dims(),
                bias_l.stride(),
                l.shape()
            ),
        };
        let dev = &s.device;
        let func = dev.get_or_load_custom_func(
            &format!("attn_softmax_{}", suffix(s.dtype())?),
            "ofa",
            PTX,
        )?;
        let mask = self.mask.map(cuda_of).transpose()?;
        let scores = view::<T>(s, l)?;
        let bias = as_cuda(&bias_s)
            .as_cuda_slice::<T>()?
            .slice(bias_l.start_offset()..);
        let mask_view = opt_view::<T, _>(&mask)?;
        let n = b * h * lq * lk;
        // SAFETY: every element is written by the kernel.
        let mut out = unsafe { dev.alloc::<T>(n)? };
        let rows = b * h * lq;
        let fits = |v: usize| u32::try_from(v).is_ok();
        if !(fits(rows) && fits(h * lq) && fits(lk) && fits(bias_sh) && fits(bias_sq)) {
            bail!("ofa-attn-softmax: scores of {:?} too large", l.shape());
        }
        let [rows32, h32, lq32, lk32, sh32, sq32] =
            [rows, h, lq, lk, bias_sh, bias_sq].map(|v| v as u32);
        let mut args = func.builder();
        args.arg(&scores).arg(&bias);
        let null = 0usize;
        match &mask_view {
            Some(m) => args.arg(m),
            None => args.arg(&null),
        };
        args.arg(&mut out)
            .arg(&rows32)
            .arg(&h32)
            .arg(&lq32)
            .arg(&lk32)
            .arg(&self.scale)
            .arg(&sh32)
            .arg(&sq32);
        // One warp per row; the kernel's warps stride over rows past the grid.
        let warps = (THREADS / 32) as usize;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(warps).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches attn_softmax_* in kernels/ofa.cu.
        unsafe { args.launch(cfg) }.map_err(cuda_err)?;
        Ok((T::wrap_cuda_slice(out, dev.clone()), l.shape().clone()))
    }
}

impl CustomOp1 for AttnSoftmax<'_> {
    fn name(&self) -> &'static str {
        "ofa-attn-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-attn-softmax runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch_attn, this, s, l)
    }
}

fn launch_attn<T: CudaDType + DeviceRepr>(
    op: &AttnSoftmax<'_>,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    op.launch::<T>(s, l)
}

/// `softmax(scores · scale + bias + mask)` over the last axis in one pass. `scores`
/// `[B, H, Lq, Lk]`; `bias` `[1, H, Lq, Lk]` or `[H, Lq, Lk]`, shared by the batch (a corner of a
/// larger bias is read in place, without a copy); `mask` `[B, Lk]`.
pub fn attention_probs(
    scores: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let dtype = scores.dtype();
    let mut bias = bias.to_dtype(dtype)?;
    if bias.rank() == 3 {
        bias = bias.unsqueeze(0)?;
    }
    if bias.stride().last() != Some(&1) {
        bias = bias.contiguous()?;
    }
    let mask = match mask {
        Some(m) => Some(m.to_dtype(dtype)?.contiguous()?),
        None => None,
    };
    scores.contiguous()?.apply_op1_no_bwd(&AttnSoftmax {
        bias: &bias,
        mask: mask.as_ref(),
        scale: scale as f32,
    })
}

struct ChannelOp<'a> {
    param: &'a Tensor,
    residual: Option<&'a Tensor>,
    channels: usize,
    inner: usize,
    multiply: bool,
    relu: bool,
}

fn launch_channel<T: CudaDType + DeviceRepr>(
    op: &ChannelOp<'_>,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &s.device;
    let func =
        dev.get_or_load_custom_func(&format!("channel_op_{}", suffix(s.dtype())?), "ofa", PTX)?;
    let (p_s, p_l) = cuda_of(op.param)?;
    let res = op.residual.map(cuda_of).transpose()?;
    let x = view::<T>(s, l)?;
    let p = view::<T>(as_cuda(&p_s), &p_l)?;
    let res_view = opt_view::<T, _>(&res)?;
    let n = l.shape().elem_count();
    let Ok(n32) = u32::try_from(n) else {
        bail!("ofa-channel-op takes at most 2^32 elements, got {n}");
    };
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(n)? };
    let (c, hw) = (op.channels as u32, op.inner as u32);
    let (mode, relu) = (u32::from(op.multiply), u32::from(op.relu));
    let null = 0usize;
    let mut args = func.builder();
    args.arg(&x).arg(&p);
    match &res_view {
        Some(r) => args.arg(r),
        None => args.arg(&null),
    };
    args.arg(&mut out)
        .arg(&n32)
        .arg(&c)
        .arg(&hw)
        .arg(&mode)
        .arg(&relu);
    // Four elements per thread.
    // SAFETY: the argument list matches channel_op_* in kernels/ofa.cu.
    unsafe { args.launch(elementwise(n.div_ceil(4) as u64)) }.map_err(cuda_err)?;
    Ok((T::wrap_cuda_slice(out, dev.clone()), l.shape().clone()))
}

impl CustomOp1 for ChannelOp<'_> {
    fn name(&self) -> &'static str {
        "ofa-channel-op"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-channel-op runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch_channel, this, s, l)
    }
}

/// `act(x ⊕ p[c] + residual)` where `c` is the index along `axis` (`⊕`: add, or multiply when
/// `multiply`): a convolution's bias and ReLU, a linear layer's bias, a per-head scale.
pub fn channel_op(
    x: &Tensor,
    axis: usize,
    p: &Tensor,
    residual: Option<&Tensor>,
    multiply: bool,
    relu: bool,
) -> Result<Tensor> {
    let dims = x.dims();
    let channels = dims[axis];
    if p.elem_count() != channels {
        bail!("{} parameters for {channels} channels", p.elem_count());
    }
    let inner: usize = dims[axis + 1..].iter().product();
    let p = p.to_dtype(x.dtype())?.contiguous()?;
    let residual = match residual {
        Some(r) if r.dims() == dims => Some(r.contiguous()?),
        Some(r) => bail!("residual {:?} for {:?}", r.shape(), x.shape()),
        None => None,
    };
    x.contiguous()?.apply_op1_no_bwd(&ChannelOp {
        param: &p,
        residual: residual.as_ref(),
        channels,
        inner,
        multiply,
        relu,
    })
}

struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
}

fn launch_im2col<T: CudaDType + DeviceRepr>(
    op: &Im2Col,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (b, c, h, w) = l.shape().dims4()?;
    let out_size = |n: usize| (n + 2 * op.padding - op.k) / op.stride + 1;
    let (oh, ow) = (out_size(h), out_size(w));
    let dev = &s.device;
    let func =
        dev.get_or_load_custom_func(&format!("im2col_{}", suffix(s.dtype())?), "ofa", PTX)?;
    let x = view::<T>(s, l)?;
    let rows = b * c * op.k * op.k;
    if h * w > u32::MAX as usize || rows > i32::MAX as usize {
        bail!("ofa-im2col: input {:?} too large", l.shape());
    }
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(rows * oh * ow)? };
    let dims = [c, h, w, op.k, op.stride, op.padding, oh, ow].map(|v| v as u32);
    let mut args = func.builder();
    args.arg(&x).arg(&mut out);
    for d in &dims {
        args.arg(d);
    }
    let cfg = LaunchConfig {
        grid_dim: (
            rows as u32,
            (oh * ow).div_ceil(THREADS as usize).min(65_535) as u32,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches im2col_* in kernels/ofa.cu.
    unsafe { args.launch(cfg) }.map_err(cuda_err)?;
    let shape = Shape::from((b, c * op.k * op.k, oh * ow));
    Ok((T::wrap_cuda_slice(out, dev.clone()), shape))
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "ofa-im2col"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-im2col here runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch_im2col, this, s, l)
    }
}

/// `[B, C, H, W]` → columns `[B, C·k·k, OH·OW]` for a convolution as one batched matmul.
pub fn im2col(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&Im2Col { k, stride, padding })
}
