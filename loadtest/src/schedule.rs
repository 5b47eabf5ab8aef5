//! The open-loop schedule: request `j` (counting from 0 over the whole run) is due at
//! `start + j / rate`, whatever happened to the requests before it. Latency is measured from that
//! intended time (as wrk2 does), so a server that stalls shows the stall in the percentiles
//! instead of slowing the generator down.
//!
//! Pure: no clock. Times are nanoseconds since the run's start. The arithmetic is integer
//! (the rate is held in thousandths of a request per second), so `intended` is exact and does not
//! drift over long runs.

use std::time::Duration;

const NANOS_PER_S: u128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Requests per second after the ramp, in thousandths (so 0.5/s and 123456.789/s are exact).
    rate_milli: u64,
    /// A linear ramp from `from` to the rate over `secs` seconds at the start, if any.
    ramp: Option<Ramp>,
    /// Requests intended during the ramp (`j < ramp_count`).
    ramp_count: u64,
    /// The intended time of request `ramp_count` (0 without a ramp).
    base_ns: u64,
    /// Requests whose intended time falls inside the duration, capped by the count.
    total: u64,
}

/// A linear rate ramp: `from` requests per second at the start, the schedule's rate after `secs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    pub from: f64,
    pub secs: f64,
}

impl Schedule {
    /// At most `count` requests, at `rate` per second, none intended at or after `duration`.
    #[cfg(test)]
    pub fn new(rate: f64, count: u64, duration: Duration) -> Result<Schedule, String> {
        Schedule::with_ramp(rate, None, count, duration)
    }

    /// As `new`, starting with `ramp`: during the ramp the rate grows linearly, and request `j`
    /// is due when the ramp's cumulative count `from*t + (rate-from)*t^2/(2*secs)` reaches `j`.
    pub fn with_ramp(
        rate: f64,
        ramp: Option<Ramp>,
        count: u64,
        duration: Duration,
    ) -> Result<Schedule, String> {
        if !(0.001..=1e9).contains(&rate) {
            return Err(format!(
                "rate must be between 0.001 and 1e9 per second: {rate}"
            ));
        }
        if let Some(r) = ramp {
            if !(0.0..=1e9).contains(&r.from) {
                return Err(format!(
                    "ramp start rate must be between 0 and 1e9: {}",
                    r.from
                ));
            }
            if !(r.secs > 0.0 && r.secs <= 1e6) {
                return Err(format!("ramp duration must be positive: {}", r.secs));
            }
        }
        let rate_milli = (rate * 1000.0).round() as u64;
        let rate = rate_milli as f64 / 1000.0;
        let (ramp_count, base_ns) = match ramp {
            None => (0, 0),
            Some(r) => {
                let during = (r.from + rate) / 2.0 * r.secs;
                let ramp_count = during.ceil() as u64;
                let base = (r.secs + (ramp_count as f64 - during) / rate) * 1e9;
                (ramp_count, base.round() as u64)
            }
        };
        let mut schedule = Schedule {
            rate_milli,
            ramp,
            ramp_count,
            base_ns,
            total: 0,
        };
        // Requests j with offset(j) < duration (offset grows with j), at most `count`.
        let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let fastest = ramp.map_or(rate, |r| r.from.max(rate));
        let bound = (duration.as_secs_f64() * fastest + 2.0).min(1e18) as u64 + ramp_count;
        schedule.total = partition_point(count.min(bound), |j| schedule.offset(j) < duration_ns);
        Ok(schedule)
    }

    /// How many requests the run sends.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The offered rate (after the ramp), requests per second.
    pub fn rate(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
    }

    /// The intended send time of request `j`, nanoseconds after the start (`None` past the end).
    pub fn intended(&self, j: u64) -> Option<u64> {
        (j < self.total).then(|| self.offset(j))
    }

    /// The intended time of `j`, ignoring the end of the run.
    fn offset(&self, j: u64) -> u64 {
        if j < self.ramp_count {
            if let Some(r) = self.ramp {
                if j == 0 {
                    return 0;
                }
                // The positive root of a*t^2 + b*t - j = 0, in the form that is stable when a
                // is small or zero: t = 2j / (b + sqrt(b^2 + 4aj)).
                let a = (self.rate() - r.from) / (2.0 * r.secs);
                let b = r.from;
                let j = j as f64;
                let t = 2.0 * j / (b + (b * b + 4.0 * a * j).sqrt());
                return (t * 1e9).round() as u64;
            }
        }
        let ns = u128::from(j - self.ramp_count) * NANOS_PER_S * 1000 / u128::from(self.rate_milli);
        u64::try_from(ns)
            .unwrap_or(u64::MAX)
            .saturating_add(self.base_ns)
    }

    #[cfg(test)]
    /// How many requests are due at `now` (those with an intended time at or before it).
    pub fn due_by(&self, now: u64) -> u64 {
        partition_point(self.total, |j| self.offset(j) <= now)
    }

    /// The requests of shard `shard` of `shards`: `shard`, `shard + shards`, ... Each shard has
    /// an equal share of the rate and the run's requests stay interleaved in time.
    pub fn shard(&self, shard: u64, shards: u64) -> ShardCursor {
        ShardCursor {
            next: shard,
            step: shards.max(1),
        }
    }
}

/// The number of `j` in `0..end` for which `pred` holds, `pred` being true then false.
fn partition_point(end: u64, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A shard's position in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCursor {
    next: u64,
    step: u64,
}

impl ShardCursor {
    /// The next request of this shard that is due at `now`, advancing past it.
    pub fn next_due(&mut self, schedule: &Schedule, now: u64) -> Option<(u64, u64)> {
        let intended = schedule.intended(self.next)?;
        if intended > now {
            return None;
        }
        let j = self.next;
        self.next += self.step;
        Some((j, intended))
    }

    /// When this shard's next request is due (`None` when it has sent its share).
    pub fn next_time(&self, schedule: &Schedule) -> Option<u64> {
        schedule.intended(self.next)
    }

    /// Whether `j` was already handed out by this cursor (another shard's requests never were).
    pub fn issued(&self, j: u64) -> bool {
        j < self.next && j % self.step == self.next % self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn intended_times_are_exact() {
        let s = Schedule::new(3.0, 100, 10 * S).unwrap();
        assert_eq!(s.total(), 30);
        assert_eq!(s.intended(0), Some(0));
        assert_eq!(s.intended(1), Some(333_333_333));
        assert_eq!(s.intended(3), Some(1_000_000_000));
        assert_eq!(s.intended(29), Some(9_666_666_666));
        assert_eq!(s.intended(30), None);
        // No drift: request 3e6 of a 3/s schedule is due at exactly 1e6 s.
        let long = Schedule::new(3.0, u64::MAX, Duration::from_secs(2_000_000)).unwrap();
        assert_eq!(long.intended(3_000_000), Some(1_000_000 * 1_000_000_000));
        // Fractional rates.
        let slow = Schedule::new(0.5, 10, 100 * S).unwrap();
        assert_eq!(slow.intended(1), Some(2_000_000_000));
        let odd = Schedule::new(123_456.789, u64::MAX, S).unwrap();
        assert_eq!(odd.total(), 123_457);
    }

    #[test]
    fn count_and_duration_both_bound_the_run() {
        assert_eq!(Schedule::new(1000.0, 250, 10 * S).unwrap().total(), 250);
        assert_eq!(
            Schedule::new(1000.0, 1_000_000, 2 * S).unwrap().total(),
            2000
        );
        // A request intended exactly at the end of the duration is not sent.
        assert_eq!(Schedule::new(10.0, 100, S).unwrap().total(), 10);
        assert_eq!(
            Schedule::new(10.0, 100, S + Duration::from_nanos(1))
                .unwrap()
                .total(),
            11
        );
        assert_eq!(Schedule::new(10.0, 0, S).unwrap().total(), 0);
        assert!(Schedule::new(0.0, 1, S).is_err());
        assert!(Schedule::new(f64::NAN, 1, S).is_err());
    }

    #[test]
    fn due_by_counts_requests_at_or_before_now() {
        let s = Schedule::new(1000.0, 5000, 10 * S).unwrap();
        assert_eq!(s.due_by(0), 1);
        assert_eq!(s.due_by(999_999), 1);
        assert_eq!(s.due_by(1_000_000), 2);
        assert_eq!(s.due_by(1_000_000_000), 1001);
        assert_eq!(s.due_by(u64::MAX), 5000);
        let third = Schedule::new(3.0, 100, 100 * S).unwrap();
        for now in [
            0,
            333_333_332,
            333_333_333,
            333_333_334,
            999_999_999,
            1_000_000_000,
        ] {
            let expect = (0..100)
                .filter(|&j| third.intended(j).unwrap() <= now)
                .count() as u64;
            assert_eq!(third.due_by(now), expect, "now {now}");
        }
    }

    #[test]
    fn a_ramp_grows_the_rate_linearly_then_holds_it() {
        // From 0 to 1000/s over 2 s: 1000 requests during the ramp, request j at sqrt(j/250) s.
        let ramp = Some(Ramp {
            from: 0.0,
            secs: 2.0,
        });
        let s = Schedule::with_ramp(1000.0, ramp, u64::MAX, 5 * S).unwrap();
        assert_eq!(s.intended(0), Some(0));
        assert_eq!(s.intended(250), Some(1_000_000_000));
        assert_eq!(s.intended(1000), Some(2_000_000_000));
        assert_eq!(s.intended(1001), Some(2_001_000_000));
        // 1000 in the ramp, 3000 after it.
        assert_eq!(s.total(), 4000);
        assert_eq!(s.due_by(1_000_000_000), 251);
        // Intended times only grow, and the rate in each second is what the ramp says.
        let times: Vec<u64> = (0..s.total()).map(|j| s.intended(j).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        let in_second = |k: u64| times.iter().filter(|&&t| t / 1_000_000_000 == k).count();
        assert_eq!([in_second(0), in_second(1), in_second(2)], [250, 750, 1000]);
        // A ramp down, and a ramp from the rate to itself (constant).
        let down = Schedule::with_ramp(
            100.0,
            Some(Ramp {
                from: 300.0,
                secs: 1.0,
            }),
            1000,
            2 * S,
        );
        assert_eq!(down.unwrap().total(), 300);
        let flat = Schedule::with_ramp(
            100.0,
            Some(Ramp {
                from: 100.0,
                secs: 1.0,
            }),
            1000,
            2 * S,
        );
        let flat = flat.unwrap();
        let plain = Schedule::new(100.0, 1000, 2 * S).unwrap();
        assert!((0..200).all(|j| flat.intended(j) == plain.intended(j)));
        assert!(
            Schedule::with_ramp(
                100.0,
                Some(Ramp {
                    from: -1.0,
                    secs: 1.0
                }),
                1,
                S
            )
            .is_err()
        );
        assert!(
            Schedule::with_ramp(
                100.0,
                Some(Ramp {
                    from: 1.0,
                    secs: 0.0
                }),
                1,
                S
            )
            .is_err()
        );
    }

    #[test]
    fn shards_split_the_schedule_exactly() {
        let s = Schedule::new(1000.0, 10, 10 * S).unwrap();
        let mut seen = Vec::new();
        for shard in 0..3 {
            let mut cursor = s.shard(shard, 3);
            let mut now = 0;
            while let Some(t) = cursor.next_time(&s) {
                now = now.max(t);
                let (j, intended) = cursor.next_due(&s, now).unwrap();
                assert_eq!(intended, s.intended(j).unwrap());
                assert_eq!(j % 3, shard);
                assert!(cursor.issued(j));
                assert!(!cursor.issued(j + 1) && !cursor.issued(j + 2));
                seen.push(j);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_late_cursor_catches_up_without_skipping() {
        // Open loop: after a stall every overdue request is still sent, each keeping its own
        // intended time (which is what latency is measured from).
        let s = Schedule::new(100.0, 1000, 10 * S).unwrap();
        let mut cursor = s.shard(0, 1);
        assert_eq!(cursor.next_due(&s, 0), Some((0, 0)));
        assert_eq!(cursor.next_due(&s, 0), None);
        let mut late = Vec::new();
        while let Some((j, intended)) = cursor.next_due(&s, 50_000_000) {
            late.push((j, intended));
        }
        assert_eq!(late.len(), 5);
        assert_eq!(late[4], (5, 50_000_000));
    }
}
