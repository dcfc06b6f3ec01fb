//! The position rows' projections are computed once and reused across passes (growing with the
//! longest text seen): a model that has already scored other texts answers bit-identically to a
//! fresh one.

mod common;

use std::sync::Arc;

use candle_core::Device;
use common::*;
use ofa_model::{Entailment, Prepared};

const TEXTS: [&str; 4] = [
    "two dogs play in the snow.",
    "a man.",
    // Over 32 tokens: past the rows first kept.
    "a woman in a military uniform stands in front of a flag with medals on her jacket and looks at the camera while two soldiers wait behind her in a long corridor.",
    "a person wearing a hat.",
];

fn pair(m: &Entailment, text: &str, pixels: &Arc<[u8]>) -> Prepared {
    Prepared {
        source: m.encode_text(text, None).unwrap(),
        pixels: pixels.clone(),
        cache_scope: 0,
    }
}

#[test]
fn reused_position_rows_score_bit_identically() {
    let bytes = std::fs::read(golden().join("images/grace_hopper.jpg")).unwrap();
    let warm = Entailment::load(tiny_dir(), &Device::Cpu).unwrap();
    let pixels: Arc<[u8]> = warm.preprocess_image(&bytes, u64::MAX).unwrap().into();
    // Lengths that shrink, grow past the rows kept so far, and batch together.
    assert!(warm.encode_text(TEXTS[2], None).unwrap().len() > 32);
    for text in TEXTS {
        let fresh = Entailment::load(tiny_dir(), &Device::Cpu).unwrap();
        let want = fresh
            .score_batch(&[&pair(&fresh, text, &pixels)])
            .unwrap()
            .0;
        let got = warm.score_batch(&[&pair(&warm, text, &pixels)]).unwrap().0;
        assert_eq!(got, want, "{text:?}");
    }
    let fresh = Entailment::load(tiny_dir(), &Device::Cpu).unwrap();
    let batch = |m: &Entailment| {
        let pairs: Vec<Prepared> = TEXTS.iter().map(|t| pair(m, t, &pixels)).collect();
        m.score_batch(&pairs.iter().collect::<Vec<_>>()).unwrap().0
    };
    assert_eq!(batch(&warm), batch(&fresh), "a batch");
}
