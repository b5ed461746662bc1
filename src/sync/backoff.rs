//! Exponential backoff with jitter for `sync --watch`: after each failure the wait doubles, up
//! to a cap, and is spread over its upper half so that many bridges restarted together do not
//! hit a recovering API in step ("equal jitter").

use std::time::Duration;

use rand::Rng;

/// The backoff state of one retry loop.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never waiting longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The default of `sync`: 500 ms doubling up to 30 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// Records a failure and returns how long to wait before the next attempt: a random
    /// duration in `[d/2, d]` where `d = min(cap, base * 2^(failures-1))`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(3);
        let mut b = Backoff::new(base, cap);
        let mut ceiling = base;
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(cap);
        }
        assert_eq!(b.failures(), 40);
        assert!(b.next_delay() <= cap);
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            b.next_delay();
            b.next_delay();
            seen.insert(b.next_delay().as_millis());
        }
        assert!(seen.len() > 10, "50 waits took only {} values", seen.len());
    }

    #[test]
    fn a_long_outage_does_not_overflow() {
        let mut b = Backoff::standard();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
