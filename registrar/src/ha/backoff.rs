//! Reconnection back-off: exponential, capped, with "equal jitter" (half fixed, half random) so
//! that many nodes losing the same Redis do not reconnect in step. The randomness comes from a
//! seeded SplitMix64, so a simulation replays exactly.

use std::time::{Duration, Instant};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, full-period, good enough for jitter.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The back-off of one target (a sentinel, a server address).
#[derive(Debug, Clone, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure and returns when the next attempt may start.
    pub(super) fn fail(
        &mut self,
        now: Instant,
        min: Duration,
        max: Duration,
        rng: &mut SplitMix64,
    ) -> Instant {
        let shift = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let full = min.saturating_mul(1 << shift).min(max);
        let half = full / 2;
        let half_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(rng.next_u64() % half_ns.max(1));
        now + half + jitter
    }

    pub(super) fn succeed(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let now = Instant::now();
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut rng = SplitMix64::new(7);
        let mut b = Backoff::default();
        let mut fulls = Vec::new();
        for _ in 0..8 {
            let d = b.fail(now, min, max, &mut rng) - now;
            fulls.push(d);
        }
        let expected_full = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, full) in fulls.iter().zip(expected_full) {
            let full = Duration::from_millis(full);
            assert!(
                *d >= full / 2 && *d < full,
                "{d:?} outside [{:?}, {full:?})",
                full / 2
            );
        }
        b.succeed();
        let d = b.fail(now, min, max, &mut rng) - now;
        assert!(d < min, "success resets the back-off");
    }

    #[test]
    fn same_seed_same_delays() {
        let now = Instant::now();
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            let mut b = Backoff::default();
            (0..5)
                .map(|_| {
                    b.fail(
                        now,
                        Duration::from_millis(10),
                        Duration::from_secs(1),
                        &mut rng,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
