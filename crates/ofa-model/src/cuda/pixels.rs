//! `normalize_pixels` of `kernels/ofa.cu` as a candle operation (a `--features cuda` build, the
//! bytes on a GPU): a batch of prepared uint8 HWC images → normalised `[B, 3, H·W]` planes in
//! the model's type, one pass, bit for bit what the CPU computes (see the kernel).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda::ops::{by_dtype, cuda_err, elementwise, suffix, view, PTX};

struct Normalize {
    mean: [f32; 3],
    std: [f32; 3],
    dtype: DType,
}

fn launch<T: CudaDType + DeviceRepr>(
    op: &Normalize,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (b, plane, three) = l.shape().dims3()?;
    let n = b * plane;
    if three != 3 || u32::try_from(n * 3).is_err() {
        bail!("ofa-normalize-pixels: pixels of {:?}", l.shape());
    }
    let dev = &s.device;
    let func = dev.get_or_load_custom_func(
        &format!("normalize_pixels_{}", suffix(op.dtype)?),
        "ofa",
        PTX,
    )?;
    let x = view::<u8>(s, l)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(n * 3)? };
    let (n32, plane32) = (n as u32, plane as u32);
    let mut args = func.builder();
    args.arg(&x).arg(&mut out).arg(&n32).arg(&plane32);
    for v in op.mean.iter().chain(&op.std) {
        args.arg(v);
    }
    // SAFETY: the argument list matches normalize_pixels_* in kernels/ofa.cu.
    unsafe { args.launch(elementwise(n as u64)) }.map_err(cuda_err)?;
    Ok((
        T::wrap_cuda_slice(out, dev.clone()),
        Shape::from((b, 3, plane)),
    ))
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "ofa-normalize-pixels"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-normalize-pixels runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        if s.dtype() != DType::U8 {
            bail!("ofa-normalize-pixels takes bytes, not {:?}", s.dtype());
        }
        by_dtype!(self.dtype, launch, self, s, l)
    }
}

/// Pixels `[B, H·W, 3]` (u8) → `(x / 255 − mean[c]) / std[c]` as `[B, 3, H·W]` in `dtype`.
pub fn normalize_pixels(x: &Tensor, mean: [f32; 3], std: [f32; 3], dtype: DType) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&Normalize { mean, std, dtype })
}
