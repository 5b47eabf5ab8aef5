//! The Redis thread: one dedicated OS thread that owns every Redis connection and drives the
//! sans-IO [`HaClient`] with real sockets and a real clock.
//!
//! # Why a thread of its own
//!
//! The shards are glommio executors that must never block and never wait on another runtime's
//! I/O. Redis traffic is small next to SIP traffic (one script call per REGISTER), but it needs
//! TCP connections to several sentinels and servers, timers, and reconnection; putting that in
//! every shard would multiply connections and split the one journal that makes failover safe.
//! So one thread runs a tokio `current_thread` runtime that exists on that thread only, and the
//! shards talk to it through bounded queues:
//!
//! ```text
//!  shard i ──submit, submit_read──▶ [bounded queue, all shards] ──▶ Redis thread ──▶ HaClient
//!          ◀─try_completion──────── [bounded queue of shard i] ◀──         │
//!          ◀─try_change──────────── [bounded queue of shard i] ◀──         │
//!          ◀─one byte (wake-up)──── [UnixStream pair of shard i] ◀─────────┘
//! ```
//!
//! The thread is a thin shell: [`HaClient`] decides what to connect to, what to send, when to
//! give up, and when a write is acknowledged; the thread executes its [`Command`]s, turns socket
//! events and replies into [`Event`]s, calls [`HaClient::handle_timeout`] at
//! [`HaClient::poll_timeout`], and routes each [`Completion`] to the shard that submitted it.
//!
//! # Cache coherence
//!
//! In Redis mode each shard caches the AORs it owns. The client subscribes to the layout's
//! changes channel on the master; the thread routes each AOR published there to its owner shard
//! ([`crate::owner_shard`]) as [`CacheChange::Changed`], and a gap in the subscription (or a
//! payload that is not an AOR) to every shard as [`CacheChange::Resync`]: drop the whole cache,
//! which refills from Redis on a miss. A shard's change queue is bounded; when it is full the
//! change becomes a resync of that shard (a flag, so it needs no room): nothing blocks, and no
//! change is dropped without a resync that covers it. The node's own writes come back too (a
//! reload of an AOR it just wrote).
//!
//! # Never blocking, never hanging
//!
//! - Each connection is its own task (connect with a timeout, then a reader and a writer), so one
//!   stalled node cannot hold up another; requests are pipelined on a connection in the order the
//!   client sends them, and replies are matched to requests in that order (see `conn`).
//! - The client owns every deadline; the thread only adds a connect timeout so that an abandoned
//!   attempt cannot linger. A connection the client closes is aborted at once, and its late
//!   replies are dropped.
//! - [`ShardLink::submit`] and [`ShardLink::try_completion`] never block. A shard has at most
//!   `queue_capacity` writes in flight (submitted, outcome not yet taken), which bounds its
//!   completion queue: the thread can always deliver an outcome, none is ever dropped.
//! - [`RedisThread::shutdown`] (or drop) stops the thread within a bounded time: the loop checks
//!   the stop flag at every wake-up, answers every write it still holds with
//!   [`Outcome::Failed`], and gives the runtime [`SHUTDOWN_GRACE`] to drop its tasks.

mod conn;
mod driver;

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use tokio::sync::Notify;

use crate::Aor;
#[cfg(doc)]
use crate::ha::{Command, Completion, Event};
use crate::ha::{HaClient, HaConfig, HaConfigError, Health, Rejected, Reply, Write};

/// How long the runtime may take, after the loop has stopped, to drop its connection tasks (a
/// name resolution in progress runs on tokio's blocking pool and is not waited for longer).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What became of a write submitted through [`ShardLink::submit`] (or a read, through
/// [`ShardLink::submit_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A verified master executed the write: `reply` is the script's answer (which may be a
    /// script error, [`Reply::Error`]). The 200 OK may go out. For a read: the master or,
    /// while no master is known, a replica answered it.
    Acked(Reply),
    /// No master took the write within the failover hold, or the thread stopped: answer 503
    /// with this Retry-After. For a read: no node answered within the request timeout.
    Failed { retry_after_s: u32 },
    /// Refused at once: the journal is full (503), or the write names an unknown script.
    Rejected(Rejected),
}

/// What the data subscription tells a shard about its cache ([`ShardLink::try_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChange {
    /// This AOR (owned by the shard) changed in Redis: drop (or reload) its cached bindings.
    Changed(Aor),
    /// Changes may have been missed: drop every cached AOR.
    Resync,
}

/// Why [`ShardLink::submit`] refused a write; the shard answers 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The shard already has `queue_capacity` writes in flight.
    Full,
    /// The Redis thread has stopped.
    Gone,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full => f.write_str("too many Redis writes in flight on this shard"),
            SubmitError::Gone => f.write_str("the Redis thread has stopped"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Why [`RedisThread::start`] failed.
#[derive(Debug)]
pub enum StartError {
    /// `shards` or `queue_capacity` is zero.
    ZeroSize,
    Config(HaConfigError),
    /// The runtime, a wake-up socket pair or the thread could not be created.
    Io {
        what: &'static str,
        error: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::ZeroSize => f.write_str("the Redis thread needs a shard and a queue"),
            StartError::Config(e) => write!(f, "Redis HA configuration: {e}"),
            StartError::Io { what, error } => write!(f, "cannot create {what}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What the shards, the thread and its owner share.
struct Shared {
    stop: AtomicBool,
    /// Wakes the thread: a write was submitted, or it must stop. A notification sent while the
    /// thread is busy is kept (one permit), so none is lost and bursts coalesce.
    wake: Notify,
    health: Mutex<Health>,
    round_trips: Mutex<RoundTrips>,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, Health> {
        // A panic while the snapshot was written leaves a complete older snapshot: still usable.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn round_trips(&self) -> MutexGuard<'_, RoundTrips> {
        self.round_trips.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Upper bounds of [`RoundTrips`]: from a loopback Redis (well under a millisecond) to writes
/// held through a failover (seconds).
pub const ROUND_TRIP_BOUNDS: [Duration; 13] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_micros(2_500_000),
    Duration::from_secs(5),
];

/// How long acknowledged writes and answered reads took, from their submission by a shard to
/// the thread taking their completion (held writes included): a histogram over
/// [`ROUND_TRIP_BOUNDS`], for metrics. Kept by the thread, published every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTrips {
    pub bounds: &'static [Duration],
    /// Non-cumulative: `counts[i]` completions in `(bounds[i-1], bounds[i]]`; the last one past
    /// every bound.
    pub counts: [u64; ROUND_TRIP_BOUNDS.len() + 1],
    pub sum: Duration,
}

impl Default for RoundTrips {
    fn default() -> RoundTrips {
        RoundTrips {
            bounds: &ROUND_TRIP_BOUNDS,
            counts: [0; ROUND_TRIP_BOUNDS.len() + 1],
            sum: Duration::ZERO,
        }
    }
}

impl RoundTrips {
    fn observe(&mut self, took: Duration) {
        let bucket = ROUND_TRIP_BOUNDS.partition_point(|&b| b < took);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum = self.sum.saturating_add(took);
    }
}

/// A read-only view of the thread's state, for a monitoring thread: cheap to clone, `Send` and
/// `Sync`, valid after the thread stopped (it then shows the last snapshot).
#[derive(Clone)]
pub struct RedisObserver {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisObserver").finish_non_exhaustive()
    }
}

impl RedisObserver {
    /// The client's state as of the thread's last turn.
    pub fn health(&self) -> Health {
        self.shared.health().clone()
    }

    /// Round trips as of the thread's last turn.
    pub fn round_trips(&self) -> RoundTrips {
        *self.shared.round_trips()
    }
}

/// A write (or a read) on its way to the thread.
struct Submission {
    shard: usize,
    token: u64,
    write: Write,
    read: bool,
}

/// The thread's end of one shard's link.
struct ShardSide {
    completions: crossbeam_channel::Sender<(u64, Outcome)>,
    changes: crossbeam_channel::Sender<Aor>,
    /// Set when the shard must drop its whole cache; taken by [`ShardLink::try_change`].
    resync: Arc<AtomicBool>,
    /// Non-blocking; one byte after each batch of completions or changes.
    wakeup: UnixStream,
}

/// The running Redis thread. Dropping it stops the thread (see [`RedisThread::shutdown`]).
pub struct RedisThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for RedisThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThread")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl RedisThread {
    /// Starts the thread and returns one [`ShardLink`] per shard, in shard order.
    ///
    /// `queue_capacity` is the most writes and reads a shard may have in flight (submitted,
    /// outcome not yet taken with [`ShardLink::try_completion`]); it sizes the shard's
    /// completion queue and its change queue, and `shards × queue_capacity` sizes the
    /// submission queue. The configuration is checked here
    /// (`HaConfig::validate`); connecting happens on the thread, and failures there are retried
    /// with back-off and reported in [`RedisThread::health`], never fatal.
    pub fn start(
        config: HaConfig,
        shards: usize,
        queue_capacity: usize,
    ) -> Result<(RedisThread, Vec<ShardLink>), StartError> {
        if shards == 0 || queue_capacity == 0 {
            return Err(StartError::ZeroSize);
        }
        let retry_after_s = config.retry_after_s;
        let connect_timeout = config.request_timeout;
        let client = HaClient::new(config, Instant::now()).map_err(StartError::Config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|error| StartError::Io {
                what: "the Redis thread's runtime",
                error,
            })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            health: Mutex::new(client.health()),
            round_trips: Mutex::new(RoundTrips::default()),
        });
        let (submit_tx, submit_rx) =
            crossbeam_channel::bounded(shards.saturating_mul(queue_capacity));
        let mut links = Vec::with_capacity(shards);
        let mut sides = Vec::with_capacity(shards);
        for shard in 0..shards {
            let io = |error| StartError::Io {
                what: "a shard's wake-up socket pair",
                error,
            };
            let (thread_end, shard_end) = UnixStream::pair().map_err(io)?;
            thread_end.set_nonblocking(true).map_err(io)?;
            let (completions_tx, completions_rx) = crossbeam_channel::bounded(queue_capacity);
            let (changes_tx, changes_rx) = crossbeam_channel::bounded(queue_capacity);
            let resync = Arc::new(AtomicBool::new(false));
            sides.push(ShardSide {
                completions: completions_tx,
                changes: changes_tx,
                resync: resync.clone(),
                wakeup: thread_end,
            });
            links.push(ShardLink {
                shard,
                submissions: submit_tx.clone(),
                completions: completions_rx,
                changes: changes_rx,
                resync,
                in_flight: Cell::new(0),
                capacity: queue_capacity,
                wakeup: Some(shard_end),
                shared: shared.clone(),
            });
        }
        let driver = driver::Driver::new(
            client,
            shared.clone(),
            submit_rx,
            sides,
            retry_after_s,
            connect_timeout,
        );
        let thread = std::thread::Builder::new()
            .name("sipshard-redis".into())
            .spawn(move || {
                runtime.block_on(driver.run());
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
                tracing::info!("redis thread stopped");
            })
            .map_err(|error| StartError::Io {
                what: "the Redis thread",
                error,
            })?;
        Ok((
            RedisThread {
                shared,
                thread: Some(thread),
            },
            links,
        ))
    }

    /// The client's state as of the thread's last turn (master, journal, counters, last error).
    pub fn health(&self) -> Health {
        self.shared.health().clone()
    }

    /// A view of the thread's health and round trips for another thread (metrics, readiness).
    pub fn observer(&self) -> RedisObserver {
        RedisObserver {
            shared: self.shared.clone(),
        }
    }

    /// Waits, until `deadline` at the latest, for the journal to hold no write a master has not
    /// acknowledged and none waiting to be replayed: the graceful stop, before
    /// [`RedisThread::shutdown`] fails what is left. True when it emptied in time. Reads the
    /// snapshot the thread publishes every turn, every 20 ms.
    pub fn flush(&self, deadline: Instant) -> bool {
        loop {
            let (pending, replays) = {
                let health = self.shared.health();
                (health.pending_writes, health.replays_pending)
            };
            if pending == 0 && replays == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    pending,
                    replays,
                    "redis journal not flushed in time; failing what is left"
                );
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Stops the thread and waits for it: every write it still holds is answered
    /// [`Outcome::Failed`], connections are dropped, and it ends within about
    /// [`SHUTDOWN_GRACE`] of its next wake-up (immediate: the stop wakes it).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if thread.join().is_err() {
            tracing::error!("the redis thread panicked");
        }
    }
}

impl Drop for RedisThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One shard's link to the Redis thread. `Send`, not `Sync`: move it into the shard's thread.
///
/// # Waiting for completions
///
/// Take the wake-up stream once ([`ShardLink::take_wakeup`]) and wait for it to be readable
/// (glommio: `set_nonblocking(true)`, then `glommio::net::UnixStream::from_raw_fd` of its
/// `into_raw_fd()`, which hands over ownership of the socket, then `read`). Whenever it is,
/// read what is there (any number of bytes: wake-ups coalesce), then call
/// [`ShardLink::try_change`] and [`ShardLink::try_completion`] until each returns `None`. The
/// thread queues completions and changes before it writes the byte, so a wake-up never arrives
/// ahead of them.
///
/// # Cache changes
///
/// Apply every [`CacheChange`] to the shard's cache: `Changed(aor)` drops that AOR's cached
/// bindings, `Resync` drops them all. Both only ever remove, so their order does not matter and
/// a spurious one costs a read from Redis. A read that was submitted before a change of its AOR
/// (or a resync) and completes after it may carry what the change replaced: do not cache such a
/// result (keep a per-AOR or per-shard generation, bumped by each change, and cache a read's
/// result only if the generation it was submitted under is still current).
///
/// End of stream on the wake-up means the thread has stopped: take the completions still
/// queued; a write still in flight after that will never complete (answer it 503).
pub struct ShardLink {
    shard: usize,
    submissions: crossbeam_channel::Sender<Submission>,
    completions: crossbeam_channel::Receiver<(u64, Outcome)>,
    changes: crossbeam_channel::Receiver<Aor>,
    resync: Arc<AtomicBool>,
    /// Writes and reads submitted whose outcome this shard has not taken yet. At most `capacity`, and
    /// every outcome in `completions` is one of them: so `completions` (capacity `capacity`)
    /// always has room for the thread's next outcome for this shard.
    in_flight: Cell<usize>,
    capacity: usize,
    wakeup: Option<UnixStream>,
    shared: Arc<Shared>,
}

impl fmt::Debug for ShardLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardLink")
            .field("shard", &self.shard)
            .field("in_flight", &self.in_flight.get())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ShardLink {
    /// Hands a write to the thread; its [`Outcome`] comes back with `token` through
    /// [`ShardLink::try_completion`]. Never blocks: [`SubmitError::Full`] when this shard already
    /// has `queue_capacity` writes in flight, [`SubmitError::Gone`] when the thread has stopped.
    pub fn submit(&self, token: u64, write: Write) -> Result<(), SubmitError> {
        self.send(token, write, false)
    }

    /// Hands a read (a read-only script, the layout's lookup) to the thread; its [`Outcome`]
    /// comes back with `token` through [`ShardLink::try_completion`], like a write's, and counts
    /// against the same `queue_capacity`. It goes to the verified master, or to a replica while
    /// no master is known; it is never held or replayed: [`Outcome::Acked`] with the script's
    /// reply, or [`Outcome::Failed`] within about the request timeout.
    pub fn submit_read(&self, token: u64, read: Write) -> Result<(), SubmitError> {
        self.send(token, read, true)
    }

    fn send(&self, token: u64, write: Write, read: bool) -> Result<(), SubmitError> {
        if self.in_flight.get() >= self.capacity {
            return Err(SubmitError::Full);
        }
        let submission = Submission {
            shard: self.shard,
            token,
            write,
            read,
        };
        match self.submissions.try_send(submission) {
            Ok(()) => {
                self.in_flight.set(self.in_flight.get() + 1);
                self.shared.wake.notify_one();
                Ok(())
            }
            // Cannot happen while each shard keeps to its capacity (the queue holds
            // shards × capacity), but a full queue is an answer, not a panic.
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Gone),
        }
    }

    /// The next outcome for this shard, if one is queued. Never blocks.
    pub fn try_completion(&self) -> Option<(u64, Outcome)> {
        let done = self.completions.try_recv().ok()?;
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        Some(done)
    }

    /// The next change to this shard's cache, if any (see the type's documentation). Never
    /// blocks. A pending resync comes first: it covers every change queued before it.
    pub fn try_change(&self) -> Option<CacheChange> {
        if self.resync.swap(false, Ordering::AcqRel) {
            return Some(CacheChange::Resync);
        }
        self.changes.try_recv().ok().map(CacheChange::Changed)
    }

    /// Writes and reads submitted whose outcome has not been taken yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// The shard's end of its wake-up socket pair (see the type's documentation); `None` once
    /// taken.
    pub fn take_wakeup(&mut self) -> Option<UnixStream> {
        self.wakeup.take()
    }
}
