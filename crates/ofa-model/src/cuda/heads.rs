//! `split_heads` and `merge_heads` of `kernels/ofa.cu` as candle operations (a `--features
//! cuda` build, tensors on a GPU): attention heads out of `[B, L, H·dh]` rows with the
//! projection's bias added, and back with NormFormer's per-head scale, each one pass instead of
//! a bias or scale pass plus a layout copy.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda::ops::{by_dtype, cuda_err, cuda_of, elementwise, opt_view, suffix, view, PTX};

struct Heads<'a> {
    /// The bias `[H·dh]` (split) or the per-head scale `[H]` (merge).
    extra: Option<&'a Tensor>,
    split: bool,
    heads: usize,
}

impl Heads<'_> {
    /// `(B, L, H, dh)` of the input, and the output's shape.
    fn dims(&self, shape: &Shape) -> Result<([usize; 4], Shape)> {
        if self.split {
            let (b, l, d) = shape.dims3()?;
            let dh = d / self.heads;
            Ok(([b, l, self.heads, dh], Shape::from((b, self.heads, l, dh))))
        } else {
            let (b, h, l, dh) = shape.dims4()?;
            Ok(([b, l, h, dh], Shape::from((b, l, h * dh))))
        }
    }
}

fn launch_heads<T: CudaDType + DeviceRepr>(
    op: &Heads<'_>,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let ([b, len, h, dh], shape) = op.dims(l.shape())?;
    let n = b * len * h * dh;
    if dh % 4 != 0 || h * dh == 0 || u32::try_from(n).is_err() {
        bail!("ofa heads kernel: {h} heads of {dh} over {:?}", l.shape());
    }
    let name = if op.split {
        "split_heads"
    } else {
        "merge_heads"
    };
    let dev = &s.device;
    let func =
        dev.get_or_load_custom_func(&format!("{name}_{}", suffix(s.dtype())?), "ofa", PTX)?;
    let extra = op.extra.map(cuda_of).transpose()?;
    let x = view::<T>(s, l)?;
    let extra_view = opt_view::<T, _>(&extra)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(n)? };
    let null = 0usize;
    let dims = [b, len, h, dh].map(|v| v as u32);
    let mut args = func.builder();
    args.arg(&x);
    match &extra_view {
        Some(e) => args.arg(e),
        None => args.arg(&null),
    };
    args.arg(&mut out);
    for d in &dims {
        args.arg(d);
    }
    // Four elements per thread.
    // SAFETY: the argument list matches split_heads_* / merge_heads_* in kernels/ofa.cu.
    unsafe { args.launch(elementwise((n / 4) as u64)) }.map_err(cuda_err)?;
    Ok((T::wrap_cuda_slice(out, dev.clone()), shape))
}

impl CustomOp1 for Heads<'_> {
    fn name(&self) -> &'static str {
        if self.split {
            "ofa-split-heads"
        } else {
            "ofa-merge-heads"
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("{} runs on the GPU only", self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch_heads, this, s, l)
    }
}

fn apply(x: &Tensor, extra: Option<&Tensor>, split: bool, heads: usize) -> Result<Tensor> {
    let extra = match extra {
        Some(e) => Some(e.to_dtype(x.dtype())?.contiguous()?),
        None => None,
    };
    let op = Heads {
        extra: extra.as_ref(),
        split,
        heads,
    };
    let want = if split {
        x.dim(2)?
    } else {
        x.dim(1)? * x.dim(3)?
    };
    if let Some(e) = &extra {
        let expected = if split { want } else { heads };
        if e.elem_count() != expected {
            bail!("{} values where {expected} were expected", e.elem_count());
        }
    }
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// `[B, L, H·dh]` rows (+ `bias` `[H·dh]`) → heads `[B, H, L, dh]`.
pub fn split_heads(x: &Tensor, bias: Option<&Tensor>, heads: usize) -> Result<Tensor> {
    apply(x, bias, true, heads)
}

/// Heads `[B, H, L, dh]` (× `scale` `[H]`) → rows `[B, L, H·dh]`.
pub fn merge_heads(o: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
    let heads = o.dim(1)?;
    apply(o, scale, false, heads)
}
