//! The Redis HA client as a state machine: which node is the master, and which registrar writes
//! it has acknowledged. No sockets, no clock, no threads: the Redis thread (the driver) owns the
//! connections and calls in with events and `now`; the client answers with commands, completions
//! and the next instant it wants to be woken at, in the style of quinn-proto.
//!
//! # Why it is shaped like this
//!
//! A registrar answers 200 OK to a REGISTER only once the binding is stored (RFC 3261 §10.3 step
//! 8), so "acknowledged" must mean "on the master that survives". Redis replicates
//! asynchronously and Sentinel fails over in seconds; the measured traps
//! (`shared/notes/redis-sentinel-behaviour.md`) are a paused master that wakes up still writable
//! for ~10 s, an old master restarted empty and writable, and replies that arrive from a master
//! the client already gave up. Hence:
//!
//! - **The master is who a quorum of sentinels names** in one round of
//!   `SENTINEL get-master-addr-by-name` (not the first sentinel to answer, not `ROLE`), and `ROLE`
//!   on that node must then say `master` (the promotion is done) before a write goes to it. The
//!   sentinels are asked again every `check_interval` while writing, at once on a
//!   `+switch-master` hint, and after a disconnect, a timeout, `-READONLY`, `-LOADING`,
//!   `-NOREPLICAS`, `-MASTERDOWN`, `-NOAUTH` or a short `WAIT`. A master no quorum has
//!   confirmed for `master_lease` is dropped. (Redis Sentinel client guidelines,
//!   <https://redis.io/docs/reference/sentinel-clients/>.)
//! - **`-NOSCRIPT` is not a topology error**: the master's script cache was flushed under the
//!   connection (`SCRIPT FLUSH`). The client loads the scripts again on that connection and
//!   resends, in order, every write from the one refused on (`Master::epoch`: replies to writes
//!   sent before the reload are ignored, since those writes are sent again after it; the scripts
//!   are idempotent). A read is resent once after loading its script. A master that keeps
//!   answering `-NOSCRIPT` is given up after [`MAX_SCRIPT_RELOADS`].
//! - **A connection given up is gone**: its id is never reused, every write in flight on it is
//!   unacknowledged (it goes back to the journal and is replayed elsewhere), and a late reply on
//!   it is counted and ignored.
//! - **The journal** ([`journal`]) keeps every unacknowledged write in order, holds them up to
//!   `failover_hold` while no master is known, replays them in order on the next one, and also
//!   replays the writes acknowledged within `replay_window` before the master was lost. The
//!   scripts are idempotent, so a replay is harmless. It is bounded: full means
//!   [`Rejected::JournalFull`], a 503 at once.
//! - **Without sentinels** (Flexisip's deployment) the client starts at the configured server,
//!   follows `INFO replication` to the master, refreshes the replica list every `check_interval`,
//!   and on loss tries the known nodes until one says it is the master. This mode cannot tell a
//!   restarted empty master from the real one; Sentinel mode can.
//! - **Reads** ([`HaClient::submit_read`], [`reads`]) go to the verified master, else to a
//!   replica (`EVALSHA_RO`), learnt from `SENTINEL replicas` (Direct: the master's `INFO
//!   replication`), never through the journal: answered within `request_timeout` or failed.
//! - **The data subscription**: on the verified master, a connection of its own subscribes to
//!   `changes_channel`; each message is reported ([`Change::Published`]), and so is each
//!   (re)subscription ([`Change::Resync`]), since messages published while it was down are lost.
//!   It is closed with the master and opened again (with back-off) on the next one.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     while let Some(cmd) = client.poll_command() { /* Connect, Send, Close */ }
//!     while let Some(done) = client.poll_completion() { /* answer the shard */ }
//!     while let Some(change) = client.poll_change() { /* tell the caches */ }
//!     wait for: a connection event, a write from a shard, or client.poll_timeout();
//!     client.handle(event, now) | client.submit(write, now) | client.submit_read(read, now)
//!         | client.handle_timeout(now);
//! }
//! ```
//! Every request has a deadline (`request_timeout`, plus `wait_timeout` for `WAIT`), so nothing
//! waits forever; reconnections back off exponentially with seeded jitter ([`backoff`]).

mod backoff;
mod config;
mod conn;
mod journal;
mod reads;
mod tracker;
mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use backoff::{Backoff, SplitMix64};
use conn::{Conns, Purpose, Role, Unroutable};
use journal::Journal;
use reads::{Changes, Reads};
use tracker::{Candidates, NodeRole, Round, Verdict, Vote};

pub use config::{Credentials, Discovery, HaConfig, HaConfigError};
pub use types::{
    Change, Command, Completion, ConnId, ConnKind, Event, ReadId, RedisCommand, Rejected, Reply,
    RequestId, Script, ScriptId, Write, WriteId,
};

/// The channel whose messages hint that the sentinels switched masters.
const SWITCH_MASTER: &str = "+switch-master";
/// Script reloads after `-NOSCRIPT` allowed per verified master before it is given up.
pub const MAX_SCRIPT_RELOADS: u32 = 3;

/// The Redis HA client. See the module documentation.
#[derive(Debug)]
pub struct HaClient {
    config: HaConfig,
    conns: Conns,
    journal: Journal,
    reads: Reads,
    /// At most one entry per write in the journal and per read, so bounded by
    /// `journal_capacity + max_reads`.
    completions: VecDeque<Completion>,
    changes: Changes,
    /// The subscription to `changes_channel`, while a master is verified and a channel is set.
    data_sub: Option<DataSub>,
    /// Replicas to read from while no master is known (Sentinel: `SENTINEL replicas`, asked
    /// every `check_interval`; Direct: the master's `INFO replication`). At most `MAX_KNOWN`.
    replicas: Vec<Arc<str>>,
    /// The connection reads use while no master is known (to `replicas`, in turn).
    replica: Link,
    next_replica: usize,
    /// When `SENTINEL replicas` is asked next.
    next_replicas_at: Instant,
    rng: SplitMix64,
    phase: Phase,
    discovery: DiscoveryState,
    /// The next sentinel round (Direct: the next probe, or `INFO` on the master).
    next_check_at: Instant,
    /// The last server given up, and when it may be tried again.
    server_retry: Option<(Arc<str>, Instant)>,
    server_backoff: Backoff,
    last_error: Option<HaError>,
    counters: Counters,
}

#[derive(Debug)]
enum Phase {
    /// No master: asking sentinels or probing nodes.
    Resolving,
    /// A connection to the candidate is open; `ROLE` (Direct: `INFO replication`) will tell.
    Verifying {
        conn: ConnId,
        addr: Arc<str>,
    },
    Master(Master),
}

#[derive(Debug)]
struct Master {
    conn: ConnId,
    addr: Arc<str>,
    /// The last time a quorum of sentinels (Direct: `INFO`) confirmed it.
    confirmed_at: Instant,
    writes_in_flight: usize,
    /// Writes answered, waiting for the `WAIT` sent after them.
    unconfirmed: VecDeque<(WriteId, Reply, bool)>,
    /// Direct mode: an `INFO replication` is in flight.
    info_in_flight: bool,
    /// Incremented when the scripts are loaded again after `-NOSCRIPT`: writes carry the epoch
    /// they were sent in, and a reply to an older one is ignored (the write is sent again).
    epoch: u32,
}

/// The data subscription on the verified master (`addr`).
#[derive(Debug)]
struct DataSub {
    conn: Option<ConnId>,
    /// The `SUBSCRIBE` was confirmed on `conn`.
    subscribed: bool,
    retry_at: Instant,
    backoff: Backoff,
}

#[derive(Debug)]
enum DiscoveryState {
    Sentinel(Sentinels),
    Direct(Candidates),
}

#[derive(Debug)]
struct Sentinels {
    master_name: String,
    quorum: usize,
    credentials: Credentials,
    links: Vec<Link>,
    round: Option<Round>,
    next_round_id: u64,
    /// The subscriber, on one sentinel at a time (`Link::addr` of `links[pubsub_index]`).
    pubsub: Link,
    pubsub_index: usize,
}

#[derive(Debug)]
struct Link {
    addr: Arc<str>,
    conn: Option<ConnId>,
    connected: bool,
    retry_at: Instant,
    backoff: Backoff,
}

impl Link {
    fn new(addr: Arc<str>, now: Instant) -> Link {
        Link {
            addr,
            conn: None,
            connected: false,
            retry_at: now,
            backoff: Backoff::default(),
        }
    }
}

/// Where the client stands, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HaState,
    /// The verified master, if any.
    pub master: Option<Arc<str>>,
    /// Writes not yet acknowledged (held while `state` is not `Ready`).
    pub pending_writes: usize,
    /// Acknowledged writes waiting to be replayed on a new master.
    pub replays_pending: usize,
    /// Everything the journal holds, against `journal_capacity`.
    pub journal_len: usize,
    /// The last problem seen since a master was last verified.
    pub last_error: Option<HaError>,
    /// The data subscription is confirmed on the master (see [`HaConfig::changes_channel`]).
    pub subscribed: bool,
    /// Replicas known for reads while no master is known.
    pub replicas: Vec<Arc<str>>,
    pub counters: Counters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaState {
    Resolving,
    Verifying,
    Ready,
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub submitted: u64,
    pub acked: u64,
    pub failed: u64,
    pub rejected: u64,
    pub replayed: u64,
    pub masters_verified: u64,
    pub masters_lost: u64,
    pub request_timeouts: u64,
    pub connections_given_up: u64,
    pub late_replies_ignored: u64,
    pub auth_failures: u64,
    pub no_quorum_rounds: u64,
    pub switch_master_hints: u64,
    pub reads: u64,
    pub reads_failed: u64,
    /// Reads sent to a replica because no master was known.
    pub replica_reads: u64,
    /// Messages on the changes channel.
    pub changes: u64,
    /// Subscriptions confirmed after a gap, and change queues that overflowed.
    pub resyncs: u64,
    /// Scripts loaded again after `-NOSCRIPT` on the master.
    pub script_reloads: u64,
}

/// A problem worth a log line; kept in [`Health::last_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaError {
    ConnectFailed {
        addr: Arc<str>,
    },
    Disconnected {
        addr: Arc<str>,
    },
    Timeout {
        addr: Arc<str>,
    },
    /// `AUTH` was refused: wrong password or user. Retried with back-off, never fatal.
    AuthFailed {
        addr: Arc<str>,
        message: String,
    },
    /// No address was named by `needed` sentinels in a round.
    NoQuorum {
        answered: usize,
        agreeing: usize,
        needed: usize,
    },
    /// The candidate says it is not the master (or did not say what it is).
    NotMaster {
        addr: Arc<str>,
    },
    /// The sentinels now name another master.
    MasterChanged {
        from: Arc<str>,
        to: Arc<str>,
    },
    /// An error reply that means "not the master to write to now" (`-READONLY`, `-LOADING`..),
    /// or a script that could not be loaded.
    ServerError {
        addr: Arc<str>,
        message: String,
    },
    /// `WAIT` counted fewer replicas than `wait_replicas`.
    WaitShort {
        addr: Arc<str>,
        acked: i64,
        needed: u32,
    },
    /// No confirmation of the master within `master_lease`.
    LeaseExpired {
        addr: Arc<str>,
    },
    /// The driver answered requests out of order.
    OutOfOrderReply {
        addr: Arc<str>,
    },
}

impl fmt::Display for HaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaError::ConnectFailed { addr } => write!(f, "cannot connect to {addr}"),
            HaError::Disconnected { addr } => write!(f, "connection to {addr} lost"),
            HaError::Timeout { addr } => write!(f, "request to {addr} timed out"),
            HaError::AuthFailed { addr, message } => {
                write!(f, "authentication refused by {addr}: {message}")
            }
            HaError::NoQuorum {
                answered,
                agreeing,
                needed,
            } => write!(
                f,
                "sentinels disagree or are unreachable: {answered} named a master, \
                 at most {agreeing} the same one, {needed} needed"
            ),
            HaError::NotMaster { addr } => write!(f, "{addr} is not a master"),
            HaError::MasterChanged { from, to } => write!(f, "master moved from {from} to {to}"),
            HaError::ServerError { addr, message } => write!(f, "{addr} answered {message}"),
            HaError::WaitShort {
                addr,
                acked,
                needed,
            } => write!(f, "{addr}: WAIT counted {acked} replicas, {needed} needed"),
            HaError::LeaseExpired { addr } => write!(
                f,
                "no quorum of sentinels has confirmed {addr} recently; not writing to it"
            ),
            HaError::OutOfOrderReply { addr } => write!(f, "{addr}: reply out of order"),
        }
    }
}

impl std::error::Error for HaError {}

/// Error replies after which the node is not (or no longer) a master to write to.
fn is_topology_error(message: &str) -> bool {
    let code = message.split(' ').next().unwrap_or("");
    matches!(
        code,
        "READONLY" | "LOADING" | "NOREPLICAS" | "MASTERDOWN" | "NOAUTH" | "BUSY"
    )
}

/// `-NOSCRIPT`: the script cache of the node does not hold the script (flushed, or never loaded
/// there, as on a replica the client reads from).
fn is_noscript(message: &str) -> bool {
    message.split(' ').next() == Some("NOSCRIPT")
}

impl HaClient {
    pub fn new(config: HaConfig, now: Instant) -> Result<HaClient, HaConfigError> {
        config.validate()?;
        let discovery = match &config.discovery {
            Discovery::Sentinel {
                sentinels,
                master_name,
                quorum,
                credentials,
            } => DiscoveryState::Sentinel(Sentinels {
                master_name: master_name.clone(),
                quorum: *quorum,
                credentials: credentials.clone(),
                links: sentinels
                    .iter()
                    .map(|a| Link::new(a.clone(), now))
                    .collect(),
                round: None,
                next_round_id: 0,
                pubsub: Link::new(sentinels[0].clone(), now),
                pubsub_index: 0,
            }),
            Discovery::Direct { server } => DiscoveryState::Direct(Candidates::new(server.clone())),
        };
        let mut client = HaClient {
            journal: Journal::new(config.journal_capacity),
            reads: Reads::new(config.max_reads),
            changes: Changes::default(),
            data_sub: None,
            replicas: Vec::new(),
            replica: Link::new(Arc::from(""), now),
            next_replica: 0,
            next_replicas_at: now,
            rng: SplitMix64::new(config.seed),
            config,
            conns: Conns::default(),
            completions: VecDeque::new(),
            phase: Phase::Resolving,
            discovery,
            next_check_at: now,
            server_retry: None,
            server_backoff: Backoff::default(),
            last_error: None,
            counters: Counters::default(),
        };
        client.drive(now);
        Ok(client)
    }

    /// Accepts a write; its [`Completion`] comes later from [`HaClient::poll_completion`].
    pub fn submit(&mut self, write: Write, now: Instant) -> Result<WriteId, Rejected> {
        if usize::from(write.script.0) >= self.config.scripts.len() {
            return Err(Rejected::UnknownScript(write.script));
        }
        self.journal.prune(now, self.config.replay_window);
        match self
            .journal
            .push(Arc::new(write), now + self.config.failover_hold)
        {
            Ok(id) => {
                self.counters.submitted += 1;
                self.drive(now);
                Ok(id)
            }
            Err(e) => {
                self.counters.rejected += 1;
                Err(e)
            }
        }
    }

    /// Accepts a read (a read-only script: `EVALSHA_RO`); its [`Completion::ReadDone`] or
    /// [`Completion::ReadFailed`] comes within `request_timeout`. It goes to the verified
    /// master, else to a replica; it is never journaled, held or replayed.
    pub fn submit_read(&mut self, read: Write, now: Instant) -> Result<ReadId, Rejected> {
        if usize::from(read.script.0) >= self.config.scripts.len() {
            return Err(Rejected::UnknownScript(read.script));
        }
        match self
            .reads
            .push(Arc::new(read), now + self.config.request_timeout)
        {
            Ok(id) => {
                self.counters.reads += 1;
                self.drive(now);
                Ok(id)
            }
            Err(e) => {
                self.counters.rejected += 1;
                Err(e)
            }
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected { conn } => self.on_connected(conn, now),
            Event::ConnectFailed { conn } => {
                self.give_up(conn, now, |addr| HaError::ConnectFailed { addr })
            }
            Event::Disconnected { conn } => {
                self.give_up(conn, now, |addr| HaError::Disconnected { addr })
            }
            Event::Reply {
                conn,
                request,
                reply,
            } => match self.conns.take_reply(conn, request) {
                Ok((purpose, role)) => self.on_reply(conn, role, purpose, reply, now),
                Err(Unroutable::UnknownConn) => self.counters.late_replies_ignored += 1,
                Err(Unroutable::OutOfOrder) => {
                    self.give_up(conn, now, |addr| HaError::OutOfOrderReply { addr })
                }
            },
            Event::Message {
                conn,
                channel,
                payload,
            } => self.on_message(conn, &channel, &payload, now),
        }
        self.drive(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(conn) = self.conns.expired(now) {
            self.counters.request_timeouts += 1;
            self.give_up(conn, now, |addr| HaError::Timeout { addr });
        }
        while let Some(write) = self.journal.pop_expired(now) {
            self.counters.failed += 1;
            self.completions.push_back(Completion::Failed {
                write,
                retry_after_s: self.config.retry_after_s,
            });
        }
        while let Some(read) = self.reads.pop_expired(now) {
            self.counters.reads_failed += 1;
            self.completions.push_back(Completion::ReadFailed {
                read,
                retry_after_s: self.config.retry_after_s,
            });
        }
        if let Phase::Master(m) = &self.phase {
            if m.confirmed_at + self.config.master_lease <= now {
                let addr = m.addr.clone();
                self.lose_master(now, HaError::LeaseExpired { addr });
            }
        }
        self.drive(now);
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.conns.pop_command()
    }

    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// The next report of the data subscription (a message, or a resync).
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop()
    }

    /// When [`HaClient::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = [
            self.conns.next_deadline(),
            self.journal.next_deadline(),
            self.reads.next_deadline(),
            Some(self.next_check_at),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let Phase::Master(m) = &self.phase {
            consider(m.confirmed_at + self.config.master_lease);
        } else if self.replica.conn.is_none()
            && !self.replicas.is_empty()
            && self.reads.any_waiting()
        {
            // Past: `pump_reads` has opened the connection already, so this is not a busy loop.
            consider(self.replica.retry_at);
        }
        if let Some(d) = self.data_sub.as_ref().filter(|d| d.conn.is_none()) {
            consider(d.retry_at);
        }
        if let DiscoveryState::Sentinel(s) = &self.discovery {
            for link in s.links.iter().chain([&s.pubsub]) {
                if link.conn.is_none() {
                    consider(link.retry_at);
                }
            }
        }
        at
    }

    pub fn health(&self) -> Health {
        let (state, master) = match &self.phase {
            Phase::Resolving => (HaState::Resolving, None),
            Phase::Verifying { .. } => (HaState::Verifying, None),
            Phase::Master(m) => (HaState::Ready, Some(m.addr.clone())),
        };
        Health {
            state,
            master,
            pending_writes: self.journal.pending_len(),
            replays_pending: self.journal.replay_len(),
            journal_len: self.journal.len(),
            last_error: self.last_error.clone(),
            subscribed: self.data_sub.as_ref().is_some_and(|d| d.subscribed),
            replicas: self.replicas.clone(),
            counters: self.counters,
        }
    }

    fn addr_of(&self, conn: ConnId) -> Option<Arc<str>> {
        self.conns.get(conn).map(|c| c.addr.clone())
    }

    fn auth(&mut self, conn: ConnId, credentials: &Credentials, now: Instant) {
        if let Some(password) = &credentials.password {
            let cmd = RedisCommand::Auth {
                username: credentials.username.clone(),
                password: password.clone(),
            };
            self.conns
                .send(conn, cmd, Purpose::Auth, now, self.config.request_timeout);
        }
    }

    /// Opens what should be open and starts what is due. Called at the end of every entry point.
    fn drive(&mut self, now: Instant) {
        if let DiscoveryState::Sentinel(s) = &mut self.discovery {
            let timeout = self.config.request_timeout;
            for (i, link) in s.links.iter_mut().enumerate() {
                if link.conn.is_none() && link.retry_at <= now {
                    let conn = self.conns.open(
                        link.addr.clone(),
                        ConnKind::Sentinel,
                        Role::Sentinel(i),
                        now,
                        timeout,
                    );
                    link.conn = Some(conn);
                }
            }
            if s.pubsub.conn.is_none() && s.pubsub.retry_at <= now {
                let i = s.pubsub_index;
                let addr = s.links[i].addr.clone();
                s.pubsub.addr = addr.clone();
                let conn = self.conns.open(
                    addr,
                    ConnKind::SentinelPubSub,
                    Role::PubSub(i),
                    now,
                    timeout,
                );
                s.pubsub.conn = Some(conn);
            }
        }
        if self.next_check_at <= now {
            self.next_check_at = now + self.config.check_interval;
            match &self.discovery {
                DiscoveryState::Sentinel(_) => self.start_round(now),
                DiscoveryState::Direct(_) => self.direct_check(now),
            }
        }
        if let (Phase::Master(m), Some(d)) = (&self.phase, &mut self.data_sub) {
            if d.conn.is_none() && d.retry_at <= now {
                let conn = self.conns.open(
                    m.addr.clone(),
                    ConnKind::ServerPubSub,
                    Role::DataSub,
                    now,
                    self.config.request_timeout,
                );
                d.conn = Some(conn);
            }
        }
        self.pump(now);
        self.pump_reads(now);
    }

    /// Sends the reads waiting for a node: to the master, else to a replica (opened here).
    fn pump_reads(&mut self, now: Instant) {
        if self.reads.is_empty() {
            return;
        }
        let conns = &self.conns;
        self.reads.release(|c| conns.get(c).is_none());
        if !self.reads.any_waiting() {
            return;
        }
        let conn = match &self.phase {
            Phase::Master(m) => m.conn,
            _ => match (self.replica.conn, self.replica.connected) {
                (Some(conn), true) => {
                    self.counters.replica_reads += self.reads.waiting().count() as u64;
                    conn
                }
                (Some(_), false) => return,
                (None, _) => {
                    if self.replicas.is_empty() || now < self.replica.retry_at {
                        return;
                    }
                    let addr = self.replicas[self.next_replica % self.replicas.len()].clone();
                    self.next_replica = self.next_replica.wrapping_add(1);
                    let conn = self.conns.open(
                        addr.clone(),
                        ConnKind::Server,
                        Role::Replica,
                        now,
                        self.config.request_timeout,
                    );
                    self.replica.addr = addr;
                    self.replica.conn = Some(conn);
                    return;
                }
            },
        };
        for r in self.reads.waiting() {
            let Some(script) = self.config.scripts.get(usize::from(r.read.script.0)) else {
                continue;
            };
            let cmd = RedisCommand::EvalShaRo {
                sha1: script.sha1.clone(),
                read: r.read.clone(),
            };
            let purpose = Purpose::Read { id: r.id };
            self.conns
                .send(conn, cmd, purpose, now, self.config.request_timeout);
            r.on = Some(conn);
        }
    }

    /// Sends journal writes on the master, up to `max_pipeline` in flight, then a `WAIT`.
    fn pump(&mut self, now: Instant) {
        let Phase::Master(m) = &mut self.phase else {
            return;
        };
        let mut sent = false;
        while m.writes_in_flight < self.config.max_pipeline {
            let Some(next) = self.journal.next_to_send() else {
                break;
            };
            let Some(script) = self.config.scripts.get(usize::from(next.write.script.0)) else {
                break;
            };
            let cmd = RedisCommand::EvalSha {
                sha1: script.sha1.clone(),
                write: next.write,
            };
            let purpose = Purpose::Write {
                id: next.id,
                replay: next.replay,
                epoch: m.epoch,
            };
            self.conns
                .send(m.conn, cmd, purpose, now, self.config.request_timeout);
            m.writes_in_flight += 1;
            sent = true;
        }
        if sent && self.config.wait_replicas > 0 {
            let cmd = RedisCommand::Wait {
                replicas: self.config.wait_replicas,
                timeout_ms: u64::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let timeout = self.config.request_timeout + self.config.wait_timeout;
            self.conns.send(m.conn, cmd, Purpose::Wait, now, timeout);
        }
    }

    fn on_connected(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.connected(conn) else {
            return;
        };
        match c.role {
            Role::Sentinel(i) => {
                let DiscoveryState::Sentinel(s) = &mut self.discovery else {
                    return;
                };
                s.links[i].connected = true;
                let credentials = s.credentials.clone();
                let resolving = !matches!(self.phase, Phase::Master(_)) && s.round.is_none();
                self.auth(conn, &credentials, now);
                if resolving {
                    self.next_check_at = now;
                }
            }
            Role::PubSub(_) => {
                let DiscoveryState::Sentinel(s) = &self.discovery else {
                    return;
                };
                let credentials = s.credentials.clone();
                self.auth(conn, &credentials, now);
                let cmd = RedisCommand::Subscribe(vec![SWITCH_MASTER.to_owned()]);
                self.conns.send(
                    conn,
                    cmd,
                    Purpose::Subscribe,
                    now,
                    self.config.request_timeout,
                );
            }
            Role::DataSub => {
                let Some(channel) = self.config.changes_channel.clone() else {
                    return;
                };
                let credentials = self.config.credentials.clone();
                self.auth(conn, &credentials, now);
                let cmd = RedisCommand::Subscribe(vec![channel]);
                let timeout = self.config.request_timeout;
                self.conns.send(conn, cmd, Purpose::Subscribe, now, timeout);
            }
            Role::Replica => {
                self.replica.connected = true;
                let credentials = self.config.credentials.clone();
                self.auth(conn, &credentials, now);
            }
            Role::Server => {
                let credentials = self.config.credentials.clone();
                self.auth(conn, &credentials, now);
                let (cmd, purpose) = match self.discovery {
                    DiscoveryState::Sentinel(_) => (RedisCommand::Role, Purpose::Role),
                    DiscoveryState::Direct(_) => (RedisCommand::InfoReplication, Purpose::Info),
                };
                self.conns
                    .send(conn, cmd, purpose, now, self.config.request_timeout);
            }
        }
    }

    fn on_reply(&mut self, conn: ConnId, role: Role, purpose: Purpose, reply: Reply, now: Instant) {
        let addr = self.addr_of(conn).unwrap_or_else(|| Arc::from(""));
        match purpose {
            Purpose::Auth => {
                if let Reply::Error(message) = reply {
                    self.counters.auth_failures += 1;
                    self.give_up(conn, now, |addr| HaError::AuthFailed { addr, message });
                }
            }
            Purpose::Subscribe => {
                if let Reply::Error(message) = reply {
                    self.give_up(conn, now, |addr| HaError::ServerError { addr, message });
                } else if role == Role::DataSub {
                    if let Some(d) = self.data_sub.as_mut().filter(|d| d.conn == Some(conn)) {
                        d.subscribed = true;
                        d.backoff.succeed();
                        self.changes.resync();
                        self.counters.resyncs += 1;
                    }
                } else if let DiscoveryState::Sentinel(s) = &mut self.discovery {
                    s.pubsub.backoff.succeed();
                }
            }
            Purpose::SentinelReplicas => {
                if let Some(replicas) = tracker::parse_sentinel_replicas(&reply) {
                    self.replicas = replicas;
                }
            }
            Purpose::SentinelQuery { round } => {
                if let (Role::Sentinel(i), DiscoveryState::Sentinel(s)) =
                    (role, &mut self.discovery)
                {
                    if !matches!(reply, Reply::Error(_)) {
                        s.links[i].backoff.succeed();
                    }
                }
                let vote = tracker::parse_master_addr(&reply);
                self.record_vote(round, vote, now);
            }
            Purpose::Role => {
                if !matches!(&self.phase, Phase::Verifying { conn: c, .. } if *c == conn) {
                    return;
                }
                match tracker::parse_role(&reply) {
                    Some(NodeRole::Master) => self.become_master(conn, addr, now),
                    _ => self.verify_failed(now, HaError::NotMaster { addr }),
                }
            }
            Purpose::Info => self.on_info(conn, addr, &reply, now),
            Purpose::ScriptLoad => {
                if let Reply::Error(message) = reply {
                    let error = |addr| HaError::ServerError { addr, message };
                    match role {
                        // The read resent after it then fails on its own.
                        Role::Replica => self.give_up(conn, now, error),
                        _ => self.lose_master(now, error(addr)),
                    }
                }
            }
            Purpose::Write { id, replay, epoch } => {
                self.on_write_reply(conn, addr, id, replay, epoch, reply, now)
            }
            Purpose::Read { id } => self.on_read_reply(conn, role, addr, id, reply, now),
            Purpose::Wait => {
                let Phase::Master(m) = &mut self.phase else {
                    return;
                };
                if m.conn != conn {
                    return;
                }
                let needed = self.config.wait_replicas;
                match reply {
                    Reply::Int(n) if n >= i64::from(needed) => {
                        let confirmed = std::mem::take(&mut m.unconfirmed);
                        for (id, reply, replay) in confirmed {
                            self.complete(id, reply, replay, now);
                        }
                    }
                    Reply::Int(acked) => self.lose_master(
                        now,
                        HaError::WaitShort {
                            addr,
                            acked,
                            needed,
                        },
                    ),
                    _ => {
                        let message = format!("unexpected WAIT reply {reply:?}");
                        self.lose_master(now, HaError::ServerError { addr, message });
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_write_reply(
        &mut self,
        conn: ConnId,
        addr: Arc<str>,
        id: WriteId,
        replay: bool,
        epoch: u32,
        reply: Reply,
        now: Instant,
    ) {
        let Phase::Master(m) = &mut self.phase else {
            return;
        };
        if m.conn != conn {
            return;
        }
        m.writes_in_flight = m.writes_in_flight.saturating_sub(1);
        if epoch != m.epoch {
            // Sent before the scripts were loaded again: sent again since, in order.
            return;
        }
        if let Reply::Error(message) = &reply {
            if is_noscript(message) && m.epoch < MAX_SCRIPT_RELOADS {
                m.epoch += 1;
                self.counters.script_reloads += 1;
                self.load_scripts(conn, now);
                // As for a new master: nothing counts as in flight, replays are queued again,
                // and `pump` resends from the oldest unacknowledged write.
                self.journal.master_verified();
                return;
            }
            if is_topology_error(message) || is_noscript(message) {
                let message = message.clone();
                self.lose_master(now, HaError::ServerError { addr, message });
                return;
            }
        }
        if self.config.wait_replicas > 0 {
            m.unconfirmed.push_back((id, reply, replay));
        } else {
            self.complete(id, reply, replay, now);
        }
    }

    fn on_read_reply(
        &mut self,
        conn: ConnId,
        role: Role,
        addr: Arc<str>,
        id: ReadId,
        reply: Reply,
        now: Instant,
    ) {
        if let Reply::Error(message) = &reply {
            if is_noscript(message) {
                let Some(r) = self.reads.get_mut(id).filter(|r| !r.reloaded) else {
                    return self.complete_read(id, reply);
                };
                r.reloaded = true;
                let Some(script) = self.config.scripts.get(usize::from(r.read.script.0)) else {
                    return;
                };
                let timeout = self.config.request_timeout;
                let load = RedisCommand::ScriptLoad(script.source.clone());
                self.conns
                    .send(conn, load, Purpose::ScriptLoad, now, timeout);
                let again = RedisCommand::EvalShaRo {
                    sha1: script.sha1.clone(),
                    read: r.read.clone(),
                };
                self.conns
                    .send(conn, again, Purpose::Read { id }, now, timeout);
                return;
            }
            if is_topology_error(message) {
                // Not a node to read from now (`-LOADING`..): the read waits for another.
                let message = message.clone();
                let error = HaError::ServerError { addr, message };
                match role {
                    Role::Replica => self.give_up(conn, now, |_| error),
                    _ => self.lose_master(now, error),
                }
                return;
            }
        }
        if role == Role::Replica {
            self.replica.backoff.succeed();
        }
        self.complete_read(id, reply);
    }

    fn complete_read(&mut self, id: ReadId, reply: Reply) {
        if self.reads.take(id).is_some() {
            self.completions
                .push_back(Completion::ReadDone { read: id, reply });
        }
    }

    fn complete(&mut self, id: WriteId, reply: Reply, replay: bool, now: Instant) {
        if replay {
            self.journal.replayed(id, now);
            self.counters.replayed += 1;
        } else if self.journal.ack(id, now, !matches!(reply, Reply::Error(_))) {
            self.counters.acked += 1;
            self.completions
                .push_back(Completion::Acked { write: id, reply });
        }
    }

    fn on_message(&mut self, conn: ConnId, channel: &str, payload: &str, now: Instant) {
        if self
            .data_sub
            .as_ref()
            .is_some_and(|d| d.conn == Some(conn) && d.subscribed)
        {
            if self.config.changes_channel.as_deref() == Some(channel) {
                self.counters.changes += 1;
                self.changes.published(payload.to_owned());
            }
            return;
        }
        let DiscoveryState::Sentinel(s) = &self.discovery else {
            return;
        };
        if s.pubsub.conn == Some(conn)
            && channel == SWITCH_MASTER
            && tracker::switch_master_concerns(payload, &s.master_name)
        {
            self.counters.switch_master_hints += 1;
            self.next_check_at = now;
        }
    }

    /// Asks every connected sentinel where the master is.
    fn start_round(&mut self, now: Instant) {
        let DiscoveryState::Sentinel(s) = &mut self.discovery else {
            return;
        };
        let connected = s.links.iter().filter(|l| l.connected).count();
        let connecting = s.links.iter().any(|l| l.conn.is_some() && !l.connected);
        if s.round.is_some() || (connected < s.quorum && connecting) {
            // A sentinel that connects restarts the round (`on_connected`).
            return;
        }
        let id = s.next_round_id;
        s.next_round_id += 1;
        let mut asked = 0;
        for link in &s.links {
            if let (Some(conn), true) = (link.conn, link.connected) {
                let cmd = RedisCommand::SentinelGetMasterAddrByName(s.master_name.clone());
                let purpose = Purpose::SentinelQuery { round: id };
                self.conns
                    .send(conn, cmd, purpose, now, self.config.request_timeout);
                asked += 1;
            }
        }
        // The replicas, for reads while no master is known: one sentinel, in turn, at most
        // every `check_interval`.
        let connected: Vec<ConnId> = s
            .links
            .iter()
            .filter(|l| l.connected)
            .filter_map(|l| l.conn)
            .collect();
        if self.next_replicas_at <= now && !connected.is_empty() {
            self.next_replicas_at = now + self.config.check_interval;
            let conn = connected[(id as usize) % connected.len()];
            let cmd = RedisCommand::SentinelReplicas(s.master_name.clone());
            self.conns.send(
                conn,
                cmd,
                Purpose::SentinelReplicas,
                now,
                self.config.request_timeout,
            );
        }
        let mut round = Round::new(id, s.quorum, asked);
        let verdict = round.verdict();
        s.round = Some(round);
        self.on_verdict(verdict, now);
    }

    fn record_vote(&mut self, round_id: u64, vote: Vote, now: Instant) {
        let DiscoveryState::Sentinel(s) = &mut self.discovery else {
            return;
        };
        let Some(round) = s.round.as_mut().filter(|r| r.id == round_id) else {
            return;
        };
        let verdict = round.record(vote);
        self.on_verdict(verdict, now);
    }

    fn on_verdict(&mut self, verdict: Verdict, now: Instant) {
        let DiscoveryState::Sentinel(s) = &mut self.discovery else {
            return;
        };
        match verdict {
            Verdict::Open => {}
            Verdict::Master(addr) => {
                s.round = None;
                self.next_check_at = now + self.config.check_interval;
                match &mut self.phase {
                    Phase::Master(m) if m.addr == addr => m.confirmed_at = now,
                    Phase::Master(m) => {
                        let from = m.addr.clone();
                        let to = addr.clone();
                        self.lose_master(now, HaError::MasterChanged { from, to });
                        self.try_verify(addr, now);
                    }
                    Phase::Verifying { addr: a, .. } if *a == addr => {}
                    Phase::Verifying { conn, .. } => {
                        let conn = *conn;
                        self.conns.close(conn);
                        self.phase = Phase::Resolving;
                        self.try_verify(addr, now);
                    }
                    Phase::Resolving => self.try_verify(addr, now),
                }
            }
            Verdict::NoQuorum { answered, best } => {
                s.round = None;
                self.counters.no_quorum_rounds += 1;
                self.last_error = Some(HaError::NoQuorum {
                    answered,
                    agreeing: best,
                    needed: s.quorum,
                });
                self.next_check_at = now + self.config.resolve_retry;
            }
        }
    }

    /// Opens a connection to `addr` to check its role, unless it failed recently.
    fn try_verify(&mut self, addr: Arc<str>, now: Instant) {
        if let Some((failed, retry_at)) = &self.server_retry {
            if *failed == addr && now < *retry_at {
                self.next_check_at = *retry_at;
                return;
            }
        }
        let conn = self.conns.open(
            addr.clone(),
            ConnKind::Server,
            Role::Server,
            now,
            self.config.request_timeout,
        );
        self.phase = Phase::Verifying { conn, addr };
    }

    fn verify_failed(&mut self, now: Instant, error: HaError) {
        let Phase::Verifying { conn, addr } = std::mem::replace(&mut self.phase, Phase::Resolving)
        else {
            return;
        };
        self.conns.close(conn);
        let retry_at = self.server_backoff.fail(
            now,
            self.config.backoff_min,
            self.config.backoff_max,
            &mut self.rng,
        );
        self.server_retry = Some((addr, retry_at));
        self.last_error = Some(error);
        self.next_check_at = match &self.discovery {
            DiscoveryState::Sentinel(_) => now + self.config.resolve_retry,
            // Try the next node at once, unless every known one failed since the last success.
            DiscoveryState::Direct(c) if c.cycle_done() => retry_at,
            DiscoveryState::Direct(_) => now,
        };
    }

    /// Sends `SCRIPT LOAD` of every script on `conn`, ahead of the writes that follow.
    fn load_scripts(&mut self, conn: ConnId, now: Instant) {
        for script in &self.config.scripts {
            let cmd = RedisCommand::ScriptLoad(script.source.clone());
            self.conns.send(
                conn,
                cmd,
                Purpose::ScriptLoad,
                now,
                self.config.request_timeout,
            );
        }
    }

    fn become_master(&mut self, conn: ConnId, addr: Arc<str>, now: Instant) {
        self.load_scripts(conn, now);
        // Reads go to the master now; those in flight on a replica are sent again there.
        if let Some(replica) = self.replica.conn.take() {
            self.conns.close(replica);
        }
        self.replica.connected = false;
        self.data_sub = self.config.changes_channel.as_ref().map(|_| DataSub {
            conn: None,
            subscribed: false,
            retry_at: now,
            backoff: Backoff::default(),
        });
        self.counters.masters_verified += 1;
        self.server_backoff.succeed();
        self.server_retry = None;
        self.last_error = None;
        self.journal.master_verified();
        if let DiscoveryState::Direct(c) = &mut self.discovery {
            c.succeeded();
        }
        self.phase = Phase::Master(Master {
            conn,
            addr,
            confirmed_at: now,
            writes_in_flight: 0,
            unconfirmed: VecDeque::new(),
            info_in_flight: false,
            epoch: 0,
        });
        self.next_check_at = now + self.config.check_interval;
    }

    /// Gives up the master (or the candidate): writes in flight on it are unacknowledged, recent
    /// acknowledgements are marked for replay, and discovery starts again at once.
    fn lose_master(&mut self, now: Instant, error: HaError) {
        if let Some(conn) = self.data_sub.take().and_then(|d| d.conn) {
            self.conns.close(conn);
        }
        match std::mem::replace(&mut self.phase, Phase::Resolving) {
            Phase::Master(m) => {
                self.conns.close(m.conn);
                self.counters.masters_lost += 1;
                self.journal.master_lost(now, self.config.replay_window);
                let retry_at = self.server_backoff.fail(
                    now,
                    self.config.backoff_min,
                    self.config.backoff_max,
                    &mut self.rng,
                );
                self.server_retry = Some((m.addr, retry_at));
            }
            Phase::Verifying { conn, .. } => {
                self.conns.close(conn);
            }
            Phase::Resolving => {}
        }
        self.last_error = Some(error);
        self.next_check_at = now;
    }

    /// Closes a connection that failed and settles whatever depended on it.
    fn give_up(&mut self, conn: ConnId, now: Instant, error: impl FnOnce(Arc<str>) -> HaError) {
        let Some(c) = self.conns.close(conn) else {
            return;
        };
        let error = error(c.addr.clone());
        self.counters.connections_given_up += 1;
        match c.role {
            Role::Sentinel(i) => {
                let DiscoveryState::Sentinel(s) = &mut self.discovery else {
                    return;
                };
                let link = &mut s.links[i];
                link.conn = None;
                link.connected = false;
                link.retry_at = link.backoff.fail(
                    now,
                    self.config.backoff_min,
                    self.config.backoff_max,
                    &mut self.rng,
                );
                if !matches!(
                    error,
                    HaError::Timeout { .. } | HaError::Disconnected { .. }
                ) {
                    self.last_error = Some(error);
                }
                for p in &c.pending {
                    if let Purpose::SentinelQuery { round } = p.purpose {
                        self.record_vote(round, Vote::None, now);
                    }
                }
            }
            Role::PubSub(i) => {
                let DiscoveryState::Sentinel(s) = &mut self.discovery else {
                    return;
                };
                s.pubsub.conn = None;
                s.pubsub_index = (i + 1) % s.links.len();
                s.pubsub.retry_at = s.pubsub.backoff.fail(
                    now,
                    self.config.backoff_min,
                    self.config.backoff_max,
                    &mut self.rng,
                );
            }
            Role::Server => match &self.phase {
                Phase::Master(m) if m.conn == conn => self.lose_master(now, error),
                Phase::Verifying { conn: v, .. } if *v == conn => self.verify_failed(now, error),
                _ => {}
            },
            Role::DataSub => {
                if let Some(d) = self.data_sub.as_mut().filter(|d| d.conn == Some(conn)) {
                    d.conn = None;
                    d.subscribed = false;
                    d.retry_at = d.backoff.fail(
                        now,
                        self.config.backoff_min,
                        self.config.backoff_max,
                        &mut self.rng,
                    );
                }
            }
            Role::Replica => {
                if self.replica.conn == Some(conn) {
                    self.replica.conn = None;
                    self.replica.connected = false;
                    self.replica.retry_at = self.replica.backoff.fail(
                        now,
                        self.config.backoff_min,
                        self.config.backoff_max,
                        &mut self.rng,
                    );
                }
            }
        }
    }

    /// Direct mode, every `check_interval`: probe the next node, or refresh the master's view.
    fn direct_check(&mut self, now: Instant) {
        let DiscoveryState::Direct(candidates) = &mut self.discovery else {
            return;
        };
        match &mut self.phase {
            Phase::Resolving => {
                let addr = candidates.next();
                self.try_verify(addr, now);
            }
            Phase::Verifying { .. } => {}
            Phase::Master(m) => {
                if !m.info_in_flight {
                    m.info_in_flight = true;
                    let timeout = self.config.request_timeout;
                    self.conns.send(
                        m.conn,
                        RedisCommand::InfoReplication,
                        Purpose::Info,
                        now,
                        timeout,
                    );
                }
            }
        }
    }

    /// `INFO replication` from the candidate (is it the master?) or the master (still?).
    fn on_info(&mut self, conn: ConnId, addr: Arc<str>, reply: &Reply, now: Instant) {
        let DiscoveryState::Direct(candidates) = &mut self.discovery else {
            return;
        };
        let info = reply.text().and_then(tracker::parse_info_replication);
        match &mut self.phase {
            Phase::Verifying { conn: v, .. } if *v == conn => match info {
                Some(i) if i.role == NodeRole::Master => {
                    i.replicas.iter().for_each(|r| candidates.learn(r.clone()));
                    self.replicas = i.replicas;
                    self.become_master(conn, addr, now);
                }
                Some(i) => {
                    if let Some(master) = i.master {
                        candidates.prefer(master);
                    }
                    self.verify_failed(now, HaError::NotMaster { addr });
                }
                None => self.verify_failed(now, HaError::NotMaster { addr }),
            },
            Phase::Master(m) if m.conn == conn => {
                m.info_in_flight = false;
                match info {
                    Some(i) if i.role == NodeRole::Master => {
                        m.confirmed_at = now;
                        i.replicas.iter().for_each(|r| candidates.learn(r.clone()));
                        self.replicas = i.replicas;
                    }
                    _ => self.lose_master(now, HaError::NotMaster { addr }),
                }
            }
            _ => {}
        }
    }
}
