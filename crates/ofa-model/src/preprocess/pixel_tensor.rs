//! The network's image input: a batch of prepared images (uint8 HWC, `S×S×3`) as the normalised
//! `[B, 3, S, S]` tensor in the model's type. On a GPU the bytes cross and are normalised there
//! (`normalize_pixels` in `kernels/ofa.cu`, bit for bit the CPU's arithmetic): a quarter of the
//! f32 planes' upload, and no normalising on the inference thread, which serialises it with
//! the GPU's work (about half a millisecond per image on one core).

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::{OfaError, Result};

/// `images` (each `size×size×3` bytes) → `[B, 3, size, size]` in `dtype` on `device`.
pub fn pixel_tensor(
    images: &[&[u8]],
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let (plane, n) = (size * size, images.len());
    if let Some(p) = images.iter().find(|p| p.len() != plane * 3) {
        return Err(OfaError::Input(ofa_api::BackendError::Image(format!(
            "prepared image has {} bytes, expected {size}x{size}x3",
            p.len()
        ))));
    }
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        let bytes = images.concat();
        let x = Tensor::from_vec(bytes, (n, plane, 3), device)?;
        let planes = crate::cuda::pixels::normalize_pixels(&x, mean, std, dtype)?;
        return Ok(planes.reshape((n, 3, size, size))?);
    }
    let mut data = vec![0f32; n * 3 * plane];
    data.par_chunks_mut(3 * plane)
        .zip(images.par_iter())
        .for_each(|(out, img)| normalize_chw_into(img, out, mean, std));
    Ok(Tensor::from_vec(data, (n, 3, size, size), device)?.to_dtype(dtype)?)
}

/// torchvision's `ToTensor` then `Normalize(mean, std)` of one image, in f32: HWC bytes into
/// `out`, three planes (CHW) of `out.len() / 3` pixels.
pub fn normalize_chw_into(hwc: &[u8], out: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    let plane = out.len() / 3;
    for (p, px) in hwc.chunks_exact(3).take(plane).enumerate() {
        for c in 0..3 {
            let v = px[c] as f32 / 255.0f32;
            out[c * plane + p] = (v - mean[c]) / std[c];
        }
    }
}
