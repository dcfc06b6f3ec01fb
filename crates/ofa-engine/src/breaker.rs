//! Circuit breaker over model failures: closed → open after N consecutive failed batches →
//! half-open after the cool-down (one probe admitted) → closed on success, open on failure.
//! Probes that fail one after another are counted: past a bound the model is judged broken for
//! good in this process (a GPU whose context an error poisoned recovers only in a new one), and
//! the engine reports itself failing so that an orchestrator restarts it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// A change of the breaker's state, for the front ends to log.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerEvent {
    /// Opened by the model's failure `error`: closed, after `threshold` failed batches in a
    /// row; half-open, by a failed probe (`failed_probes` in a row so far).
    Opened {
        error: String,
        cooldown: Duration,
        failed_probes: u32,
    },
    /// Closed again by a batch (a request's or the breaker's own probe) that succeeded.
    Closed,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// When the probe was let through; a probe that never reports back (refused by the queue,
    /// expired) is replaced after one more cool-down.
    HalfOpen {
        probe_at: Option<Instant>,
    },
}

#[derive(Debug)]
struct Status {
    inner: Inner,
    /// Probes failed since the last success.
    failed_probes: u32,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    /// Failed probes in a row that make the breaker give up (0: never).
    give_up: u32,
    status: Mutex<Status>,
    events: broadcast::Sender<BreakerEvent>,
}

impl Breaker {
    /// `give_up`: failed probes in a row after which [`Breaker::given_up`] says so (0: never).
    pub fn new(threshold: u32, cooldown: Duration, give_up: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            give_up,
            status: Mutex::new(Status {
                inner: Inner::Closed { failures: 0 },
                failed_probes: 0,
            }),
            // Transitions are rare; a subscriber that falls this far behind skips the oldest.
            events: broadcast::channel(16).0,
        }
    }

    /// The breaker's transitions from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a new request may enter; when not, how long until it may.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut status = self.lock();
        let inner = &mut status.inner;
        match *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } => {
                let now = Instant::now();
                if now < until {
                    Err(until - now)
                } else {
                    *inner = Inner::HalfOpen {
                        probe_at: Some(now),
                    };
                    Ok(())
                }
            }
            Inner::HalfOpen { probe_at } => match probe_at {
                Some(t) if t.elapsed() < self.cooldown => Err(Duration::from_secs(1)),
                _ => {
                    *inner = Inner::HalfOpen {
                        probe_at: Some(Instant::now()),
                    };
                    Ok(())
                }
            },
        }
    }

    pub fn on_success(&self) {
        let was = std::mem::replace(
            &mut *self.lock(),
            Status {
                inner: Inner::Closed { failures: 0 },
                failed_probes: 0,
            },
        );
        if !matches!(was.inner, Inner::Closed { .. }) {
            let _ = self.events.send(BreakerEvent::Closed);
        }
    }

    /// A batch failed with `error`.
    pub fn on_failure(&self, error: &str) {
        let mut status = self.lock();
        let open = Inner::Open {
            until: Instant::now() + self.cooldown,
        };
        if matches!(status.inner, Inner::HalfOpen { .. }) {
            status.failed_probes = status.failed_probes.saturating_add(1);
        }
        let was_open = matches!(status.inner, Inner::Open { .. });
        status.inner = match status.inner {
            Inner::Closed { failures } if failures + 1 < self.threshold => Inner::Closed {
                failures: failures + 1,
            },
            _ => open,
        };
        // A batch that was already running when the breaker opened is not announced again.
        if !was_open && matches!(status.inner, Inner::Open { .. }) {
            let _ = self.events.send(BreakerEvent::Opened {
                error: error.to_owned(),
                cooldown: self.cooldown,
                failed_probes: status.failed_probes,
            });
        }
    }

    /// How long until a probe may run, while the breaker is not closed (`None` when it is).
    pub fn probe_in(&self) -> Option<Duration> {
        let now = Instant::now();
        match self.lock().inner {
            Inner::Closed { .. } => None,
            Inner::Open { until } => Some(until.saturating_duration_since(now)),
            Inner::HalfOpen { probe_at: None } => Some(Duration::ZERO),
            // The probe let through may never report back: another after a cool-down.
            Inner::HalfOpen { probe_at: Some(t) } => Some(
                self.cooldown
                    .saturating_sub(now.saturating_duration_since(t)),
            ),
        }
    }

    /// Probes failed in a row since the last success.
    pub fn failed_probes(&self) -> u32 {
        self.lock().failed_probes
    }

    /// Whether so many probes in a row failed that the model should be taken for broken.
    pub fn given_up(&self) -> bool {
        self.give_up > 0 && self.failed_probes() >= self.give_up
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < until => BreakerState::Open,
            // Cool-down over: the next request will be the probe.
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes() {
        let b = Breaker::new(3, Duration::from_millis(50), 0);
        b.on_failure("boom");
        b.on_failure("boom");
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure("boom");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_ok(), "one probe");
        assert!(b.admit().is_err(), "only one probe");
        b.on_failure("boom");
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok());
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60), 0);
        b.on_failure("boom");
        b.on_success();
        b.on_failure("boom");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_probes_in_a_row_give_up_and_a_success_takes_it_back() {
        let b = Breaker::new(1, Duration::from_millis(20), 2);
        assert_eq!(b.probe_in(), None, "closed: nothing to probe");
        b.on_failure("boom");
        assert!(
            b.probe_in().unwrap() > Duration::ZERO,
            "open: probe after the cool-down"
        );
        // A late failure while open is not a probe.
        b.on_failure("boom");
        assert_eq!(b.failed_probes(), 0);
        for n in 1..=2 {
            std::thread::sleep(Duration::from_millis(25));
            assert_eq!(b.probe_in(), Some(Duration::ZERO));
            assert!(b.admit().is_ok(), "the probe");
            assert!(
                b.probe_in().unwrap() > Duration::ZERO,
                "one probe at a time"
            );
            b.on_failure("boom");
            assert_eq!(b.failed_probes(), n);
            assert_eq!(b.given_up(), n == 2, "after {n} failed probes");
        }
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.admit().is_ok());
        b.on_success();
        assert!(!b.given_up());
        assert_eq!(b.failed_probes(), 0);
        assert_eq!(b.state(), BreakerState::Closed);
        // 0: never gives up.
        let never = Breaker::new(1, Duration::ZERO, 0);
        for _ in 0..5 {
            never.on_failure("boom");
            assert!(never.admit().is_ok());
            never.on_failure("boom");
        }
        assert_eq!(never.failed_probes(), 5);
        assert!(!never.given_up());
    }

    #[test]
    fn transitions_are_announced_once_each() {
        let b = Breaker::new(2, Duration::from_millis(20), 0);
        let mut events = b.subscribe();
        b.on_failure("first");
        b.on_success();
        b.on_failure("again");
        b.on_failure("for the second time");
        // Late: the breaker is already open.
        b.on_failure("late");
        let opened = |error: &str, failed_probes| BreakerEvent::Opened {
            error: error.into(),
            cooldown: Duration::from_millis(20),
            failed_probes,
        };
        assert_eq!(events.try_recv().unwrap(), opened("for the second time", 0));
        assert!(
            events.try_recv().is_err(),
            "nothing else: {:?}",
            events.try_recv()
        );
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.admit().is_ok(), "the probe");
        b.on_failure("the probe failed");
        assert_eq!(events.try_recv().unwrap(), opened("the probe failed", 1));
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.admit().is_ok());
        b.on_success();
        b.on_success();
        assert_eq!(events.try_recv().unwrap(), BreakerEvent::Closed);
        assert!(events.try_recv().is_err(), "closed once");
    }
}
