//! The node's life after start-up: running, draining (SIGTERM or SIGINT came), stopping.
//!
//! What a graceful stop does, and why:
//! - **Draining.** The shards close their TCP, TLS and WebSocket listeners (the kernel refuses new
//!   connections, so clients and load balancers move on at once) but keep reading UDP and the
//!   connections they have: responses to forwarded requests, ACKs, CANCELs and in-dialog
//!   requests (BYE) must still reach the transactions and calls in progress. A new out-of-dialog
//!   request is answered 503 with Retry-After rather than ignored: RFC 3263 §4.3 clients then try
//!   the next server at once, where silence would cost them their retransmission timers (Timer B
//!   or F, 32 s over UDP). `/ready` answers 503 from the first moment, for load balancers.
//! - **Stopping.** When no shard owes a request a final response any more
//!   ([`crate::core::ShardCore::in_progress`]), or the grace period is over, the shards stop;
//!   then the Redis journal is flushed (writes acknowledged, replays done) within what is left of
//!   the grace period (at least a second), the Redis thread stops, and the process exits 0.
//!   Transactions that only absorb retransmissions (Timer J, K: up to 32 s) are not waited for.
//! - A second SIGTERM or SIGINT stops at once.
//!
//! The state is atomics read by each shard on its 10 ms timer tick and by the admin thread: no
//! shard ever waits on it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// New requests are refused; transactions in progress finish.
    Draining,
    /// The shards stop at their next timer tick.
    Stopping,
}

/// Shared by the shards, the signal thread, the admin thread and the main thread.
#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    /// Per shard: bound to every listen address and serving.
    listening: Vec<AtomicBool>,
    /// Per shard, while draining: requests still owed an answer, as of its last tick.
    in_progress: Vec<AtomicUsize>,
    /// How long draining may last.
    grace: Duration,
}

impl Lifecycle {
    pub fn new(shards: usize, grace: Duration) -> Lifecycle {
        Lifecycle {
            phase: AtomicU8::new(RUNNING),
            listening: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            in_progress: (0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect(),
            grace,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            RUNNING => Phase::Running,
            DRAINING => Phase::Draining,
            _ => Phase::Stopping,
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A stop signal: the first one starts draining, the next one stops at once. Returns the
    /// phase entered.
    pub fn signal_stop(&self) -> Phase {
        match self
            .phase
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Phase::Draining,
            Err(_) => {
                self.stop();
                Phase::Stopping
            }
        }
    }

    /// Tells the shards to stop now.
    pub fn stop(&self) {
        self.phase.store(STOPPING, Ordering::Release);
    }

    /// Shard `shard` is bound and serving.
    pub fn set_listening(&self, shard: usize) {
        if let Some(flag) = self.listening.get(shard) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Shards bound and serving.
    pub fn listening_shards(&self) -> usize {
        self.listening
            .iter()
            .filter(|l| l.load(Ordering::Acquire))
            .count()
    }

    pub fn shards(&self) -> usize {
        self.listening.len()
    }

    /// What shard `shard` still owes, published on each tick while draining.
    pub fn set_in_progress(&self, shard: usize, requests: usize) {
        if let Some(n) = self.in_progress.get(shard) {
            n.store(requests, Ordering::Release);
        }
    }

    /// Every shard has reported, since draining began, that it owes nothing.
    pub fn drained(&self) -> bool {
        self.in_progress
            .iter()
            .all(|n| n.load(Ordering::Acquire) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_drains_second_stops() {
        let life = Lifecycle::new(2, Duration::from_secs(5));
        assert_eq!(life.phase(), Phase::Running);
        assert_eq!(life.signal_stop(), Phase::Draining);
        assert_eq!(life.phase(), Phase::Draining);
        assert_eq!(life.signal_stop(), Phase::Stopping);
        assert_eq!(life.phase(), Phase::Stopping);
    }

    #[test]
    fn drained_only_once_every_shard_reported_nothing_owed() {
        let life = Lifecycle::new(2, Duration::from_secs(5));
        assert!(!life.drained(), "no shard reported yet");
        life.set_in_progress(0, 0);
        assert!(!life.drained());
        life.set_in_progress(1, 3);
        assert!(!life.drained());
        life.set_in_progress(1, 0);
        assert!(life.drained());
    }

    #[test]
    fn listening_counts_shards() {
        let life = Lifecycle::new(3, Duration::from_secs(5));
        life.set_listening(0);
        life.set_listening(2);
        life.set_listening(7);
        assert_eq!(life.listening_shards(), 2);
    }
}
