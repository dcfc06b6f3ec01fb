//! `norm_rows` of `kernels/ofa.cu` as a candle operation (a `--features cuda` build, tensors on
//! a GPU): a layer norm with what surrounds it in a transformer layer (the bias and GELU before
//! it, the residual add after it) in one pass over the rows.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda::ops::{as_cuda, by_dtype, cuda_err, cuda_of, opt_view, suffix, view, PTX};

/// Values a row's thread keeps in registers (`NORM_PER_THREAD` in the kernel).
const PER_THREAD: usize = 8;

struct NormRows<'a> {
    pre_bias: Option<&'a Tensor>,
    weight: &'a Tensor,
    bias: &'a Tensor,
    residual: Option<&'a Tensor>,
    eps: f32,
    gelu: bool,
}

fn launch_norm<T: CudaDType + DeviceRepr>(
    op: &NormRows<'_>,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dims = l.shape().dims();
    let n = *dims.last().unwrap_or(&0);
    let rows = l.shape().elem_count() / n.max(1);
    let (Ok(rows32), Ok(n32)) = (u32::try_from(rows), u32::try_from(n)) else {
        bail!("ofa-norm-rows: input {:?} too large", l.shape());
    };
    let dev = &s.device;
    let func =
        dev.get_or_load_custom_func(&format!("norm_rows_{}", suffix(s.dtype())?), "ofa", PTX)?;
    let (w_s, w_l) = cuda_of(op.weight)?;
    let (b_s, b_l) = cuda_of(op.bias)?;
    let pre = op.pre_bias.map(cuda_of).transpose()?;
    let res = op.residual.map(cuda_of).transpose()?;
    let x = view::<T>(s, l)?;
    let w = view::<T>(as_cuda(&w_s), &w_l)?;
    let b = view::<T>(as_cuda(&b_s), &b_l)?;
    let pre_view = opt_view::<T, _>(&pre)?;
    let res_view = opt_view::<T, _>(&res)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(rows * n)? };
    let null = 0usize;
    let gelu = u32::from(op.gelu);
    let mut args = func.builder();
    args.arg(&x);
    match &pre_view {
        Some(p) => args.arg(p),
        None => args.arg(&null),
    };
    args.arg(&w).arg(&b);
    match &res_view {
        Some(r) => args.arg(r),
        None => args.arg(&null),
    };
    args.arg(&mut out)
        .arg(&rows32)
        .arg(&n32)
        .arg(&op.eps)
        .arg(&gelu);
    // One block per row, just enough threads to hold it in registers (past 8,192 the kernel
    // loops); blocks stride over rows past the grid.
    let threads = n.div_ceil(PER_THREAD).next_power_of_two().clamp(32, 1024) as u32;
    let cfg = LaunchConfig {
        grid_dim: (rows.clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches norm_rows_* in kernels/ofa.cu.
    unsafe { args.launch(cfg) }.map_err(cuda_err)?;
    Ok((T::wrap_cuda_slice(out, dev.clone()), l.shape().clone()))
}

impl CustomOp1 for NormRows<'_> {
    fn name(&self) -> &'static str {
        "ofa-norm-rows"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-norm-rows runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch_norm, this, s, l)
    }
}

/// `LN(act(x + pre_bias))·weight + bias (+ residual)` over the last axis of `x`, where `act`
/// is the exact GELU when `gelu`; `pre_bias`, `weight`, `bias` hold one value per feature and
/// `residual` is shaped as `x`.
pub fn norm_rows(
    x: &Tensor,
    pre_bias: Option<&Tensor>,
    gelu: bool,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let n = x.dims().last().copied().unwrap_or(0);
    let feature = |t: &Tensor| -> Result<Tensor> {
        if t.elem_count() != n {
            bail!("{} values for rows of {n}", t.elem_count());
        }
        t.to_dtype(dtype)?.contiguous()
    };
    let pre_bias = pre_bias.map(feature).transpose()?;
    let (weight, bias) = (feature(weight)?, feature(bias)?);
    let residual = match residual {
        Some(r) if r.dims() == x.dims() => Some(r.to_dtype(dtype)?.contiguous()?),
        Some(r) => bail!("residual {:?} for {:?}", r.shape(), x.shape()),
        None => None,
    };
    x.contiguous()?.apply_op1_no_bwd(&NormRows {
        pre_bias: pre_bias.as_ref(),
        weight: &weight,
        bias: &bias,
        residual: residual.as_ref(),
        eps: eps as f32,
        gelu,
    })
}
