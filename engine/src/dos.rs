//! Flood protection: a per-source-address packet-rate limit with temporary bans, and the
//! amplification budget of responses to unauthenticated UDP sources. Sans-IO: every call takes
//! `now`.
//!
//! **Why.** A registrar on the public internet is scanned and flooded within minutes of going
//! up. Answering a flood costs parsing, a transaction and a response per packet; dropping the
//! packets of a source that already went over its limit costs one hash lookup, before parsing.
//!
//! **Flexisip's semantics, sipshard's mechanism.** The keys are those of Flexisip's
//! `[module::DoSProtection]` (`enabled`, `packet-rate-limit` in packets per second averaged over
//! `time-period`, `ban-time`, `white-list`; cluster nodes, 127.0.0.1 and ::1 are always trusted,
//! as there). Flexisip measures the rate per `time-period` window and bans the source with
//! iptables; sipshard needs no root: each shard keeps a token bucket per source address (a GCRA,
//! one timestamp per source) that holds `packet-rate-limit × time-period` packets and refills at
//! `packet-rate-limit` per second, and drops everything a banned source sends until `ban-time`
//! has passed. Bans expire on their own; the first packet after one starts a full bucket.
//!
//! **Per shard and source address.** Flexisip keys UDP on ip:port; sipshard keys on the address,
//! so an attacker cannot escape by changing ports within one shard. The tables are per shard (no
//! shared state, as everywhere in sipshard). The kernel spreads datagrams and connections over the
//! shards' SO_REUSEPORT sockets by a hash of the 4-tuple, so one attacking socket always lands on
//! one shard and is banned there; an attacker using many source ports can reach every shard and
//! send up to `shards × packet-rate-limit` before each bans it. The limit is therefore "per source
//! address, per shard", which for a single socket (a phone, a scanner, a flood tool) is the same.
//!
//! **Bounded.** At most [`MAX_SOURCES`] buckets and [`MAX_BANS`] bans per shard, oldest forgotten
//! first and counted. A bucket that has refilled carries no information and is forgotten as soon
//! as it is the oldest; forgetting a busy one only gives its source a fresh burst. Forgetting a
//! ban needs more than [`MAX_BANS`] banned addresses on one shard within `ban-time`.
//!
//! **Never amplify.** A spoofed UDP request makes the node send its response to the victim whose
//! address was forged. [`headers_within_budget`] keeps a response to an unauthenticated UDP
//! request within [`AMPLIFICATION_LIMIT`] times the request's size by offering fewer digest
//! challenges (strongest first) to a request too small to justify them all.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::bounded::BoundedMap;

/// Buckets a shard keeps (sources seen recently), ~60 bytes each.
pub const MAX_SOURCES: usize = 65_536;

/// Bans a shard keeps at once.
pub const MAX_BANS: usize = 16_384;

/// Refilled buckets forgotten per packet at most, so the table shrinks back after a burst of new
/// sources without one packet paying for all of them.
const FORGET_PER_PACKET: usize = 4;

/// Largest response to an unauthenticated UDP request, as a multiple of the request's size.
pub const AMPLIFICATION_LIMIT: usize = 3;

/// An upper bound of what a locally generated response adds to the headers it copies from the
/// request (which are no larger than the request): the status line, `received`/`rport` in the
/// Via, the To tag and Content-Length.
const RESPONSE_OVERHEAD_BYTES: usize = 128;

/// `[module::DoSProtection]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodSettings {
    /// Packets per second a source may send on average (`packet-rate-limit`, at least 1).
    pub packet_rate_limit: u32,
    /// The window the rate is averaged over (`time-period`): a source may send a burst of
    /// `packet_rate_limit × time_period` packets.
    pub time_period: Duration,
    /// How long a source that went over the limit is ignored (`ban-time`).
    pub ban_time: Duration,
    /// Addresses never limited: `white-list`, `[cluster] nodes`, 127.0.0.1 and ::1.
    pub trusted: Vec<IpAddr>,
}

/// What [`FloodGuard::check`] decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit, or from a trusted address: handle it.
    Pass,
    /// From a banned source: drop it.
    Banned,
    /// This packet took its source over the limit: drop it; the source is banned from now on.
    NewBan,
}

/// What a guard forgot to stay within its bounds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FloodCounters {
    /// Buckets of sources still over their average rate forgotten for a new source.
    pub buckets_evicted: u64,
    /// Bans lifted early for a new one.
    pub bans_evicted: u64,
}

/// One shard's flood protection.
#[derive(Debug)]
pub struct FloodGuard {
    /// Time between two packets at the average rate.
    interval: Duration,
    /// How far ahead of now a source's theoretical arrival time may run (the burst).
    burst: Duration,
    ban_time: Duration,
    trusted: Vec<IpAddr>,
    /// Per source: the theoretical arrival time of its next packet (GCRA). A bucket is full
    /// when it is not after now.
    buckets: BoundedMap<IpAddr, Instant>,
    /// Per banned source: when the ban ends. `ban_time` is the same for all, so insertion order
    /// is expiry order.
    bans: BoundedMap<IpAddr, Instant>,
    counters: FloodCounters,
}

impl FloodGuard {
    pub fn new(settings: FloodSettings) -> FloodGuard {
        FloodGuard::with_capacity(settings, MAX_SOURCES, MAX_BANS)
    }

    fn with_capacity(settings: FloodSettings, sources: usize, bans: usize) -> FloodGuard {
        let rate = settings.packet_rate_limit.max(1);
        let interval = Duration::from_secs(1) / rate;
        FloodGuard {
            interval,
            // At least one packet, whatever the window.
            burst: settings.time_period.max(interval),
            ban_time: settings.ban_time,
            trusted: settings
                .trusted
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
            buckets: BoundedMap::new(sources),
            bans: BoundedMap::new(bans),
            counters: FloodCounters::default(),
        }
    }

    pub fn ban_time(&self) -> Duration {
        self.ban_time
    }

    pub fn counters(&self) -> &FloodCounters {
        &self.counters
    }

    #[cfg(test)]
    fn is_trusted(&self, source: IpAddr) -> bool {
        self.trusted.contains(&source.to_canonical())
    }

    /// Counts one packet (a datagram, a stream message or a new connection) from `source`.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let source = source.to_canonical();
        if self.trusted.contains(&source) {
            return Verdict::Pass;
        }
        self.forget_expired_bans(now);
        if let Some(&until) = self.bans.get(&source) {
            if until > now {
                return Verdict::Banned;
            }
            self.bans.remove(&source);
        }
        let allowed = now + self.burst;
        if let Some(tat) = self.buckets.get_mut(&source) {
            let next = (*tat).max(now) + self.interval;
            if next <= allowed {
                *tat = next;
                return Verdict::Pass;
            }
            self.buckets.remove(&source);
            if let Some((_, until)) = self.bans.insert(source, now + self.ban_time) {
                if until > now {
                    self.counters.bans_evicted += 1;
                }
            }
            return Verdict::NewBan;
        }
        self.forget_refilled_buckets(now);
        if let Some((_, tat)) = self.buckets.insert(source, now + self.interval) {
            if tat > now {
                self.counters.buckets_evicted += 1;
            }
        }
        Verdict::Pass
    }

    /// Whether `source` is banned now (without counting a packet).
    #[cfg(test)]
    fn is_banned(&self, source: IpAddr, now: Instant) -> bool {
        self.bans
            .get(&source.to_canonical())
            .is_some_and(|&until| until > now)
    }

    /// Sources tracked and banned.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.buckets.len(), self.bans.len())
    }

    fn forget_expired_bans(&mut self, now: Instant) {
        while let Some((_, &until)) = self.bans.oldest() {
            if until > now {
                break;
            }
            self.bans.pop_oldest();
        }
    }

    fn forget_refilled_buckets(&mut self, now: Instant) {
        for _ in 0..FORGET_PER_PACKET {
            match self.buckets.oldest() {
                Some((_, &tat)) if tat <= now => {
                    self.buckets.pop_oldest();
                }
                _ => break,
            }
        }
    }
}

/// How many of `headers`, kept in order, a locally generated response to a UDP request of
/// `request_len` bytes may carry and stay within [`AMPLIFICATION_LIMIT`] times the request. At
/// least one: the response must say what the request lacks, and with a single header it stays
/// within the limit for any request the parser accepts (measured in `tests/e2e_dos.rs`).
pub fn headers_within_budget(request_len: usize, headers: &[(&str, String)]) -> usize {
    let budget = request_len.saturating_mul(AMPLIFICATION_LIMIT);
    let mut size = request_len + RESPONSE_OVERHEAD_BYTES;
    let mut kept = 0;
    for (name, value) in headers {
        // `Name: value\r\n`
        size += name.len() + 2 + value.len() + 2;
        if size > budget && kept > 0 {
            break;
        }
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn settings(rate: u32, period_ms: u64) -> FloodSettings {
        FloodSettings {
            packet_rate_limit: rate,
            time_period: Duration::from_millis(period_ms),
            ban_time: Duration::from_secs(60),
            trusted: vec![ip("127.0.0.1"), ip("::1"), ip("10.0.0.1")],
        }
    }

    /// Sends `count` packets from `source`, `gap` apart from `start`; returns the verdicts.
    fn send(
        guard: &mut FloodGuard,
        source: IpAddr,
        start: Instant,
        gap: Duration,
        count: u32,
    ) -> Vec<Verdict> {
        (0..count)
            .map(|i| guard.check(source, start + gap * i))
            .collect()
    }

    #[test]
    fn a_burst_of_rate_times_period_passes_then_the_source_is_banned() {
        let mut guard = FloodGuard::new(settings(20, 3000));
        let t0 = Instant::now();
        let attacker = ip("192.0.2.7");
        let verdicts = send(&mut guard, attacker, t0, Duration::ZERO, 62);
        assert!(
            verdicts[..60].iter().all(|v| *v == Verdict::Pass),
            "{verdicts:?}"
        );
        assert_eq!(verdicts[60], Verdict::NewBan);
        assert_eq!(verdicts[61], Verdict::Banned, "the ban is reported once");
        assert!(guard.is_banned(attacker, t0));
        // Others are unaffected.
        assert_eq!(guard.check(ip("192.0.2.8"), t0), Verdict::Pass);
    }

    #[test]
    fn the_average_rate_is_sustained_forever_and_just_above_it_is_not() {
        let mut guard = FloodGuard::new(settings(20, 3000));
        let t0 = Instant::now();
        let phone = ip("198.51.100.1");
        let at_rate = send(&mut guard, phone, t0, Duration::from_millis(50), 10_000);
        assert!(at_rate.iter().all(|v| *v == Verdict::Pass));
        // 25/s against 20/s: each packet takes 50 ms of the 3 s burst and 40 ms pass between
        // two, so the burst is used up after 300 packets (12 s).
        let t1 = t0 + Duration::from_secs(1000);
        let flood = ip("198.51.100.2");
        let verdicts = send(&mut guard, flood, t1, Duration::from_millis(40), 400);
        let first_ban = verdicts.iter().position(|v| *v == Verdict::NewBan);
        assert!(
            first_ban.is_some_and(|i| (295..=305).contains(&i)),
            "{first_ban:?}"
        );
    }

    #[test]
    fn bans_expire_on_their_own_with_a_full_bucket() {
        let mut guard = FloodGuard::new(settings(10, 1000));
        let t0 = Instant::now();
        let source = ip("203.0.113.5");
        let verdicts = send(&mut guard, source, t0, Duration::ZERO, 11);
        assert_eq!(verdicts[10], Verdict::NewBan);
        let almost = t0 + Duration::from_secs(60) - Duration::from_millis(1);
        assert_eq!(guard.check(source, almost), Verdict::Banned);
        let after = t0 + Duration::from_secs(60);
        assert!(!guard.is_banned(source, after));
        let verdicts = send(&mut guard, source, after, Duration::ZERO, 11);
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Pass));
        assert_eq!(verdicts[10], Verdict::NewBan, "banned again");
        // A ban that is over is dropped from the table by the next packet from anyone.
        guard.check(ip("203.0.113.6"), after + Duration::from_secs(61));
        assert_eq!(guard.sizes().1, 0);
    }

    #[test]
    fn trusted_addresses_are_never_limited() {
        let mut guard = FloodGuard::new(settings(1, 1000));
        let t0 = Instant::now();
        for trusted in ["127.0.0.1", "::1", "10.0.0.1", "::ffff:10.0.0.1"] {
            let verdicts = send(&mut guard, ip(trusted), t0, Duration::ZERO, 1000);
            assert!(verdicts.iter().all(|v| *v == Verdict::Pass), "{trusted}");
            assert!(guard.is_trusted(ip(trusted)));
        }
        assert_eq!(guard.sizes(), (0, 0), "trusted sources cost no table entry");
        // 127.0.0.2 is not 127.0.0.1.
        let verdicts = send(&mut guard, ip("127.0.0.2"), t0, Duration::ZERO, 2);
        assert_eq!(verdicts, [Verdict::Pass, Verdict::NewBan]);
    }

    #[test]
    fn an_ipv4_mapped_source_is_the_same_source() {
        let mut guard = FloodGuard::new(settings(1, 1000));
        let t0 = Instant::now();
        assert_eq!(guard.check(ip("192.0.2.1"), t0), Verdict::Pass);
        assert_eq!(guard.check(ip("::ffff:192.0.2.1"), t0), Verdict::NewBan);
        assert!(guard.is_banned(ip("192.0.2.1"), t0));
    }

    #[test]
    fn tables_are_bounded_and_evictions_counted() {
        let mut guard = FloodGuard::with_capacity(settings(1, 1000), 4, 2);
        let t0 = Instant::now();
        // Five busy sources in a table of four: the oldest is forgotten, counted.
        for i in 0..5 {
            assert_eq!(guard.check(ip(&format!("192.0.2.{i}")), t0), Verdict::Pass);
        }
        assert_eq!(guard.sizes().0, 4);
        assert_eq!(guard.counters().buckets_evicted, 1);
        // Sources whose bucket refilled are forgotten without counting.
        let later = t0 + Duration::from_secs(5);
        for i in 10..14 {
            guard.check(ip(&format!("192.0.2.{i}")), later);
        }
        assert_eq!(guard.counters().buckets_evicted, 1);
        // Three bans in a table of two: the oldest ban is lifted early, counted.
        for i in 20..23 {
            let source = ip(&format!("192.0.2.{i}"));
            assert_eq!(
                send(&mut guard, source, later, Duration::ZERO, 2),
                [Verdict::Pass, Verdict::NewBan]
            );
        }
        assert_eq!(guard.sizes().1, 2);
        assert_eq!(guard.counters().bans_evicted, 1);
        assert!(!guard.is_banned(ip("192.0.2.20"), later));
        assert!(guard.is_banned(ip("192.0.2.22"), later));
    }

    #[test]
    fn many_sources_cost_bounded_memory() {
        let mut guard = FloodGuard::with_capacity(settings(5, 1000), 1000, 100);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let source = IpAddr::from(i.to_be_bytes());
            guard.check(source, t0 + Duration::from_micros(u64::from(i)));
        }
        let (buckets, bans) = guard.sizes();
        assert!(buckets <= 1000 && bans <= 100);
    }

    fn challenge(algorithm: &str) -> (&'static str, String) {
        (
            "WWW-Authenticate",
            format!(
                "Digest realm=\"example.org\", nonce=\"AAAAAGsHMYMAAAAAAAAAAVvkdawRLZjMImp3-ogOP3Q\", \
                 algorithm={algorithm}, qop=\"auth\""
            ),
        )
    }

    #[test]
    fn challenges_are_cut_to_the_amplification_budget() {
        let three = [
            challenge("SHA-512-256"),
            challenge("SHA-256"),
            challenge("MD5"),
        ];
        // A real phone's REGISTER (400 bytes and more) gets every challenge.
        assert_eq!(headers_within_budget(400, &three), 3);
        // A short one fewer, strongest first, but always one.
        assert_eq!(headers_within_budget(250, &three), 2);
        assert_eq!(headers_within_budget(150, &three), 1);
        assert_eq!(headers_within_budget(10, &three), 1);
        assert_eq!(headers_within_budget(10, &[]), 0);
        // Within the budget, the estimate is an upper bound of the response's size.
        let kept = headers_within_budget(250, &three);
        let estimate: usize = 250
            + RESPONSE_OVERHEAD_BYTES
            + three[..kept]
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        assert!(estimate <= 250 * AMPLIFICATION_LIMIT);
    }
}
