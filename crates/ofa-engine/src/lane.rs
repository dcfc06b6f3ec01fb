//! One image's share of a request: decoded once on the bounded pool within the memory budget,
//! then each of its pairs queued for the inference thread and answered by the deadline.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ofa_api::panic::panic_message;
use ofa_api::Prepared;
use tokio::sync::{oneshot, Semaphore};

use crate::admission::Slot;
use crate::inference_thread::Job;
use crate::{Backend, EngineError, Scored};

/// The pairs of one request that carry the same image.
pub(crate) struct Group {
    pub(crate) image: Bytes,
    pub(crate) cache_scope: u64,
    pub(crate) members: Vec<Member>,
}

pub(crate) struct Member {
    pub(crate) index: usize,
    pub(crate) text: String,
    pub(crate) premise: Option<String>,
    pub(crate) slot: Slot,
}

/// What one pair's task needs, cloned out of the engine so the task may outlive the borrow.
/// The last few images decoded, known by the identity of the caller's buffer (a `Bytes`
/// cloned, not copied): a caller that sends one image in several calls (a long rerank, chunk
/// by chunk) has it decoded once, and its pairs keep one pixel buffer, whose ResNet features
/// the model then computes once too. Holding the caller's `Bytes` keeps its address from being
/// reused; a few images at most are kept.
#[derive(Default)]
pub(crate) struct Decoded(std::sync::Mutex<Vec<DecodedImage>>);

/// The caller's buffer, the pixel bound it was decoded under, and the pixels.
type DecodedImage = (Bytes, u64, Arc<[u8]>);

/// Images remembered by [`Decoded`].
const DECODED: usize = 4;

impl Decoded {
    fn get(&self, image: &Bytes, max_pixels: u64) -> Option<Arc<[u8]>> {
        let entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|(b, m, _)| {
                b.as_ptr() == image.as_ptr() && b.len() == image.len() && *m == max_pixels
            })
            .map(|(_, _, p)| p.clone())
    }

    fn insert(&self, image: Bytes, max_pixels: u64, pixels: Arc<[u8]>) {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= DECODED {
            entries.remove(0);
        }
        entries.push((image, max_pixels, pixels));
    }
}

#[derive(Clone)]
pub(crate) struct Lane {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) preprocess: Arc<Semaphore>,
    pub(crate) memory: Arc<Semaphore>,
    pub(crate) decoded: Arc<Decoded>,
    pub(crate) memory_budget: u64,
    pub(crate) sender: mpsc::Sender<Job>,
    pub(crate) max_image_pixels: u64,
}

impl Lane {
    pub(crate) async fn run(
        self,
        group: Group,
        admitted: Instant,
        deadline: Instant,
    ) -> Vec<(usize, Result<Scored, EngineError>)> {
        let Group {
            image,
            cache_scope,
            members,
        } = group;
        let known = self.decoded.get(&image, self.max_image_pixels);
        let pixels = match known {
            Some(p) => Ok(p),
            None => match tokio::time::timeout_at(
                deadline.into(),
                self.prepare(image.clone(), deadline),
            )
            .await
            {
                Ok(Ok(p)) if Instant::now() < deadline => {
                    self.decoded.insert(image, self.max_image_pixels, p.clone());
                    Ok(p)
                }
                Ok(Ok(_)) | Err(_) => Err(EngineError::DeadlineExceeded),
                Ok(Err(e)) => Err(e),
            },
        };
        let mut waiting = Vec::with_capacity(members.len());
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let pixels = match &pixels {
                Ok(p) => p.clone(),
                Err(e) => {
                    out.push((m.index, Err(e.replicate())));
                    continue;
                }
            };
            let source = match self.backend.encode_text(&m.text, m.premise.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    out.push((m.index, Err(e.into())));
                    continue;
                }
            };
            let (reply, rx) = oneshot::channel();
            let job = Job {
                prepared: Prepared {
                    source,
                    pixels,
                    cache_scope,
                },
                deadline,
                admitted,
                preprocessed: Instant::now(),
                slot: Some(m.slot),
                reply,
            };
            if self.sender.send(job).is_err() {
                out.push((m.index, Err(EngineError::ShuttingDown)));
                continue;
            }
            waiting.push((m.index, rx));
        }
        drop(self.sender);
        for (index, rx) in waiting {
            let result = match tokio::time::timeout_at(deadline.into(), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(EngineError::ModelFailure(
                    "the inference thread stopped".into(),
                )),
                Err(_) => Err(EngineError::DeadlineExceeded),
            };
            out.push((index, result));
        }
        out
    }

    /// Decodes on the bounded pool, within the memory budget: the image's estimated share is
    /// taken before decoding, and both permits stay with the work even if the waiter gives up.
    async fn prepare(&self, image: Bytes, deadline: Instant) -> Result<Arc<[u8]>, EngineError> {
        let cost = self
            .backend
            .preprocess_cost(&image, self.max_image_pixels)?;
        if cost > self.memory_budget {
            return Err(EngineError::Input(ofa_api::BackendError::ImageTooCostly(format!(
                "preprocessing it needs about {} MB, more than the preprocessing memory budget of {} MB",
                cost.div_ceil(MB),
                self.memory_budget / MB
            ))));
        }
        let memory = self
            .memory
            .clone()
            .acquire_many_owned(memory_units(cost))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let permit = self
            .preprocess
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        if Instant::now() >= deadline {
            return Err(EngineError::DeadlineExceeded);
        }
        let backend = self.backend.clone();
        let max_pixels = self.max_image_pixels;
        let joined = tokio::task::spawn_blocking(move || {
            let _permits = (permit, memory);
            backend.prepare_image(&image, max_pixels)
        })
        .await;
        match joined {
            Ok(result) => Ok(result?),
            Err(e) if e.is_panic() => Err(EngineError::Internal(panic_message(&*e.into_panic()))),
            Err(e) => Err(EngineError::Internal(e.to_string())),
        }
    }
}

pub(crate) const MB: u64 = 1 << 20;

/// The memory semaphore counts whole megabytes (at least one per pair).
pub(crate) fn memory_units(bytes: u64) -> u32 {
    bytes.div_ceil(MB).clamp(1, u64::from(u32::MAX >> 4)) as u32
}
