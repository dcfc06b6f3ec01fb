//! Admission: how many pairs may wait, whether a new request could still meet its deadline,
//! and the one estimate of a forward pass's time that both questions use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{EngineError, EngineMetrics};

/// A place in the queue for one pair, from admission until the inference thread takes the
/// pair (or the pair fails before that). Dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Slot(Arc<EngineMetrics>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.queue_depth.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub(crate) struct Admission {
    capacity: usize,
    max_batch: usize,
    metrics: Arc<EngineMetrics>,
    /// Moving average of one forward pass, seconds (f64 bits); 0 = no estimate yet.
    per_batch: AtomicU64,
}

impl Admission {
    pub fn new(capacity: usize, max_batch: usize, metrics: Arc<EngineMetrics>) -> Self {
        Self {
            capacity: capacity.max(1),
            max_batch: max_batch.max(1),
            metrics,
            per_batch: AtomicU64::new(0),
        }
    }

    pub fn waiting(&self) -> usize {
        self.metrics.queue_depth.load(Ordering::Acquire).max(0) as usize
    }

    /// Places for `n` pairs, all or none.
    pub fn admit(&self, n: usize, deadline: Instant) -> Result<Vec<Slot>, EngineError> {
        if n > self.capacity {
            return Err(EngineError::BatchTooLarge {
                items: n,
                capacity: self.capacity,
            });
        }
        // Refuse now what could only time out in the queue: a 429 the client can act on beats
        // a 504 after waiting. With nothing waiting it is always admitted: the estimate may be
        // stale, and running a batch is what refreshes it.
        let waiting = self.waiting();
        if waiting > 0 {
            if let Some(wait) = self.expected_wait(waiting) {
                if Instant::now() + wait > deadline {
                    return Err(EngineError::QueueFull {
                        capacity: self.capacity,
                        retry_after: wait,
                    });
                }
            }
        }
        let depth = &self.metrics.queue_depth;
        let mut current = depth.load(Ordering::Acquire);
        loop {
            if current.max(0) as usize + n > self.capacity {
                return Err(EngineError::QueueFull {
                    capacity: self.capacity,
                    retry_after: self.retry_hint(),
                });
            }
            match depth.compare_exchange(
                current,
                current + n as i64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        Ok((0..n).map(|_| Slot(self.metrics.clone())).collect())
    }

    /// Expected time until a request arriving behind `waiting` pairs has its answer: the
    /// batches ahead of it plus its own, the one running now on average half done.
    fn expected_wait(&self, waiting: usize) -> Option<Duration> {
        let per_batch = self.per_batch()?;
        let ahead = waiting.div_ceil(self.max_batch) as f64;
        Some(Duration::from_secs_f64(per_batch * (ahead + 1.5)))
    }

    /// Expected time until `pairs` more pairs, behind those waiting now, have their answers.
    pub fn expected_time(&self, pairs: usize) -> Option<Duration> {
        let per_batch = self.per_batch()?;
        let batches = (self.waiting() + pairs).div_ceil(self.max_batch) as f64;
        Some(Duration::from_secs_f64(per_batch * (batches + 0.5)))
    }

    /// Roughly how long a full queue takes to drain.
    fn retry_hint(&self) -> Duration {
        let per_batch = self.per_batch().unwrap_or(0.0);
        let batches = self.capacity.div_ceil(self.max_batch) as f64;
        Duration::from_secs_f64((per_batch * batches).clamp(1.0, 60.0))
    }

    fn per_batch(&self) -> Option<f64> {
        let v = f64::from_bits(self.per_batch.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    /// Seeds the estimate (warm-up) before any real batch was timed.
    pub fn seed(&self, seconds: f64) {
        self.per_batch.store(seconds.to_bits(), Ordering::Relaxed);
    }

    /// Folds one timed forward pass into the estimate.
    pub fn observe_batch(&self, seconds: f64) {
        let avg = self
            .per_batch()
            .map_or(seconds, |a| 0.7 * a + 0.3 * seconds);
        self.seed(avg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(capacity: usize) -> Admission {
        Admission::new(capacity, 2, Arc::new(EngineMetrics::default()))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn places_are_taken_all_or_none_and_given_back_on_drop() {
        let a = admission(4);
        let three = a.admit(3, later()).unwrap();
        assert_eq!(a.waiting(), 3);
        assert!(matches!(
            a.admit(2, later()),
            Err(EngineError::QueueFull { .. })
        ));
        assert_eq!(a.waiting(), 3, "a refused request holds nothing");
        let one = a.admit(1, later()).unwrap();
        assert_eq!(a.waiting(), 4);
        drop(three);
        drop(one);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn more_than_the_queue_can_never_be_admitted() {
        let a = admission(4);
        match a.admit(5, later()) {
            Err(EngineError::BatchTooLarge { items, capacity }) => {
                assert_eq!((items, capacity), (5, 4))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_that_could_only_time_out_is_refused_with_the_expected_wait() {
        let a = admission(100);
        a.seed(1.0);
        let _ahead = a.admit(4, later()).unwrap();
        // 4 waiting = 2 batches ahead, + 1.5 for the running one and its own: 3.5 s.
        match a.admit(1, Instant::now() + Duration::from_secs(2)) {
            Err(EngineError::QueueFull { retry_after, .. }) => {
                assert!(
                    (retry_after.as_secs_f64() - 3.5).abs() < 1e-9,
                    "{retry_after:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(a.admit(1, Instant::now() + Duration::from_secs(4)).is_ok());
    }

    #[test]
    fn with_nothing_waiting_a_stale_estimate_never_refuses() {
        let a = admission(10);
        a.seed(100.0);
        assert!(a
            .admit(1, Instant::now() + Duration::from_millis(1))
            .is_ok());
    }

    #[test]
    fn the_estimate_is_a_moving_average() {
        let a = admission(10);
        a.observe_batch(1.0);
        a.observe_batch(2.0);
        assert!((a.per_batch().unwrap() - 1.3).abs() < 1e-9);
    }
}
