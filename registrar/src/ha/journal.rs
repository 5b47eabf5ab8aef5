//! The write journal: every write not yet acknowledged, in submission order, plus the writes
//! acknowledged within `replay_window`, kept so that they can be replayed on a new master.
//!
//! Why keep acknowledged writes: Redis replicates asynchronously, so a write the master
//! acknowledged just before it died (or was paused, or cut off) may never reach the replica that
//! Sentinel promotes. The registrar already answered 200 OK for it. Replaying the recent ones on
//! the new master is harmless (the scripts are idempotent: RFC 3261 §10.3 Call-ID/CSeq ordering
//! is checked on the server) and closes that window.
//!
//! Layout: `pending` in submission order, of which the first `in_flight` are sent on the current
//! master connection (replies come back in order, so acknowledgements and hold expiries both
//! remove from the front); `acked` in acknowledgement order, which is also id order. Both share
//! `capacity`; nothing grows past it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::{Rejected, Write, WriteId};

#[derive(Debug)]
struct Pending {
    id: WriteId,
    write: Arc<Write>,
    /// Submission time plus `failover_hold`: past it, the write fails.
    deadline: Instant,
}

#[derive(Debug)]
struct Acked {
    id: WriteId,
    write: Arc<Write>,
    acked_at: Instant,
    /// Set when a master is given up within `replay_window` of this ack; cleared when a new
    /// master acknowledges the replay. Such an entry is kept however old it gets.
    needs_replay: bool,
}

/// A write to send next.
#[derive(Debug)]
pub(super) struct ToSend {
    pub(super) id: WriteId,
    pub(super) write: Arc<Write>,
    /// A replay of an already acknowledged write: its reply completes nothing.
    pub(super) replay: bool,
}

#[derive(Debug)]
pub(super) struct Journal {
    pending: VecDeque<Pending>,
    in_flight: usize,
    acked: VecDeque<Acked>,
    /// Ids in `acked` to resend on the current master before any pending write.
    replay: VecDeque<WriteId>,
    /// Entries of `acked` with `needs_replay` set (kept so that health reports are O(1): the
    /// Redis thread reads them on every turn).
    replays: usize,
    capacity: usize,
    next_id: u64,
}

impl Journal {
    pub(super) fn new(capacity: usize) -> Journal {
        Journal {
            pending: VecDeque::new(),
            in_flight: 0,
            acked: VecDeque::new(),
            replay: VecDeque::new(),
            replays: 0,
            capacity,
            next_id: 0,
        }
    }

    /// Appends a write that fails at `deadline` unless acknowledged before.
    pub(super) fn push(
        &mut self,
        write: Arc<Write>,
        deadline: Instant,
    ) -> Result<WriteId, Rejected> {
        if self.len() >= self.capacity {
            // Acknowledged writes are kept only in case the master dies soon: forgetting the
            // oldest one (not one a replay still needs) shortens the window under a burst
            // instead of refusing new writes. Only unacknowledged writes fill the journal.
            let spare = self.acked.iter().position(|a| !a.needs_replay);
            match spare {
                Some(i) => {
                    self.acked.remove(i);
                }
                None => return Err(Rejected::JournalFull),
            }
        }
        let id = WriteId(self.next_id);
        self.next_id += 1;
        self.pending.push_back(Pending {
            id,
            write,
            deadline,
        });
        Ok(id)
    }

    /// Forgets acknowledged writes older than `window` that no replay needs.
    pub(super) fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(a) = self.acked.front() {
            if a.needs_replay || a.acked_at + window > now {
                break;
            }
            self.acked.pop_front();
        }
    }

    /// The next write to send on the current master: replays first, then pending writes in order.
    pub(super) fn next_to_send(&mut self) -> Option<ToSend> {
        while let Some(id) = self.replay.pop_front() {
            if let Some(a) = self.find_acked(id).filter(|a| a.needs_replay) {
                return Some(ToSend {
                    id,
                    write: a.write.clone(),
                    replay: true,
                });
            }
        }
        let p = self.pending.get(self.in_flight)?;
        self.in_flight += 1;
        Some(ToSend {
            id: p.id,
            write: p.write.clone(),
            replay: false,
        })
    }

    /// A pending write was acknowledged. False if it is no longer pending (it failed by hold
    /// meanwhile): then nothing must be completed.
    pub(super) fn ack(&mut self, id: WriteId, now: Instant, keep_for_replay: bool) -> bool {
        let Ok(i) = self.pending.binary_search_by_key(&id, |p| p.id) else {
            return false;
        };
        if i < self.in_flight {
            self.in_flight -= 1;
        }
        let Some(p) = self.pending.remove(i) else {
            return false;
        };
        if keep_for_replay {
            let at = self.acked.partition_point(|a| a.id < id);
            self.acked.insert(
                at,
                Acked {
                    id,
                    write: p.write,
                    acked_at: now,
                    needs_replay: false,
                },
            );
        }
        true
    }

    /// A replay was acknowledged by the current master.
    pub(super) fn replayed(&mut self, id: WriteId, now: Instant) {
        if let Ok(i) = self.acked.binary_search_by_key(&id, |a| a.id) {
            let a = &mut self.acked[i];
            if a.needs_replay {
                a.needs_replay = false;
                self.replays -= 1;
            }
            a.acked_at = now;
        }
    }

    /// Removes the pending writes whose hold is over, oldest first.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<WriteId> {
        let p = self.pending.front().filter(|p| p.deadline <= now)?;
        let id = p.id;
        self.pending.pop_front();
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(id)
    }

    /// The master was given up at `now`: nothing is in flight any more, and every write it
    /// acknowledged within `window` must be replayed on the next one.
    pub(super) fn master_lost(&mut self, now: Instant, window: Duration) {
        self.in_flight = 0;
        self.replay.clear();
        for a in &mut self.acked {
            if a.acked_at + window >= now && !a.needs_replay {
                a.needs_replay = true;
                self.replays += 1;
            }
        }
    }

    /// A new master is verified: queue the replays.
    pub(super) fn master_verified(&mut self) {
        self.in_flight = 0;
        self.replay = self
            .acked
            .iter()
            .filter(|a| a.needs_replay)
            .map(|a| a.id)
            .collect();
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.deadline)
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len() + self.acked.len()
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn replay_len(&self) -> usize {
        self.replays
    }

    fn find_acked(&self, id: WriteId) -> Option<&Acked> {
        let i = self.acked.binary_search_by_key(&id, |a| a.id).ok()?;
        self.acked.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::ScriptId;

    fn w(n: u8) -> Arc<Write> {
        Arc::new(Write {
            script: ScriptId(0),
            keys: vec![vec![n]],
            args: vec![],
        })
    }

    fn ids(j: &mut Journal) -> Vec<(u64, bool)> {
        std::iter::from_fn(|| j.next_to_send())
            .map(|s| (s.id.0, s.replay))
            .collect()
    }

    #[test]
    fn bounded_by_unacknowledged_writes_and_replays() {
        let t0 = Instant::now();
        let mut j = Journal::new(2);
        let a = j.push(w(0), t0).unwrap();
        j.push(w(1), t0).unwrap();
        assert_eq!(j.push(w(2), t0), Err(Rejected::JournalFull));
        j.next_to_send();
        assert!(j.ack(a, t0, true));
        assert_eq!(j.len(), 2, "the acknowledged write is kept for the window");
        let c = j
            .push(w(2), t0)
            .expect("the oldest acknowledged write makes room");
        assert_eq!(j.len(), 2);
        // Once a master is lost, the writes to replay are not given up for new ones.
        j.next_to_send();
        assert!(j.ack(WriteId(1), t0, true));
        j.master_lost(t0, Duration::from_secs(5));
        assert_eq!(j.replay_len(), 1);
        assert_eq!(j.push(w(3), t0), Err(Rejected::JournalFull));
        assert!(c.0 > a.0);
    }

    #[test]
    fn sends_in_order_once_and_resends_after_loss() {
        let t0 = Instant::now();
        let mut j = Journal::new(10);
        for n in 0..3 {
            j.push(w(n), t0).unwrap();
        }
        assert_eq!(ids(&mut j), [(0, false), (1, false), (2, false)]);
        assert!(j.next_to_send().is_none());
        j.master_lost(t0, Duration::from_secs(5));
        j.master_verified();
        assert_eq!(ids(&mut j), [(0, false), (1, false), (2, false)]);
    }

    #[test]
    fn replays_only_acks_inside_the_window_before_pending_writes() {
        let t0 = Instant::now();
        let window = Duration::from_secs(5);
        let mut j = Journal::new(10);
        let old = j.push(w(0), t0).unwrap();
        let recent = j.push(w(1), t0).unwrap();
        j.push(w(2), t0 + Duration::from_secs(30)).unwrap();
        ids(&mut j);
        assert!(j.ack(old, t0, true));
        assert!(j.ack(recent, t0 + Duration::from_secs(4), true));
        let lost = t0 + Duration::from_secs(6);
        j.master_lost(lost, window);
        // Not pruned while it needs a replay, however long the wait for a master.
        j.prune(lost + Duration::from_secs(60), window);
        j.master_verified();
        assert_eq!(j.replay_len(), 1);
        assert_eq!(ids(&mut j), [(1, true), (2, false)]);
        j.replayed(recent, lost + Duration::from_secs(61));
        assert_eq!(j.replay_len(), 0);
    }

    #[test]
    fn expired_writes_leave_from_the_front_and_are_not_acked_later() {
        let t0 = Instant::now();
        let mut j = Journal::new(10);
        let a = j.push(w(0), t0 + Duration::from_secs(1)).unwrap();
        let b = j.push(w(1), t0 + Duration::from_secs(2)).unwrap();
        ids(&mut j);
        assert_eq!(j.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(j.pop_expired(t0 + Duration::from_secs(1)), Some(a));
        assert_eq!(j.pop_expired(t0 + Duration::from_secs(1)), None);
        assert!(!j.ack(a, t0, true), "a failed write is never acknowledged");
        assert!(j.ack(b, t0, true));
        assert_eq!(j.pending_len(), 0);
    }
}
