//! `im2col_nhwc` of `kernels/ofa.cu` as a candle operation (a `--features cuda` build, tensors
//! on a GPU): the column matrix of a channels-last convolution, for one GEMM per convolution.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::cuda::ops::{by_dtype, cuda_err, elementwise, suffix, view, PTX};

struct Im2ColNhwc {
    k: usize,
    stride: usize,
    padding: usize,
}

fn launch<T: CudaDType + DeviceRepr>(
    op: &Im2ColNhwc,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (b, h, w, c) = l.shape().dims4()?;
    let (k, stride, pad) = (op.k, op.stride, op.padding);
    if h + 2 * pad < k || w + 2 * pad < k {
        bail!("ofa-im2col-nhwc: a {k}×{k} kernel over {h}×{w} with padding {pad}");
    }
    let out_size = |n: usize| (n + 2 * pad - k) / stride + 1;
    let (oh, ow) = (out_size(h), out_size(w));
    let segments = b * oh * ow * k * k;
    // Segments are counted in 32 bits (with room for the last stride past the end).
    if u32::try_from(segments * 2).is_err() {
        bail!("ofa-im2col-nhwc: input {:?} too large", l.shape());
    }
    let dev = &s.device;
    let func =
        dev.get_or_load_custom_func(&format!("im2col_nhwc_{}", suffix(s.dtype())?), "ofa", PTX)?;
    let x = view::<T>(s, l)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(segments * c)? };
    let dims = [segments, c, h, w, k, stride, pad, oh, ow].map(|v| v as u32);
    let mut args = func.builder();
    args.arg(&x).arg(&mut out);
    for d in &dims {
        args.arg(d);
    }
    // One warp per segment; the warps stride over segments past the grid.
    // SAFETY: the argument list matches im2col_nhwc_* in kernels/ofa.cu.
    unsafe { args.launch(elementwise(segments as u64 * 32)) }.map_err(cuda_err)?;
    let shape = Shape::from((b * oh * ow, k * k * c));
    Ok((T::wrap_cuda_slice(out, dev.clone()), shape))
}

impl CustomOp1 for Im2ColNhwc {
    fn name(&self) -> &'static str {
        "ofa-im2col-nhwc"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("ofa-im2col-nhwc runs on the GPU only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let this = self;
        by_dtype!(s.dtype(), launch, this, s, l)
    }
}

/// `[B, H, W, C]` → columns `[B·OH·OW, k·k·C]`, ordered (ky, kx, c) within a row.
pub fn im2col_nhwc(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&Im2ColNhwc { k, stride, padding })
}
