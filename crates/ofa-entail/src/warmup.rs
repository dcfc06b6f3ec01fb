//! The warm-up the model-serving commands (`serve`, `worker`) run before they take work: a small
//! synthetic pair, scored at every batch size the engine may form on a GPU (so no request pays
//! for a new shape's allocations, cuBLAS choices or CUDA graph recording) or once at the largest
//! on the CPU (its memory touched). The engine keeps the prepared pair as its circuit breaker's
//! own probe.

use ofa_engine::Pair;
use ofa_model::Device;

/// A small photo-like PNG and a plain sentence.
pub fn pair() -> Pair {
    Pair {
        image: image().into(),
        text: "a photo.".into(),
        premise: None,
    }
}

fn image() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding in memory");
    out.into_inner()
}

/// The batch sizes to warm up on `device` for batches of at most `max`.
pub fn batch_sizes(device: &Device, max: usize) -> Vec<usize> {
    if device.is_cpu() {
        vec![max]
    } else {
        (1..=max).collect()
    }
}
