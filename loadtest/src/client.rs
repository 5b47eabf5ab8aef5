//! The client side of transactions over UDP, sans-IO: non-INVITE (RFC 3261 §17.1.2) and, for the
//! `call` scenario, INVITE (§17.1.1: Timer A doubles without the T2 cap and stops at the first
//! provisional response; the ACK to a non-2xx is the shell's, written by `scenario`). The shell
//! hands it the requests it sent, the datagrams it received and the time; it says what to
//! retransmit and counts what happened. Times are nanoseconds since the run's start.
//!
//! Each request's top Via branch is `z9hG4bK-sl<run><kind>-<j>`, where `j` is the request's index in
//! the schedule: a response is matched by parsing `j` back out of its branch, and a response to a
//! request this client already completed is told apart from a stray one without remembering it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sipshard_net::Message;

/// RFC 3261's timer values, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: u64,
    pub t2: u64,
}

impl Timers {
    #[cfg(test)]
    pub const RFC3261: Timers = Timers {
        t1: 500_000_000,
        t2: 4_000_000_000,
    };

    /// Timer F: the transaction times out 64*T1 after the request was first sent.
    pub fn timeout(&self) -> u64 {
        self.t1.saturating_mul(64)
    }
}

/// What the client counted. After every transaction has ended,
/// `sent == ok + failed + timed_out`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent (first transmissions).
    pub sent: u64,
    /// Transactions ended by a 2xx.
    pub ok: u64,
    /// Transactions ended by a 3xx–6xx.
    pub failed: u64,
    /// Transactions ended by Timer F.
    pub timed_out: u64,
    /// Retransmissions (Timer E).
    pub retransmissions: u64,
    /// Provisional responses to live transactions.
    pub provisional: u64,
    /// Responses to transactions already ended (retransmissions' answers, late answers).
    pub late: u64,
    /// Datagrams that are not a response to any request of this run: unparseable, requests,
    /// responses without a branch of ours, or with a status outside 100–699.
    pub unexpected: u64,
    /// Transactions ended by a 401/407 challenge that the shell answered with a new request (in
    /// another client's table): neither ok nor failed here.
    pub challenged: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.retransmissions += other.retransmissions;
        self.provisional += other.provisional;
        self.late += other.late;
        self.unexpected += other.unexpected;
        self.challenged += other.challenged;
    }

    /// These counts (of first requests) with those of the requests resent with credentials
    /// after a challenge (`resent`), whose outcomes replace the challenges', so that
    /// `sent == ok + failed + timed_out` still holds (sent: the first requests).
    pub fn with_resent(&self, resent: &Counts) -> Counts {
        let mut c = *self;
        c.add(&Counts {
            sent: 0,
            challenged: 0,
            ..*resent
        });
        c
    }

    /// What was counted since `earlier` (a snapshot of the same counts).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            sent: self.sent - earlier.sent,
            ok: self.ok - earlier.ok,
            failed: self.failed - earlier.failed,
            timed_out: self.timed_out - earlier.timed_out,
            retransmissions: self.retransmissions - earlier.retransmissions,
            provisional: self.provisional - earlier.provisional,
            late: self.late - earlier.late,
            unexpected: self.unexpected - earlier.unexpected,
            challenged: self.challenged - earlier.challenged,
        }
    }
}

/// A transaction that ended with a final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub j: u64,
    pub status: u16,
    /// From the intended send time (corrected for coordinated omission).
    pub latency: u64,
    /// From the first actual transmission.
    pub service_time: u64,
}

/// What one received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Final(Completed),
    Provisional,
    /// A response to a transaction that already ended (a retransmitted final response: an INVITE
    /// client ACKs it again).
    Late {
        j: u64,
        status: u16,
    },
    Unexpected,
}

struct Transaction {
    intended: u64,
    sent: u64,
    /// Where `service_time` starts: `sent`, or the first request's send of a resent one.
    origin: u64,
    /// The current Timer E (or A) interval.
    interval: u64,
    /// An INVITE that got a provisional response: no more retransmissions.
    proceeding: bool,
    next_retransmit: u64,
    request: Vec<u8>,
}

pub struct Client {
    prefix: String,
    invite: bool,
    /// Over a reliable transport: no retransmissions, only Timer F (§17.1.2.2).
    reliable: bool,
    timers: Timers,
    live: HashMap<u64, Transaction>,
    /// (when, j): retransmission times; entries for ended transactions or rescheduled timers
    /// are skipped when they come up.
    wheel: BinaryHeap<Reverse<(u64, u64)>>,
    counts: Counts,
}

impl Client {
    /// Non-INVITE transactions. `run` distinguishes this run's branches from another run's
    /// against the same server.
    #[cfg(test)]
    pub fn new(run: u32, timers: Timers) -> Client {
        Client::with_kind(run, "", false, timers)
    }

    /// `kind` tells this client's branches from those of the run's other clients (one letter,
    /// or none); `invite`: INVITE client transactions.
    pub fn with_kind(run: u32, kind: &str, invite: bool, timers: Timers) -> Client {
        Client {
            prefix: format!("z9hG4bK-sl{run:08x}{kind}-"),
            invite,
            reliable: false,
            timers,
            live: HashMap::new(),
            wheel: BinaryHeap::new(),
            counts: Counts::default(),
        }
    }

    /// Over a reliable transport (TCP): requests are never retransmitted; Timer F still ends
    /// them.
    pub fn over_reliable_transport(mut self) -> Client {
        self.reliable = true;
        self
    }

    /// The branch of request `j`.
    pub fn branch(&self, j: u64) -> String {
        format!("{}{j}", self.prefix)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Transactions still waiting for a final response.
    pub fn outstanding(&self) -> usize {
        self.live.len()
    }

    /// Request `j` (intended at `intended`) was just sent at `now`.
    pub fn sent(&mut self, j: u64, intended: u64, now: u64, request: Vec<u8>) {
        self.resent(j, intended, now, now, request);
    }

    /// Request `j` was just sent at `now` in place of one first sent at `origin` (and intended at
    /// `intended`): latencies of its final response count from those.
    pub fn resent(&mut self, j: u64, intended: u64, origin: u64, now: u64, request: Vec<u8>) {
        self.counts.sent += 1;
        let next = if self.reliable {
            now.saturating_add(self.timers.timeout())
        } else {
            now.saturating_add(self.timers.t1)
        };
        self.live.insert(
            j,
            Transaction {
                intended,
                sent: now,
                origin,
                interval: self.timers.t1,
                proceeding: false,
                next_retransmit: next,
                request,
            },
        );
        self.wheel.push(Reverse((next, j)));
    }

    /// A datagram arrived at `now`. `issued(j)`: whether this run already sent request `j`.
    pub fn received(
        &mut self,
        datagram: &[u8],
        now: u64,
        issued: impl Fn(u64) -> bool,
    ) -> Received {
        let Some((j, status)) = self.match_response(datagram) else {
            self.counts.unexpected += 1;
            return Received::Unexpected;
        };
        if !self.live.contains_key(&j) {
            if issued(j) {
                self.counts.late += 1;
                return Received::Late { j, status };
            }
            self.counts.unexpected += 1;
            return Received::Unexpected;
        }
        if status < 200 {
            self.counts.provisional += 1;
            if let Some(t) = self.live.get_mut(&j) {
                if self.invite {
                    // §17.1.1.2: in Proceeding an INVITE is not retransmitted. Timer B still
                    // bounds it here (a load test has to end: a call ringing for 64*T1 counts as
                    // timed out).
                    if !t.proceeding {
                        t.proceeding = true;
                        t.next_retransmit = t.sent.saturating_add(self.timers.timeout());
                        self.wheel.push(Reverse((t.next_retransmit, j)));
                    }
                } else {
                    // §17.1.2.2: in Proceeding, retransmissions continue every T2.
                    t.interval = self.timers.t2;
                }
            }
            return Received::Provisional;
        }
        let Some(t) = self.live.remove(&j) else {
            return Received::Unexpected;
        };
        if status < 300 {
            self.counts.ok += 1;
        } else {
            self.counts.failed += 1;
        }
        Received::Final(Completed {
            j,
            status,
            latency: now.saturating_sub(t.intended),
            service_time: now.saturating_sub(t.origin),
        })
    }

    /// The final response just received (a 3xx–6xx) was a challenge the shell answered: counted
    /// as `challenged` instead of `failed`.
    pub fn challenged(&mut self) {
        self.counts.failed -= 1;
        self.counts.challenged += 1;
    }

    /// Whether a response's top Via branch is one of this client's.
    pub fn claims(&self, datagram: &[u8]) -> bool {
        Message::parse_datagram(datagram)
            .ok()
            .and_then(|m| Some(m.top_via().ok()?.branch()?.starts_with(&self.prefix)))
            .unwrap_or(false)
    }

    fn match_response(&self, datagram: &[u8]) -> Option<(u64, u16)> {
        let msg = Message::parse_datagram(datagram).ok()?;
        let status = msg.status().filter(|s| (100..=699).contains(s))?;
        let via = msg.top_via().ok()?;
        let j = via
            .branch()?
            .strip_prefix(self.prefix.as_str())?
            .parse()
            .ok()?;
        Some((j, status))
    }

    /// Fires the timers due at or before `now`: calls `send` with each request to retransmit (Timer E),
    /// ends the transactions whose Timer F expired.
    pub fn poll(&mut self, now: u64, mut send: impl FnMut(&[u8])) {
        while let Some(&Reverse((when, j))) = self.wheel.peek() {
            if when > now {
                break;
            }
            self.wheel.pop();
            let Some(t) = self.live.get_mut(&j) else {
                continue;
            };
            if t.next_retransmit != when {
                continue;
            }
            // Timers are judged by when they were due, not by when the shell got to them: a late
            // poll fires the same retransmissions, and Timer F at the same point.
            if when >= t.sent.saturating_add(self.timers.timeout()) {
                self.live.remove(&j);
                self.counts.timed_out += 1;
                continue;
            }
            send(&t.request);
            self.counts.retransmissions += 1;
            // Timer E doubles up to T2 (and stays at T2 once a provisional response came); Timer
            // A doubles without a cap.
            t.interval = if self.invite {
                t.interval.saturating_mul(2)
            } else {
                t.interval.saturating_mul(2).min(self.timers.t2)
            };
            let deadline = t.sent.saturating_add(self.timers.timeout());
            t.next_retransmit = when.saturating_add(t.interval).min(deadline);
            self.wheel.push(Reverse((t.next_retransmit, j)));
        }
    }

    /// When `poll` next has something to do.
    pub fn next_timer(&self) -> Option<u64> {
        self.wheel.peek().map(|Reverse((when, _))| *when)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn response(branch: &str, status: u16) -> Vec<u8> {
        format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn responses_are_matched_by_branch_and_latency_starts_at_the_intended_time() {
        let mut c = Client::new(7, Timers::RFC3261);
        c.sent(0, 0, 30 * MS, b"req0".to_vec());
        c.sent(1, 10 * MS, 30 * MS, b"req1".to_vec());
        let b1 = c.branch(1);
        assert_eq!(
            c.received(&response(&b1, 100), 31 * MS, |_| true),
            Received::Provisional
        );
        assert_eq!(
            c.received(&response(&b1, 486), 40 * MS, |_| true),
            Received::Final(Completed {
                j: 1,
                status: 486,
                latency: 30 * MS,
                service_time: 10 * MS
            })
        );
        let b0 = c.branch(0);
        assert!(matches!(
            c.received(&response(&b0, 200), 41 * MS, |_| true),
            Received::Final(_)
        ));
        // A retransmitted answer, a branch from another run, one never sent, junk, a request.
        assert_eq!(
            c.received(&response(&b0, 200), 42 * MS, |_| true),
            Received::Late { j: 0, status: 200 }
        );
        let other = Client::new(8, Timers::RFC3261).branch(0);
        assert_eq!(
            c.received(&response(&other, 200), 42 * MS, |_| true),
            Received::Unexpected
        );
        assert_eq!(
            c.received(&response(&c.branch(5), 200), 42 * MS, |j| j < 2),
            Received::Unexpected
        );
        assert_eq!(
            c.received(b"\x00junk", 42 * MS, |_| true),
            Received::Unexpected
        );
        assert_eq!(
            c.received(&response(&b0, 200)[..20], 42 * MS, |_| true),
            Received::Unexpected
        );
        let req = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-sl00000007-0\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(c.received(req, 42 * MS, |_| true), Received::Unexpected);
        let counts = *c.counts();
        assert_eq!(
            (counts.sent, counts.ok, counts.failed, counts.provisional),
            (2, 1, 1, 1)
        );
        assert_eq!((counts.late, counts.unexpected), (1, 5));
        assert_eq!(c.outstanding(), 0);
    }

    #[test]
    fn a_challenge_moves_to_challenged_and_a_resent_request_keeps_the_first_times() {
        let mut c = Client::new(3, Timers::RFC3261);
        let mut a = Client::with_kind(3, "a", false, Timers::RFC3261);
        c.sent(4, 10 * MS, 12 * MS, b"req".to_vec());
        let Received::Final(done) = c.received(&response(&c.branch(4), 401), 15 * MS, |_| true)
        else {
            panic!("a final response");
        };
        c.challenged();
        assert_eq!((c.counts().failed, c.counts().challenged), (0, 1));
        // The resent request: latency from the first one's intended time, service time from its
        // first send (the shell resends as the challenge arrives, at the same `now`).
        let now = 15 * MS;
        a.resent(
            4,
            now - done.latency,
            now - done.service_time,
            now,
            b"req2".to_vec(),
        );
        assert!(a.claims(&response(&a.branch(4), 200)));
        assert!(!c.claims(&response(&a.branch(4), 200)));
        assert_eq!(
            a.received(&response(&a.branch(4), 200), 20 * MS, |_| true),
            Received::Final(Completed {
                j: 4,
                status: 200,
                latency: 10 * MS,
                service_time: 8 * MS
            })
        );
        assert_eq!((a.counts().sent, a.counts().ok, a.outstanding()), (1, 1, 0));
    }

    #[test]
    fn over_a_reliable_transport_only_timer_f_runs() {
        let mut c = Client::new(1, Timers::RFC3261).over_reliable_transport();
        c.sent(0, 0, 0, b"req".to_vec());
        assert_eq!(c.next_timer(), Some(32_000 * MS));
        c.poll(31_999 * MS, |_| panic!("no retransmission"));
        c.poll(32_000 * MS, |_| panic!("no retransmission"));
        let counts = *c.counts();
        assert_eq!((counts.timed_out, counts.retransmissions), (1, 0));
    }

    #[test]
    fn timer_e_doubles_to_t2_and_timer_f_ends_the_transaction() {
        let mut c = Client::new(1, Timers::RFC3261);
        c.sent(0, 0, 0, b"req".to_vec());
        let mut retransmitted = Vec::new();
        let mut now = 0;
        while c.outstanding() > 0 {
            now = c.next_timer().unwrap();
            c.poll(now, |r| {
                assert_eq!(r, b"req");
                retransmitted.push(now / MS);
            });
        }
        // 500 ms, then 1 s, 2 s, 4 s, 4 s, ... until 32 s.
        assert_eq!(
            retransmitted,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(now, 32_000 * MS);
        let counts = *c.counts();
        assert_eq!(
            (counts.sent, counts.timed_out, counts.retransmissions),
            (1, 1, 10)
        );
        assert_eq!(c.next_timer(), None);
    }

    #[test]
    fn a_late_poll_fires_the_same_timers() {
        let mut c = Client::new(1, Timers::RFC3261);
        c.sent(0, 0, 0, b"req".to_vec());
        let mut n = 0;
        // The shell stalls from 0 to 31.9 s, then 100 s: every retransmission due before Timer F
        // is still made, and Timer F ends the transaction.
        c.poll(31_900 * MS, |_| n += 1);
        assert_eq!((n, c.outstanding()), (10, 1));
        c.poll(100_000 * MS, |_| n += 1);
        assert_eq!((n, c.outstanding(), c.counts().timed_out), (10, 0, 1));
    }

    #[test]
    fn a_provisional_response_slows_retransmissions_to_t2() {
        let mut c = Client::new(1, Timers::RFC3261);
        c.sent(0, 0, 0, b"req".to_vec());
        c.received(&response(&c.branch(0), 100), 100 * MS, |_| true);
        let mut at = Vec::new();
        for _ in 0..3 {
            let now = c.next_timer().unwrap();
            c.poll(now, |_| at.push(now / MS));
        }
        assert_eq!(at, [500, 4500, 8500]);
    }

    #[test]
    fn a_final_response_stops_the_timers() {
        let mut c = Client::new(
            1,
            Timers {
                t1: 10 * MS,
                t2: 40 * MS,
            },
        );
        c.sent(0, 0, 0, b"req".to_vec());
        c.poll(10 * MS, |_| {});
        c.received(&response(&c.branch(0), 200), 15 * MS, |_| true);
        c.poll(10_000 * MS, |_| panic!("nothing to retransmit"));
        let counts = *c.counts();
        assert_eq!(
            (counts.ok, counts.retransmissions, counts.timed_out),
            (1, 1, 0)
        );
        assert_eq!(c.next_timer(), None);
    }

    #[test]
    fn timer_a_doubles_without_a_cap_until_a_provisional_response() {
        let mut c = Client::with_kind(1, "i", true, Timers::RFC3261);
        c.sent(0, 0, 0, b"INVITE".to_vec());
        let mut at = Vec::new();
        for _ in 0..4 {
            let now = c.next_timer().unwrap();
            c.poll(now, |_| at.push(now / MS));
        }
        // 500 ms, then 1, 2, 4 s later: past T2 (4 s), unlike Timer E.
        assert_eq!(at, [500, 1500, 3500, 7500]);
        let branch = c.branch(0);
        assert!(branch.starts_with("z9hG4bK-sl00000001i-"), "{branch}");
        assert!(c.claims(&response(&branch, 180)));
        assert!(!Client::new(1, Timers::RFC3261).claims(&response(&branch, 180)));
        c.received(&response(&branch, 180), 8_000 * MS, |_| true);
        // Proceeding: no more retransmissions; Timer B (64*T1) ends it.
        let mut n = 0;
        c.poll(31_999 * MS, |_| n += 1);
        assert_eq!((n, c.outstanding()), (0, 1));
        c.poll(32_000 * MS, |_| n += 1);
        assert_eq!((n, c.outstanding(), c.counts().timed_out), (0, 0, 1));
        assert_eq!(c.counts().retransmissions, 4);
    }
}
