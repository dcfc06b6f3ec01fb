//! The warm-up the model-serving commands (`serve`, `worker`) run before they take work: a small
//! synthetic pair, scored at every batch size the engine may form on a GPU (so no request pays
//! for a new shape's allocations, cuBLAS choices or CUDA graph recording; with graphs, at the
//! next two text widths too) or once at the largest on the CPU (its memory touched). The engine
//! keeps the prepared pair as its circuit breaker's own probe.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ofa_engine::{Engine, Pair};
use ofa_model::{Device, Entailment};

/// Warms `engine`, which runs `pipeline`, up for batches of at most `max_batch`, off the async
/// runtime, and logs `warmed_up` with the time it took.
pub async fn run(engine: &Arc<Engine>, pipeline: &Entailment, max_batch: usize) -> Result<()> {
    let t = Instant::now();
    let sizes = batch_sizes(pipeline.device(), max_batch);
    // With CUDA graphs each text width a batch pads to is a shape of its own: the next widths
    // are recorded now too, for the batch sizes that replay graphs.
    let graphed: Vec<usize> = sizes
        .iter()
        .copied()
        .filter(|&n| n <= pipeline.model().cuda_graphs().max_batch)
        .collect();
    let longer = match (graphed.is_empty(), pipeline.text_bucket()) {
        (false, bucket) if bucket > 0 => longer_texts(pipeline, bucket, EXTRA_WIDTHS)?,
        _ => Vec::new(),
    };
    let widths = 1 + longer.len();
    let e = engine.clone();
    tokio::task::spawn_blocking(move || {
        for text in longer {
            e.warmup(&pair_with(text), &graphed)?;
        }
        // Last: it seeds the admission estimate with the largest batch's time.
        e.warmup(&pair(), &sizes)
    })
    .await?
    .context("warm-up failed")?;
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        text_widths = widths,
        "warmed_up"
    );
    Ok(())
}

/// Text widths past the warm-up pair's recorded at start: with 16-id buckets, sources of up to
/// 48 ids (a sentence of up to ~40 tokens) then meet recorded graphs.
const EXTRA_WIDTHS: usize = 2;

/// Sentences whose sources pad to each of the `n` widths after the warm-up pair's.
fn longer_texts(pipeline: &Entailment, bucket: usize, n: usize) -> Result<Vec<String>> {
    let len = |text: &str| -> Result<usize> { Ok(pipeline.encode_text(text, None)?.len()) };
    let base = len(&pair().text)?.div_ceil(bucket) * bucket;
    let mut text = pair().text.trim_end_matches('.').to_owned();
    let mut out = Vec::new();
    for width in (1..=n).map(|k| base + k * bucket) {
        while len(&text)? <= width - bucket {
            text.push_str(" and a dog");
        }
        if len(&text)? <= width {
            out.push(format!("{text}."));
        }
    }
    Ok(out)
}

/// Without a warm-up (`WARMUP=false`) the engine still gets the pair as its breaker's probe.
pub fn probe_only(engine: &Engine) -> Result<()> {
    engine
        .set_probe(&pair())
        .context("preparing the breaker's probe pair")
}

/// A small photo-like PNG and a plain sentence.
fn pair() -> Pair {
    pair_with("a photo.".into())
}

fn pair_with(text: String) -> Pair {
    Pair {
        image: image().into(),
        text,
        premise: None,
        cache_scope: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use ofa_model::internal::preprocess::padding::padded_width;

    #[test]
    fn the_longer_warm_up_texts_fill_the_next_text_widths() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny_ofa_ve");
        let pipeline = Entailment::load(dir, &Device::Cpu).unwrap();
        let width = |text: &str| {
            let n = pipeline.encode_text(text, None).unwrap().len();
            padded_width(n, 16, 1024)
        };
        assert_eq!(width(&pair().text), 16);
        let texts = longer_texts(&pipeline, 16, 2).unwrap();
        let widths: Vec<usize> = texts.iter().map(|t| width(t)).collect();
        assert_eq!(widths, [32, 48], "{texts:?}");
        assert!(texts.iter().all(|t| t.starts_with("a photo and a dog")));
    }
}
