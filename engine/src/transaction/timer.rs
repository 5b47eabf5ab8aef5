//! The shard's timer table: every running transaction timer as a (deadline, transaction, kind)
//! entry, ordered by deadline.
//!
//! Entries live in a `BTreeMap` keyed by deadline and an arming sequence number, so the earliest
//! deadline is first, equal deadlines fire in the order they were armed (deterministic replays),
//! and a timer is cancelled by removing its exact entry in O(log n). Exact removal rather than
//! lazy invalidation keeps the table's size equal to the number of running timers: a cancelled
//! Timer B would otherwise sit in a heap for 64*T1, and a busy shard cancels thousands a second.
//! The size is therefore bounded by the transaction tables' capacity times two (a transaction
//! runs at most one retransmission timer and one lifetime timer).

use std::collections::BTreeMap;
use std::time::Instant;

use super::TransactionId;

/// The transaction timers of RFC 3261 Table 4 and RFC 6026 (Timer C belongs to the proxy core,
/// §16.6 step 11, not to a transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// INVITE client, Calling: retransmit the INVITE (T1, doubling; unreliable transports only).
    A,
    /// INVITE client, Calling: give up (64*T1).
    B,
    /// INVITE client, Completed: absorb final-response retransmissions (≥ 32 s, or 0).
    D,
    /// Non-INVITE client: retransmit the request (T1 doubling to T2; unreliable only).
    E,
    /// Non-INVITE client: give up (64*T1).
    F,
    /// INVITE server, Completed: retransmit the non-2xx (T1 doubling to T2; unreliable only).
    G,
    /// INVITE server, Completed: give up waiting for the ACK (64*T1).
    H,
    /// INVITE server, Confirmed: absorb ACK retransmissions (T4, or 0).
    I,
    /// Non-INVITE server, Completed: absorb request retransmissions (64*T1, or 0).
    J,
    /// Non-INVITE client, Completed: absorb response retransmissions (T4, or 0).
    K,
    /// INVITE server, Accepted (RFC 6026): absorb INVITE retransmissions after a 2xx (64*T1).
    L,
    /// INVITE client, Accepted (RFC 6026): pass further 2xx to the TU (64*T1).
    M,
}

impl TimerKind {
    /// Retransmission timers run alongside a lifetime timer; a transaction has at most one of
    /// each kind of timer running at a time.
    pub(crate) fn is_retransmission(self) -> bool {
        matches!(self, TimerKind::A | TimerKind::E | TimerKind::G)
    }
}

/// A running timer, returned when it is armed and needed to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerToken {
    deadline: Instant,
    seq: u64,
}

impl TimerToken {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Deadlines mapped to (transaction, timer kind); one per shard.
#[derive(Debug, Default)]
pub struct TimerTable {
    entries: BTreeMap<(Instant, u64), (TransactionId, TimerKind)>,
    next_seq: u64,
}

impl TimerTable {
    pub fn new() -> TimerTable {
        TimerTable::default()
    }

    /// Arms `kind` for `id` to fire at `deadline`.
    pub fn schedule(
        &mut self,
        deadline: Instant,
        id: TransactionId,
        kind: TimerKind,
    ) -> TimerToken {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert((deadline, seq), (id, kind));
        TimerToken { deadline, seq }
    }

    /// Stops a timer; false if it had already fired or been cancelled.
    pub fn cancel(&mut self, token: TimerToken) -> bool {
        self.entries.remove(&(token.deadline, token.seq)).is_some()
    }

    /// When the shard must next call in, if any timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|&(deadline, _)| deadline)
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TransactionId, TimerKind)> {
        let entry = self.entries.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Running timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transaction::slab::SlotId;
    use crate::transaction::{ClientId, ServerId};

    fn server(index: u32) -> TransactionId {
        TransactionId::Server(ServerId(SlotId::new(index, 0)))
    }

    #[test]
    fn fires_in_deadline_order_then_arming_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = TimerTable::new();
        timers.schedule(t0 + ms(30), server(1), TimerKind::H);
        timers.schedule(t0 + ms(10), server(2), TimerKind::G);
        timers.schedule(t0 + ms(10), server(3), TimerKind::J);
        let client = TransactionId::Client(ClientId(SlotId::new(4, 0)));
        timers.schedule(t0 + ms(20), client, TimerKind::B);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(timers.pop_expired(t0 + ms(9)), None);
        assert_eq!(
            timers.pop_expired(t0 + ms(25)),
            Some((server(2), TimerKind::G))
        );
        assert_eq!(
            timers.pop_expired(t0 + ms(25)),
            Some((server(3), TimerKind::J))
        );
        assert_eq!(
            timers.pop_expired(t0 + ms(25)),
            Some((client, TimerKind::B))
        );
        assert_eq!(timers.pop_expired(t0 + ms(25)), None);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(30)));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn cancel_removes_exactly_one_entry() {
        let t0 = Instant::now();
        let mut timers = TimerTable::new();
        let a = timers.schedule(t0, server(1), TimerKind::A);
        let b = timers.schedule(t0, server(1), TimerKind::B);
        assert_eq!(a.deadline(), b.deadline());
        assert!(timers.cancel(a));
        assert!(!timers.cancel(a), "a second cancel finds nothing");
        assert_eq!(timers.pop_expired(t0), Some((server(1), TimerKind::B)));
        assert!(!timers.cancel(b), "a fired timer cannot be cancelled");
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }
}
