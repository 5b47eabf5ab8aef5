//! The open-loop schedule: request `j` (counting from 0 over the whole run) is due at
//! `start + j / rate` (or along a linear ramp, or a series of rate steps), whatever happened to
//! the requests before it. Latency is measured from that
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
    /// Requests per second after the ramp (or the last step), in thousandths (so 0.5/s and
    /// 123456.789/s are exact).
    rate_milli: u64,
    /// A linear ramp from `from` to the rate over `secs` seconds at the start, if any.
    ramp: Option<Ramp>,
    /// The steps before the last one (whose rate is `rate_milli`), if any.
    steps: [Segment; MAX_STEPS - 1],
    step_count: usize,
    /// Requests intended during the ramp or the steps before the last (`j < ramp_count`).
    ramp_count: u64,
    /// The intended time of request `ramp_count` (0 without a ramp or steps).
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

/// One rate step: `rate` requests per second for `secs` seconds (the last step's rate holds
/// until the run's count or duration ends it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub rate: f64,
    pub secs: f64,
}

/// The most steps a schedule takes.
pub const MAX_STEPS: usize = 16;

/// A step as the schedule keeps it: its first request, when that is due, its rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Segment {
    first_j: u64,
    start_ns: u64,
    rate_milli: u64,
}

/// Rates are between these, per second.
const RATES: std::ops::RangeInclusive<f64> = 0.001..=1e9;

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
        if !RATES.contains(&rate) {
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
        let schedule = Schedule {
            rate_milli,
            ramp,
            steps: [Segment::default(); MAX_STEPS - 1],
            step_count: 0,
            ramp_count,
            base_ns,
            total: 0,
        };
        let fastest = ramp.map_or(rate, |r| r.from.max(rate));
        Ok(schedule.bounded(count, duration, fastest))
    }

    /// Rate steps, in order: request `j` of step `k` is due at the step's start plus
    /// `(j - first) / rate_k`, each step starting exactly when the one before ends.
    pub fn with_steps(steps: &[Step], count: u64, duration: Duration) -> Result<Schedule, String> {
        let Some(last) = steps.last() else {
            return Err("no steps".into());
        };
        if steps.len() > MAX_STEPS {
            return Err(format!("at most {MAX_STEPS} steps"));
        }
        let mut segments = [Segment::default(); MAX_STEPS - 1];
        let (mut first_j, mut start_ns) = (0u64, 0u64);
        for (k, step) in steps.iter().enumerate() {
            if !RATES.contains(&step.rate) {
                return Err(format!(
                    "step rates must be between 0.001 and 1e9 per second: {}",
                    step.rate
                ));
            }
            if !(step.secs > 0.0 && step.secs <= 1e6) {
                return Err(format!("step durations must be positive: {}", step.secs));
            }
            let rate_milli = (step.rate * 1000.0).round() as u64;
            if k + 1 == steps.len() {
                break;
            }
            segments[k] = Segment {
                first_j,
                start_ns,
                rate_milli,
            };
            // The requests due within the step: j - first with (j - first) / rate < secs.
            let secs_ns = (step.secs * 1e9).round() as u128;
            let per = NANOS_PER_S * 1000;
            let in_step = (secs_ns * u128::from(rate_milli)).div_ceil(per);
            first_j = first_j.saturating_add(u64::try_from(in_step).unwrap_or(u64::MAX));
            start_ns = start_ns.saturating_add(u64::try_from(secs_ns).unwrap_or(u64::MAX));
        }
        let schedule = Schedule {
            rate_milli: (last.rate * 1000.0).round() as u64,
            ramp: None,
            steps: segments,
            step_count: steps.len() - 1,
            ramp_count: first_j,
            base_ns: start_ns,
            total: 0,
        };
        let fastest = steps.iter().map(|s| s.rate).fold(0.0, f64::max);
        Ok(schedule.bounded(count, duration, fastest))
    }

    /// The schedule with its total: the requests `j` with `offset(j) < duration` (offset grows
    /// with `j`), at most `count`; `fastest` is the highest rate it reaches.
    fn bounded(mut self, count: u64, duration: Duration, fastest: f64) -> Schedule {
        let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bound = (duration.as_secs_f64() * fastest + 2.0).min(1e18) as u64 + self.ramp_count;
        self.total = partition_point(count.min(bound), |j| self.offset(j) < duration_ns);
        self
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
            if let Some(step) = self.steps[..self.step_count]
                .iter()
                .rev()
                .find(|s| s.first_j <= j)
            {
                let ns =
                    u128::from(j - step.first_j) * NANOS_PER_S * 1000 / u128::from(step.rate_milli);
                return u64::try_from(ns)
                    .unwrap_or(u64::MAX)
                    .saturating_add(step.start_ns);
            }
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
    fn steps_hold_each_rate_for_its_time_then_the_last_one() {
        let step = |rate, secs| Step { rate, secs };
        // 10/s for 1 s, 30/s for 0.5 s, then 100/s until the 3 s duration.
        let s = Schedule::with_steps(
            &[step(10.0, 1.0), step(30.0, 0.5), step(100.0, 1.0)],
            u64::MAX,
            3 * S,
        )
        .unwrap();
        assert_eq!(s.intended(9), Some(900_000_000));
        assert_eq!(s.intended(10), Some(1_000_000_000));
        assert_eq!(s.intended(11), Some(1_033_333_333));
        // 30/s for 0.5 s: 15 requests (10..25), then the last step from 1.5 s.
        assert_eq!(s.intended(24), Some(1_466_666_666));
        assert_eq!(s.intended(25), Some(1_500_000_000));
        assert_eq!(s.intended(26), Some(1_510_000_000));
        assert_eq!(s.total(), 25 + 150);
        assert_eq!(s.rate(), 100.0);
        let times: Vec<u64> = (0..s.total()).map(|j| s.intended(j).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        // A step whose time is not a whole number of periods: 3/s for 1 s is requests at 0,
        // 1/3 and 2/3 s; the next step starts at 1 s all the same.
        let s = Schedule::with_steps(&[step(3.0, 1.0), step(1.0, 5.0)], 5, 10 * S).unwrap();
        assert_eq!(
            (0..5).map(|j| s.intended(j).unwrap()).collect::<Vec<_>>(),
            [0, 333_333_333, 666_666_666, 1_000_000_000, 2_000_000_000]
        );
        // One step is a constant rate.
        let one = Schedule::with_steps(&[step(100.0, 1.0)], 1000, 2 * S).unwrap();
        let plain = Schedule::new(100.0, 1000, 2 * S).unwrap();
        assert_eq!(one.total(), plain.total());
        assert!((0..200).all(|j| one.intended(j) == plain.intended(j)));
        for bad in [
            &[][..],
            &[step(0.0, 1.0)],
            &[step(10.0, 0.0)],
            &[step(10.0, 1.0); MAX_STEPS + 1],
        ] {
            assert!(Schedule::with_steps(bad, 10, S).is_err(), "{bad:?}");
        }
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
