//! Delays between retries: exponential, with jitter so that the many pods a hub outage stopped
//! do not all come back in the same instant, and capped (`MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// `first`, then doubling, each with up to as much again at random, never over `max`.
pub(crate) fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(first.min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_spread_and_stay_under_the_cap() {
        let d: Vec<Duration> = delays(Duration::from_secs(2), Duration::from_secs(60))
            .take(8)
            .collect();
        assert!(
            d[0] >= Duration::from_secs(2) && d[0] <= Duration::from_secs(4),
            "{d:?}"
        );
        assert!(d[2] >= Duration::from_secs(8), "{d:?}");
        assert!(d.iter().all(|x| *x <= Duration::from_secs(120)), "{d:?}");
        let again: Vec<Duration> = delays(Duration::from_secs(2), Duration::from_secs(60))
            .take(8)
            .collect();
        assert_ne!(d, again, "jittered");
    }
}
