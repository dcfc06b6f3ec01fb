//! What a GPU is and how much of its memory is in use, for logs, `/info` and `/metrics`; and the
//! matmul settings that keep f32 exact there.

use candle_core::Device;

use crate::error::{OfaError, Result};

/// A GPU as the driver describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: String,
    pub memory_total_bytes: u64,
}

/// Device memory: `(used, total)` bytes, by every process on the GPU (what `nvidia-smi` shows).
pub fn memory(device: &Device) -> Option<(u64, u64)> {
    imp::memory(device)
}

/// The GPU behind `device`; `None` on the CPU.
pub fn info(device: &Device) -> Option<GpuInfo> {
    imp::info(device)
}

/// Opens CUDA device `ordinal` with f32 matmuls in full f32 (TF32 would drift from the
/// reference by ~1e-3), or says what is missing.
pub fn open(ordinal: usize) -> Result<Device> {
    imp::open(ordinal)
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;

    pub fn memory(device: &Device) -> Option<(u64, u64)> {
        let cuda = device.as_cuda_device().ok()?;
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        Some(((total - free) as u64, total as u64))
    }

    pub fn info(device: &Device) -> Option<GpuInfo> {
        let cuda = device.as_cuda_device().ok()?;
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        let (major, minor) = ctx.compute_capability().ok()?;
        Some(GpuInfo {
            ordinal: ctx.ordinal(),
            name: ctx.name().unwrap_or_else(|_| "unknown".into()),
            compute_capability: format!("{major}.{minor}"),
            memory_total_bytes: ctx.total_mem().ok()? as u64,
        })
    }

    pub fn open(ordinal: usize) -> Result<Device> {
        candle_core::cuda::set_gemm_reduced_precision_f32(false);
        let count = candle_core::cuda::cudarc::driver::CudaContext::device_count()
            .map_err(|e| OfaError::Device(format!("no usable CUDA driver ({e})")))?;
        if ordinal >= count as usize {
            return Err(OfaError::Device(format!(
                "GPU_DEVICE={ordinal} but the driver sees {count} GPU(s)"
            )));
        }
        let device = Device::new_cuda(ordinal)
            .map_err(|e| OfaError::Device(format!("cannot open CUDA device {ordinal}: {e}")))?;
        if let Ok(cuda) = device.as_cuda_device() {
            // SAFETY: this program runs every operation on the device's one stream, so the
            // per-operation events that order work across streams are pure overhead (they
            // cost a few microseconds per kernel, which adds up at batch 1).
            unsafe { cuda.disable_event_tracking() };
            keep_freed_memory(cuda).map_err(|e| {
                OfaError::Device(format!("CUDA device {ordinal}'s memory pool: {e}"))
            })?;
        }
        Ok(device)
    }

    /// Lets the device's memory pool keep what the model frees. cudarc allocates with the
    /// stream-ordered allocator, whose pool by default (threshold 0) hands every freed byte back
    /// to the driver at each synchronisation, and every batch synchronises to read its answers:
    /// each pass then maps its activations' memory afresh (gigabytes at batch 64). NVIDIA's
    /// advice for a process that owns its GPU is this setting; the pool then holds the largest
    /// batch's working set, which warm-up reaches at start (and `/metrics` shows).
    fn keep_freed_memory(cuda: &candle_core::CudaDevice) -> std::result::Result<(), String> {
        use candle_core::cuda_backend::cudarc::driver::{result, sys};
        let ctx = cuda.cuda_stream().context().clone();
        if !ctx.has_async_alloc() {
            return Ok(());
        }
        let mut threshold = u64::MAX;
        // SAFETY: the device comes from the open context; the attribute's value is a u64, as
        // the driver's documentation gives for the release threshold.
        unsafe {
            let pool = result::device::get_mem_pool(ctx.cu_device()).map_err(|e| e.to_string())?;
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
            .map_err(|e| e.to_string())
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub fn memory(_: &Device) -> Option<(u64, u64)> {
        None
    }

    pub fn info(_: &Device) -> Option<GpuInfo> {
        None
    }

    pub fn open(ordinal: usize) -> Result<Device> {
        Err(OfaError::Device(format!(
            "GPU_DEVICE={ordinal}: this build has no CUDA support (build with --features cuda)"
        )))
    }
}
