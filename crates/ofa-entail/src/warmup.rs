//! The warm-up the model-serving commands (`serve`, `worker`) run before they take work: a small
//! synthetic pair, scored at every batch size the engine may form on a GPU (so no request pays
//! for a new shape's allocations, cuBLAS choices or CUDA graph recording) or once at the largest
//! on the CPU (its memory touched). The engine keeps the prepared pair as its circuit breaker's
//! own probe.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ofa_engine::{Engine, Pair};
use ofa_model::Device;
use ofa_server::logging::Logger;

/// Warms `engine` up for batches of at most `max_batch` on `device`, off the async runtime, and
/// logs `warmed_up` with the time it took.
pub async fn run(
    engine: &Arc<Engine>,
    device: &Device,
    max_batch: usize,
    log: &Logger,
) -> Result<()> {
    let t = Instant::now();
    let sizes = batch_sizes(device, max_batch);
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.warmup(&pair(), &sizes))
        .await?
        .context("warm-up failed")?;
    log.event(
        "warmed_up",
        &[("seconds", t.elapsed().as_secs_f64().into())],
    );
    Ok(())
}

/// Without a warm-up (`WARMUP=false`) the engine still gets the pair as its breaker's probe.
pub fn probe_only(engine: &Engine) -> Result<()> {
    engine
        .set_probe(&pair())
        .context("preparing the breaker's probe pair")
}

/// A small photo-like PNG and a plain sentence.
fn pair() -> Pair {
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
fn batch_sizes(device: &Device, max: usize) -> Vec<usize> {
    if device.is_cpu() {
        vec![max]
    } else {
        (1..=max).collect()
    }
}
