//! Where a request's time went: the timing headers and log fields (fetching its image URLs,
//! the slowest pair's queue wait and forward pass) and the stages its trace shows.

use std::time::{Duration, Instant};

use ofa_engine::Scored;

/// Where an answered pair's time went; handlers put it on the response for the log line.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Fetching the images a request named by URL (zero when it named none).
    pub fetch: Duration,
    pub queue: Duration,
    pub inference: Duration,
    /// For the request's trace.
    pub stages: Option<Stages>,
}

impl Timings {
    /// The longest queue and inference times among a request's pairs, and their stages.
    pub fn slowest<'a>(scored: impl IntoIterator<Item = &'a Scored>) -> Timings {
        let mut t = Timings {
            fetch: Duration::ZERO,
            queue: Duration::ZERO,
            inference: Duration::ZERO,
            stages: None,
        };
        for s in scored {
            t.queue = t.queue.max(s.queue_time);
            t.inference = t.inference.max(s.inference_time);
            let batch = Batch {
                id: s.batch_id,
                size: s.batch_size,
                started: s.started,
                duration: s.inference_time,
            };
            let st = t.stages.get_or_insert_with(|| Stages {
                admitted: s.admitted,
                preprocessed: s.preprocessed,
                started: s.started,
                batches: Vec::new(),
            });
            st.admitted = st.admitted.min(s.admitted);
            st.preprocessed = st.preprocessed.max(s.preprocessed);
            st.started = st.started.max(s.started);
            if !st.batches.iter().any(|b| b.id == batch.id) {
                st.batches.push(batch);
            }
        }
        t
    }
}

/// Where a request's pairs spent their time, for its stage spans.
#[derive(Debug, Clone)]
pub struct Stages {
    /// The first pair admitted to the engine (parsing is over).
    pub admitted: Instant,
    /// The last pair preprocessed.
    pub preprocessed: Instant,
    /// The last pair started in a batch.
    pub started: Instant,
    pub batches: Vec<Batch>,
}

/// A forward pass a request's pairs ran in.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: u64,
    pub size: usize,
    pub started: Instant,
    pub duration: Duration,
}
