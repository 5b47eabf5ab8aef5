//! Reads (the lookup script) and the data subscription's reports: the two ways the client keeps
//! the shards' caches usable without ever holding them up.
//!
//! Why reads do not go through the journal: a read changes nothing, so there is nothing to
//! replay and nothing to lose; what matters is an answer soon. A read goes to the verified
//! master, or, while no master is known, to a replica (`EVALSHA_RO` runs there: the lookup
//! script declares `no-writes`). A replica may lag the lost master by the last writes, which is
//! the best anyone can know until a master is verified again, and every cache is dropped then
//! anyway ([`Change::Resync`]). A read that no node answers within `request_timeout` of its
//! submission fails ([`super::Completion::ReadFailed`]): it is never held for the failover.
//!
//! Why a resync: a subscription misses what is published while it is down (pub/sub keeps
//! nothing), and it is down from the loss of a master until the next one is verified and
//! subscribed. Instead of tracking what may have been missed, the client reports that anything
//! may have been, and the shards drop their caches, which refill from Redis on a miss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::types::{Change, ConnId, ReadId, Rejected, Write};

/// One read waiting for a node, or sent on one.
#[derive(Debug)]
pub(super) struct Read {
    pub(super) id: ReadId,
    pub(super) read: Arc<Write>,
    /// Submission plus `request_timeout`: past it, the read fails.
    deadline: Instant,
    /// The connection it was sent on; `None` while it waits for one.
    pub(super) on: Option<ConnId>,
    /// The script was loaded again after a `-NOSCRIPT` for this read (once per read).
    pub(super) reloaded: bool,
}

/// The reads in submission order, which is also deadline order (every read gets the same
/// timeout), so that expiry removes from the front. Bounded by `capacity`.
#[derive(Debug)]
pub(super) struct Reads {
    reads: VecDeque<Read>,
    capacity: usize,
    next_id: u64,
}

impl Reads {
    pub(super) fn new(capacity: usize) -> Reads {
        Reads {
            reads: VecDeque::new(),
            capacity,
            next_id: 0,
        }
    }

    pub(super) fn push(&mut self, read: Arc<Write>, deadline: Instant) -> Result<ReadId, Rejected> {
        if self.reads.len() >= self.capacity {
            return Err(Rejected::TooManyReads);
        }
        let id = ReadId(self.next_id);
        self.next_id += 1;
        self.reads.push_back(Read {
            id,
            read,
            deadline,
            on: None,
            reloaded: false,
        });
        Ok(id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    pub(super) fn get_mut(&mut self, id: ReadId) -> Option<&mut Read> {
        let i = self.reads.binary_search_by_key(&id, |r| r.id).ok()?;
        self.reads.get_mut(i)
    }

    /// Removes a read that was answered; `None` if it already failed.
    pub(super) fn take(&mut self, id: ReadId) -> Option<Read> {
        let i = self.reads.binary_search_by_key(&id, |r| r.id).ok()?;
        self.reads.remove(i)
    }

    /// Reads sent on connections that `gone` says were given up wait for a node again.
    pub(super) fn release(&mut self, gone: impl Fn(ConnId) -> bool) {
        for r in &mut self.reads {
            if r.on.is_some_and(&gone) {
                r.on = None;
            }
        }
    }

    /// The reads waiting for a node.
    pub(super) fn waiting(&mut self) -> impl Iterator<Item = &mut Read> {
        self.reads.iter_mut().filter(|r| r.on.is_none())
    }

    pub(super) fn any_waiting(&self) -> bool {
        self.reads.iter().any(|r| r.on.is_none())
    }

    /// Removes the reads whose time is up, oldest first.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<ReadId> {
        let r = self.reads.front().filter(|r| r.deadline <= now)?;
        let id = r.id;
        self.reads.pop_front();
        Some(id)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.reads.front().map(|r| r.deadline)
    }
}

/// How many changes wait for the driver before they collapse into one [`Change::Resync`].
pub(super) const MAX_CHANGES: usize = 4096;

/// The subscription's reports, bounded: past [`MAX_CHANGES`] the queue is replaced by a resync,
/// which covers everything it held (a change is only ever lost into a resync).
#[derive(Debug, Default)]
pub(super) struct Changes {
    queue: VecDeque<Change>,
}

impl Changes {
    pub(super) fn published(&mut self, payload: String) {
        if self.queue.len() >= MAX_CHANGES {
            self.resync();
        } else {
            self.queue.push_back(Change::Published(payload));
        }
    }

    /// Everything queued before a resync is covered by it.
    pub(super) fn resync(&mut self) {
        self.queue.clear();
        self.queue.push_back(Change::Resync);
    }

    pub(super) fn pop(&mut self) -> Option<Change> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::ScriptId;
    use std::time::Duration;

    fn read() -> Arc<Write> {
        Arc::new(Write {
            script: ScriptId(1),
            keys: vec![b"k".to_vec()],
            args: vec![],
        })
    }

    #[test]
    fn reads_are_bounded_expire_in_order_and_wait_again_when_their_connection_goes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Reads::new(2);
        let a = r.push(read(), t0 + s).unwrap();
        let b = r.push(read(), t0 + 2 * s).unwrap();
        assert_eq!(r.push(read(), t0 + s), Err(Rejected::TooManyReads));
        r.waiting().for_each(|x| x.on = Some(ConnId(7)));
        assert!(!r.any_waiting());
        r.release(|c| c == ConnId(7));
        assert_eq!(r.waiting().count(), 2, "their connection was given up");
        assert!(r.take(b).is_some());
        assert!(r.take(b).is_none(), "answered once");
        assert_eq!(r.next_deadline(), Some(t0 + s));
        assert_eq!(r.pop_expired(t0), None);
        assert_eq!(r.pop_expired(t0 + s), Some(a));
        assert!(r.is_empty());
        assert!(r.take(a).is_none(), "a late answer completes nothing");
    }

    #[test]
    fn changes_collapse_into_a_resync_when_too_many() {
        let mut c = Changes::default();
        c.published("a".into());
        c.resync();
        c.published("b".into());
        assert_eq!(c.pop(), Some(Change::Resync), "the resync covers a");
        assert_eq!(c.pop(), Some(Change::Published("b".into())));
        assert_eq!(c.pop(), None);
        for n in 0..=MAX_CHANGES {
            c.published(n.to_string());
        }
        assert_eq!(c.pop(), Some(Change::Resync));
        assert_eq!(
            c.pop(),
            None,
            "nothing dropped without a resync covering it"
        );
    }
}
