//! Each image's ResNet features computed once: pairs sharing an image within a batch, and
//! (with the feature cache) across batches. Scores stay bit-identical to computing from scratch.

mod common;

use std::sync::Arc;

use candle_core::Device;
use common::*;
use ofa_model::{Entailment, Prepared};

const TEXTS: [&str; 4] = [
    "a woman in a military uniform.",
    "a man.",
    "two dogs play in the snow.",
    "a person wearing a hat.",
];

fn pairs(m: &Entailment, pixels: impl Fn() -> Arc<[u8]>) -> Vec<Prepared> {
    TEXTS
        .iter()
        .map(|t| Prepared {
            source: m.encode_text(t, None).unwrap(),
            pixels: pixels(),
            cache_scope: 0,
        })
        .collect()
}

fn grace_pixels(m: &Entailment) -> Vec<u8> {
    let bytes = std::fs::read(golden().join("images/grace_hopper.jpg")).unwrap();
    m.preprocess_image(&bytes, u64::MAX).unwrap()
}

#[test]
fn a_shared_image_runs_the_resnet_once_with_bit_identical_scores() {
    let m = tiny();
    let px = grace_pixels(m);
    let shared: Arc<[u8]> = px.clone().into();
    let once = pairs(m, || shared.clone());
    let apart = pairs(m, || px.clone().into());
    let (a, ra) = m.score_batch(&once.iter().collect::<Vec<_>>()).unwrap();
    let (b, rb) = m.score_batch(&apart.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!((ra.images, rb.images), (1, 4));
    assert_eq!(a, b, "bit-identical");
    // And each equals its pair scored alone, within the batching tolerance.
    for (p, s) in apart.iter().zip(&a) {
        let (alone, _) = m.score_batch(&[p]).unwrap();
        for k in 0..3 {
            assert!((alone[0].probs[k] - s.probs[k]).abs() < 1e-5);
        }
    }
}

#[test]
fn the_feature_cache_serves_later_batches_bit_identically() {
    let cached = Entailment::load(tiny_dir(), &Device::Cpu)
        .unwrap()
        .with_image_cache(64 << 20);
    let plain = tiny();
    let px = grace_pixels(plain);
    let fresh = pairs(plain, || px.clone().into());
    let want = plain
        .score_batch(&fresh.iter().collect::<Vec<_>>())
        .unwrap()
        .0;

    // Equal pixels in separate buffers: one ResNet run, then cache hits.
    let (first, r1) = cached
        .score_batch(&fresh.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!((r1.images, r1.cache_hits), (1, 0));
    assert!(r1.cache_bytes > 0);
    let again = pairs(&cached, || px.clone().into());
    let (second, r2) = cached
        .score_batch(&again.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!((r2.images, r2.cache_hits), (1, 1));
    assert_eq!(first, want, "bit-identical to no cache");
    assert_eq!(second, want, "bit-identical from the cache");

    // A different image is a miss; a one-byte change is a different image.
    let mut other = px.clone();
    other[0] ^= 1;
    let changed = [Prepared {
        source: cached.encode_text(TEXTS[0], None).unwrap(),
        pixels: other.into(),
        cache_scope: 0,
    }];
    let (_, r3) = cached
        .score_batch(&changed.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!((r3.images, r3.cache_hits), (1, 0));
}

/// Without the cache, a pixel buffer the model has just seen (one request's image, shared by
/// its pairs in consecutive batches) is not run through the ResNet again; an equal buffer
/// elsewhere is, as nothing is hashed.
#[test]
fn without_the_cache_a_buffer_seen_in_the_last_batch_keeps_its_features() {
    let plain = Entailment::load(tiny_dir(), &Device::Cpu)
        .unwrap()
        .with_feature_reuse(true);
    let px = grace_pixels(&plain);
    let shared: Arc<[u8]> = px.clone().into();
    let batch = pairs(&plain, || shared.clone());
    let (first, r1) = plain
        .score_batch(&batch.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!((r1.images, r1.cache_hits), (1, 0));
    let (second, r2) = plain
        .score_batch(&batch.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!((r2.images, r2.cache_hits), (1, 1));
    assert_eq!(first, second, "bit-identical");
    let copy = pairs(&plain, || px.clone().into());
    let (third, r3) = plain.score_batch(&copy.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        (r3.images, r3.cache_hits),
        (batch.len(), 0),
        "a buffer of its own for each pair, none seen before"
    );
    assert_eq!(third, first);
    // Off (the default, as a benchmark scores one batch again and again): every batch runs it.
    let bench = tiny();
    for _ in 0..2 {
        let (_, r) = bench
            .score_batch(&batch.iter().collect::<Vec<_>>())
            .unwrap();
        assert_eq!((r.images, r.cache_hits), (1, 0));
    }
}
