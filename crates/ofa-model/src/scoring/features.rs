//! A batch's ResNet features: each distinct image once, and what earlier batches computed
//! reused (the cache by content, or without it the recent buffers by identity).

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::Result;
use crate::scoring::feature_cache;
use crate::scoring::pipeline::Entailment;
use ofa_api::{BatchReport, Prepared};

impl Entailment {
    /// ResNet features `[B, C, H, W]` of the batch, computed once per distinct image (one
    /// pixel buffer shared by several pairs, or with the cache on, equal pixels) or taken from
    /// the cache, and laid out in batch order.
    pub(super) fn batch_features(
        &self,
        batch: &[&Prepared],
        report: &mut BatchReport,
    ) -> Result<Tensor> {
        let mut cache = self
            .image_cache
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()));
        let pixels: Vec<(&Arc<[u8]>, u64)> =
            batch.iter().map(|p| (&p.pixels, p.cache_scope)).collect();
        let (firsts, which) = feature_cache::distinct(&pixels, cache.is_some());
        let distinct: Vec<(&Prepared, Option<feature_cache::Key>)> =
            firsts.into_iter().map(|(b, k)| (batch[b], k)).collect();
        report.images = distinct.len();
        let mut recent = match (&cache, &self.recent) {
            (None, Some(r)) => Some(r.lock().unwrap_or_else(|p| p.into_inner())),
            _ => None,
        };
        // Features kept from earlier batches: the cache's (by content) or, without it, the
        // recent buffers' (by identity); none when neither is on.
        let mut found: Vec<Option<Tensor>> = distinct
            .iter()
            .map(|(p, k)| match (cache.as_mut(), recent.as_mut()) {
                (Some(c), _) => k.and_then(|k| c.get(&k)),
                (None, Some(r)) => r.get(&p.pixels, p.cache_scope),
                (None, None) => None,
            })
            .collect();
        let missing: Vec<usize> = (0..distinct.len())
            .filter(|&i| found[i].is_none())
            .collect();
        report.cache_hits = distinct.len() - missing.len();
        let mut computed = None;
        if !missing.is_empty() {
            let run: Vec<&Prepared> = missing.iter().map(|&i| distinct[i].0).collect();
            let features = self.model.image_features(&self.image_tensor(&run)?)?;
            if cache.is_some() || recent.is_some() {
                for (j, &i) in missing.iter().enumerate() {
                    let one = features.get(j)?;
                    match (cache.as_mut(), recent.as_mut(), distinct[i].1) {
                        (Some(c), _, Some(k)) => c.insert(k, one.clone()),
                        (None, Some(r), _) => {
                            r.insert(&distinct[i].0.pixels, distinct[i].0.cache_scope, &one)
                        }
                        _ => {}
                    }
                    found[i] = Some(one);
                }
            }
            computed = Some(features);
        }
        if let Some(c) = &cache {
            report.cache_bytes = c.bytes();
        }
        let features = match computed {
            // Every image ran, in batch order: the pass's own output.
            Some(features) if missing.len() == distinct.len() => features,
            _ => {
                let parts: Vec<Tensor> = found
                    .into_iter()
                    .map(|t| t.expect("every image found or computed"))
                    .collect();
                Tensor::stack(&parts, 0)?
            }
        };
        if which.iter().enumerate().all(|(b, &i)| b as u32 == i) {
            return Ok(features);
        }
        let which = Tensor::new(which.as_slice(), self.model.device())?;
        Ok(features.index_select(&which, 0)?)
    }
}
