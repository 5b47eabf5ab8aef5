//! Lockouts after repeated failed authentications.
//!
//! A password guesser such as svcrack sends ~170 attempts per second, below any packet-rate limit
//! that real traffic tolerates, so failed authentications need a limiter of their own. After
//! `failures_before_lockout` failures in a row a key is locked out for `first_lockout`; each
//! further failure doubles the lockout, up to `max_lockout` (5 failures → 1 s, then 2 s, 4 s, …,
//! 10 min). While locked out, requests are refused without looking at their credentials, so they
//! neither count nor teach the guesser anything.
//!
//! Keys are chosen by the caller. The [`super::Authenticator`] keys on the **source address** and
//! on the **(source address, user name)** pair, never on the user name alone: a lockout keyed on
//! the account would let anyone lock its real owner out (see `shared/notes/auth-and-abuse.md`).
//!
//! Failures are forgotten one at a time, one per `failure_decay` without a new failure, so a
//! NATed office mistyping a password now and then never accumulates a lockout, while a guesser
//! that pauses for one lockout finds its count where it left it. A success resets a key's count
//! only when the policy says so: right for the (source, user) pair (the password is known), wrong
//! for a bare source (an attacker with an account of their own could launder the count of a
//! password-spraying run by logging in between guesses).
//!
//! Bounded: the table holds at most `capacity` keys and forgets the oldest first. An attacker
//! able to flush it must send more distinct keys than `capacity`; keyed on addresses, that takes
//! that many addresses.

use std::hash::Hash;
use std::time::{Duration, Instant};

use super::bounded::BoundedMap;

/// How a throttle counts and locks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures in a row (after decay) that start the first lockout.
    pub failures_before_lockout: u32,
    /// The first lockout's length; each later failure doubles it.
    pub first_lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// One failure is forgotten per this much time without a failure.
    pub failure_decay: Duration,
    /// Whether a success clears the count.
    pub reset_on_success: bool,
}

impl ThrottlePolicy {
    /// For a (source address, user name) pair: 5 failures, 1 s doubling to 10 min, reset on
    /// success.
    pub const PER_SOURCE_AND_USER: ThrottlePolicy = ThrottlePolicy {
        failures_before_lockout: 5,
        first_lockout: Duration::from_secs(1),
        max_lockout: Duration::from_secs(600),
        failure_decay: Duration::from_secs(600),
        reset_on_success: true,
    };

    /// For a source address whatever the user: more lenient (many users may share a NAT), not
    /// reset by a success.
    pub const PER_SOURCE: ThrottlePolicy = ThrottlePolicy {
        failures_before_lockout: 20,
        first_lockout: Duration::from_secs(1),
        max_lockout: Duration::from_secs(600),
        failure_decay: Duration::from_secs(600),
        reset_on_success: false,
    };

    /// The lockout that the `failures`-th failure in a row starts, if any.
    pub fn lockout_after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.failures_before_lockout)?;
        // 2^over, saturating long before it could overflow a Duration.
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        Some(
            self.first_lockout
                .saturating_mul(factor)
                .min(self.max_lockout),
        )
    }
}

/// The answer of [`AuthThrottle::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleCheck {
    Allowed,
    LockedOut { until: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl Record {
    /// The count after forgetting one failure per `decay` since the last one.
    fn decayed_failures(&self, now: Instant, decay: Duration) -> u32 {
        let quiet = now.saturating_duration_since(self.last_failure);
        let forgotten = if decay.is_zero() {
            u128::from(u32::MAX)
        } else {
            quiet.as_nanos() / decay.as_nanos()
        };
        let forgotten = u32::try_from(forgotten).unwrap_or(u32::MAX);
        self.failures.saturating_sub(forgotten)
    }
}

/// Counts failures per key and locks keys out on an exponential schedule.
#[derive(Debug)]
pub struct AuthThrottle<K> {
    policy: ThrottlePolicy,
    records: BoundedMap<K, Record>,
}

impl<K: Eq + Hash + Clone> AuthThrottle<K> {
    pub fn new(policy: ThrottlePolicy, capacity: usize) -> AuthThrottle<K> {
        AuthThrottle {
            policy,
            records: BoundedMap::new(capacity),
        }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.len() == 0
    }

    /// Whether `key` may try to authenticate at `now`.
    pub fn check(&self, key: &K, now: Instant) -> ThrottleCheck {
        match self.records.get(key).and_then(|r| r.locked_until) {
            Some(until) if now < until => ThrottleCheck::LockedOut { until },
            _ => ThrottleCheck::Allowed,
        }
    }

    /// Counts a failed authentication; returns the lockout it starts, if any.
    pub fn record_failure(&mut self, key: K, now: Instant) -> ThrottleCheck {
        let failures = self
            .records
            .get(&key)
            .map_or(0, |r| r.decayed_failures(now, self.policy.failure_decay))
            .saturating_add(1);
        let locked_until = self
            .policy
            .lockout_after(failures)
            .and_then(|lockout| now.checked_add(lockout));
        self.records.insert(
            key,
            Record {
                failures,
                last_failure: now,
                locked_until,
            },
        );
        match locked_until {
            Some(until) => ThrottleCheck::LockedOut { until },
            None => ThrottleCheck::Allowed,
        }
    }

    /// Counts a successful authentication: clears `key`'s record if the policy says so.
    pub fn record_success(&mut self, key: &K) {
        if self.policy.reset_on_success {
            self.records.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn schedule_doubles_and_caps() {
        let p = ThrottlePolicy::PER_SOURCE_AND_USER;
        assert_eq!(p.lockout_after(4), None);
        assert_eq!(p.lockout_after(5), Some(s(1)));
        assert_eq!(p.lockout_after(6), Some(s(2)));
        assert_eq!(p.lockout_after(14), Some(s(512)));
        assert_eq!(p.lockout_after(15), Some(s(600)));
        assert_eq!(p.lockout_after(u32::MAX), Some(s(600)));
    }

    #[test]
    fn decay_forgets_one_failure_per_period() {
        let t0 = Instant::now();
        let mut throttle = AuthThrottle::new(ThrottlePolicy::PER_SOURCE_AND_USER, 16);
        for _ in 0..4 {
            assert_eq!(throttle.record_failure("k", t0), ThrottleCheck::Allowed);
        }
        // Ten minutes later one failure is forgotten: 3 + 1 = 4, still no lockout.
        assert_eq!(
            throttle.record_failure("k", t0 + s(600)),
            ThrottleCheck::Allowed
        );
        assert_eq!(
            throttle.record_failure("k", t0 + s(601)),
            ThrottleCheck::LockedOut { until: t0 + s(602) }
        );
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut throttle = AuthThrottle::new(ThrottlePolicy::PER_SOURCE, 3);
        for key in 0..100u32 {
            throttle.record_failure(key, t0);
        }
        assert_eq!(throttle.len(), 3);
    }
}
