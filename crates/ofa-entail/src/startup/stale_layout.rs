//! A stale engine layout met at start (made from other weights, or by a build that transforms
//! otherwise) is never used; it is rewritten before the model loads, so this start and every
//! later one run the layout as it is instead of transforming the checkpoint each time. Where
//! the directory cannot be written (a read-only volume), the checkpoint is transformed at load
//! as before, and the init container's `download --engine-layout` is the place to rebuild it.

use std::path::Path;

use ofa_model::{Device, Precision};

use crate::conversion::{self, Written};

/// What a start did about a stale layout.
pub enum Rebuild {
    /// Rewritten by this start.
    Done(Written),
    /// Another process rewrote it while this one waited for the directory's lock.
    ByAnother,
    /// Left as it was: the checkpoint is loaded instead.
    Failed(anyhow::Error),
}

/// `None` when the layout this start would read is absent or current; otherwise why it is
/// stale and what became of it.
pub fn rebuild(dir: &Path, device: &Device, precision: Precision) -> Option<(String, Rebuild)> {
    let why = conversion::stale_layout(dir, device, precision)?;
    let outcome = match conversion::layout_if_needed(dir, precision) {
        Ok(Some(written)) => Rebuild::Done(written),
        Ok(None) => Rebuild::ByAnother,
        Err(e) => Rebuild::Failed(e),
    };
    Some((why, outcome))
}
