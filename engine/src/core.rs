//! The shard core: everything a shard decides, with no I/O and no clock.
//!
//! The shell ([`crate::shard`]) hands it what arrived — a datagram, a message cut from a stream, a
//! message from another shard, the passing of time — and carries out the [`Output`]s it returns.
//! The core owns the shard's transactions, its slice of the binding store and the response
//! contexts of the requests it forwards; it talks to other shards only through [`ShardMsg`]s.
//!
//! The request path: parse and validate (`sipshard_net`), match or create a server transaction
//! (retransmissions stop there), decide where the request goes ([`crate::routing`]), then either
//! answer it, hand it to the registrar on the AOR's owner shard, or look up the AOR's bindings
//! (again on the owner shard) and fork one client transaction per contact ([`crate::fork`]).

use std::collections::{BTreeSet, HashMap, VecDeque};

use ahash::RandomState;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sipshard_net::{
    ErrorAction, ForwardEdits, HeaderName, HostKind, Message, Method, NameAddr, ParseError, SipUri,
    Transport, Uri, ViaStamp, error_response, reason_phrase, stamped_response_to,
};
use sipshard_registrar::redis_data::{self, ContactOutcome, ScriptCall, StoredBinding};
use sipshard_registrar::{
    Aor, Binding, BindingStore, ContactEcho, NextHop, RegisterError, RegisterOutcome,
    RegisterRequest, RegistrarConfig, Source, owner_shard,
};
use tracing::{debug, warn};

use crate::auth::{
    AuthCounters, AuthDomains, AuthOutcome, AuthSettings, Authenticator, PasswordDb,
};
use crate::cluster::{self, ClusterSettings};
use crate::dos::{self, FloodCounters, FloodGuard};
use crate::fork::{self, Fork, Verdict};
use crate::metrics;
use crate::routing::{self, Decision, LocalIdentity, RouteEdits};
use crate::transaction::{
    self, Action, ClientId, RequestMatch, ResponseMatch, ServerId, TimerConfig, TransactionError,
    TransactionId, TransactionTable,
};

/// Timer C (§16.6 step 11): how long a forwarded INVITE may go without a provisional response
/// before the proxy gives up on its branches. The RFC asks for more than 3 minutes.
const TIMER_C: Duration = Duration::from_secs(181);

/// Option tags the registrar understands in Require: Path (RFC 3327) and outbound (RFC 5626).
const REGISTRAR_EXTENSIONS: [&str; 2] = ["path", "outbound"];

/// How long a request may wait for another shard's answer. Answers are never lost while the
/// shards are healthy; this bounds what a full channel (an answer dropped) could leave behind.
const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Most Vias a message may carry. Every hop adds one and takes one from Max-Forwards, which
/// starts at 70 (RFC 3261 §8.1.1.6): more is no real path, only work (each Via is parsed, and
/// copied into every response).
pub const MAX_VIAS: usize = 70;

/// Retry-After of a 503 for a REGISTER whose database write failed in a way a retry may fix (a
/// reply the registrar cannot read, the queue to the Redis thread full).
const DATABASE_RETRY_AFTER_S: u32 = 5;

/// A stream connection, unique in the node: the owning shard's index is in the top 16 bits.
pub type ConnId = u64;

/// Where a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    pub transport: Transport,
    /// Our address it arrived on.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub conn: Option<ConnId>,
}

/// What the shell does for the core.
#[derive(Debug)]
pub enum Output {
    /// Send bytes. Over a stream transport, the shell uses an open connection to `to` (or `conn`
    /// when it is one of its own) and opens one otherwise. A failure is reported back with
    /// [`ShardCore::on_send_failed`] when `txn` is set.
    Send {
        transport: Transport,
        to: SocketAddr,
        conn: Option<ConnId>,
        bytes: Rc<[u8]>,
        txn: Option<TransactionId>,
    },
    /// Deliver a message to another shard.
    ToShard { shard: usize, msg: ShardMsg },
    /// Run a registrar script on the bindings database (Redis mode); the shell reports the
    /// result with [`ShardCore::on_database_result`] and the same token.
    ToDatabase { token: u64, call: ScriptCall },
}

/// What became of a [`Output::ToDatabase`].
#[derive(Debug)]
pub enum DatabaseResult {
    /// The master ran the script (its reply may still be an error).
    Reply(redis_data::Reply),
    /// No master took it in time, or it could not be queued: 503 with this Retry-After.
    Unavailable { retry_after_s: u32 },
}

/// Where the registrar keeps bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarDb {
    /// In the owner shard's memory (`db-implementation=internal`).
    Memory,
    /// In Redis (`db-implementation=redis`); each owner shard's store is a cache of it, and a
    /// REGISTER is answered once the master acknowledged the write.
    Redis {
        /// This node's name in the bindings it writes (it holds their connections).
        node: Box<str>,
        /// How long a REGISTER may wait for the database: the failover hold plus a margin.
        wait_limit: Duration,
    },
}

/// A message between shards. Owned data only: it crosses threads.
#[derive(Debug)]
pub enum ShardMsg {
    /// Apply a REGISTER to the bindings of an AOR this shard owns.
    Register {
        from: usize,
        token: u64,
        request: RegisterRequest,
    },
    /// The answer to `Register`.
    Registered {
        token: u64,
        result: Result<RegisterOutcome, RegisterError>,
    },
    /// List the targets of an AOR this shard owns.
    Lookup { from: usize, token: u64, aor: Aor },
    /// The answer to `Lookup`: the targets, or the Retry-After of a 503 when the bindings
    /// database could not be read.
    Found {
        token: u64,
        targets: Result<Vec<Target>, u32>,
    },
    /// A response that arrived on this shard for a client transaction of the receiving one.
    Response { bytes: Vec<u8> },
}

/// One place to send a request for an AOR: a registered contact and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The contact URI: the forwarded request's Request-URI.
    pub uri: String,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection the contact registered over, to be preferred while it lives.
    pub conn: Option<ConnId>,
    /// Routes to push, in order: the binding's Path (RFC 3327 §5.3), less this node's own entry.
    pub route: Vec<String>,
}

/// Settings the core needs, derived once from the configuration.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub identity: LocalIdentity,
    pub registrar: RegistrarConfig,
    pub timers: TimerConfig,
    /// Server and client transactions per shard, each.
    pub transaction_capacity: usize,
    /// Requests waiting on another shard at once; beyond it, 503.
    pub max_waiting: usize,
    /// The host (name or IP) this node puts in its Via and Record-Route.
    pub advertised_host: String,
    /// Our listen port per transport, for Via and Record-Route.
    pub ports: Vec<(Transport, u16)>,
    /// Digest authentication; `None` when disabled.
    pub auth: Option<ShardAuthSettings>,
    pub registrar_db: RegistrarDb,
    /// `[cluster] enabled`: the other nodes, this node's internal address and flow-token key.
    pub cluster: Option<ClusterSettings>,
}

/// What each shard builds its own [`Authenticator`] from (its tables are per shard; the
/// password database is shared, read-only).
#[derive(Debug, Clone)]
pub struct ShardAuthSettings {
    /// Validated (`AuthSettings::new`): building an authenticator from them cannot fail.
    pub settings: AuthSettings,
    pub db: Arc<PasswordDb>,
}

/// Counters of one shard (summed by the admin endpoint).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub requests: u64,
    pub responses: u64,
    /// Unparseable or invalid messages, answered or dropped.
    pub malformed: u64,
    pub dropped: u64,
    /// Requests refused with 503 because a table or queue of this shard was full.
    pub overloaded: u64,
    pub send_failures: u64,
    pub registers_accepted: u64,
    pub registers_refused: u64,
    pub forwarded: u64,
    /// Requests whose digest credentials were verified (the authenticator counts the details).
    pub auth_authenticated: u64,
    /// Requests answered 401/407.
    pub auth_challenged: u64,
    /// Requests answered 403 by authentication (locked out, domain not served, identity).
    pub auth_forbidden: u64,
    /// REGISTERs answered 503 because the bindings database did not take or confirm the write.
    pub database_unavailable: u64,
    /// Packets (datagrams, stream messages, new connections) dropped unparsed by the flood
    /// guard: from a banned source, or the one that got it banned.
    pub flood_dropped: u64,
    /// Sources banned for going over `packet-rate-limit`.
    pub flood_bans: u64,
    /// Stream connections closed at once: over the per-shard or per-address limit, or from a
    /// banned source.
    pub connections_refused: u64,
    /// Stream connections closed for idling past `idle-timeout`, or for taking longer than
    /// `incomplete-message-timeout` over a message (a slow sender) or a WebSocket upgrade.
    pub connections_timed_out: u64,
    /// Messages with more Vias than [`MAX_VIAS`]: requests answered 400, responses dropped.
    pub too_many_vias: u64,
    /// Challenges to UDP requests that offered fewer algorithms to stay within the
    /// amplification limit (`dos::headers_within_budget`).
    pub challenges_trimmed: u64,
    /// Requests by method, in [`metrics::METHODS`] order (retransmissions included).
    pub requests_by_method: [u64; metrics::METHODS.len()],
    /// Responses received, by status class ([`metrics::CLASSES`]).
    pub responses_received_by_class: [u64; metrics::CLASSES.len()],
    /// Responses sent (generated or relayed, retransmissions included), by status class.
    pub responses_sent_by_class: [u64; metrics::CLASSES.len()],
    /// Request retransmissions absorbed by their server transaction.
    pub retransmissions: u64,
    /// 503 responses this shard generated.
    pub service_unavailable_sent: u64,
    /// New out-of-dialog requests answered 503 while draining ([`ShardCore::set_draining`]).
    pub draining_refused: u64,
}

/// A shard's authenticator and the domains whose users it challenges.
#[derive(Debug)]
struct ShardAuth {
    authenticator: Authenticator,
    domains: AuthDomains,
}

/// A request waiting for another shard.
#[derive(Debug)]
enum Waiting {
    Register {
        server: ServerId,
        request: Rc<[u8]>,
        inbound: Inbound,
    },
    Lookup {
        server: ServerId,
        request: Rc<[u8]>,
        inbound: Inbound,
        route: RouteEdits,
    },
}

/// Where the answer to a REGISTER applied on its owner shard goes.
#[derive(Debug)]
enum ReplyTo {
    /// The request arrived on this shard.
    Here {
        server: ServerId,
        request: Rc<[u8]>,
        inbound: Inbound,
    },
    /// Another shard waits for it under `token`.
    Shard { shard: usize, token: u64 },
}

/// Where the targets of a lookup done on the AOR's owner shard go.
#[derive(Debug)]
enum LookupReplyTo {
    /// The request arrived on this shard.
    Here {
        server: ServerId,
        request: Rc<[u8]>,
        inbound: Inbound,
        route: RouteEdits,
    },
    /// Another shard waits for them under `token`.
    Shard { shard: usize, token: u64 },
}

/// A request waiting for the bindings database, with the shard's cache generation when it
/// was sent: an answer that comes back after a change notification may predate the change, so
/// it is used for this request but not cached.
#[derive(Debug)]
enum DatabaseWait {
    Register {
        request: RegisterRequest,
        reply_to: ReplyTo,
        generation: u64,
    },
    /// An AOR the cache does not hold: its bindings are read from Redis.
    Lookup {
        aor: Aor,
        reply_to: LookupReplyTo,
        generation: u64,
    },
    /// An operator's read ([`ShardCore::read_bindings`]): the answer goes to
    /// [`ShardCore::take_operator_reads`], never to the cache.
    Operator,
}

/// The answer to [`ShardCore::read_bindings`] under its token: the AOR's live bindings as Redis
/// holds them, or why they could not be read.
pub type OperatorRead = (u64, Result<Vec<StoredBinding>, String>);

/// What Redis says changed, for the owner shard's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChange {
    /// A node (perhaps this one) changed this AOR's bindings.
    Changed(Aor),
    /// Change notifications were interrupted: any cached AOR may be stale.
    Resync,
}

/// The response context of one forwarded request (§16.7).
#[derive(Debug)]
struct ProxyCall {
    request: Rc<[u8]>,
    inbound: Inbound,
    fork: Fork,
    branches: Vec<BranchInfo>,
    /// The CANCEL of the caller arrived: cancel every branch that can be.
    cancelled: bool,
    final_sent: bool,
    /// When Timer C fires for this INVITE (None for other methods).
    timer_c: Option<Instant>,
}

#[derive(Debug)]
struct BranchInfo {
    client: Option<ClientId>,
    /// Where the branch went; its CANCEL goes the same way (§9.1).
    peer: transaction::Peer,
    /// The final response stored for §16.7 step 6 (top Via removed), or `None` for a branch
    /// that failed without one.
    stored: Option<Rc<[u8]>>,
    cancel_sent: bool,
}

pub struct ShardCore {
    shard: usize,
    shards: usize,
    settings: CoreSettings,
    bindings: BindingStore,
    transactions: TransactionTable,
    // The maps below are sized for their bounds at creation: a shard never rehashes while
    // serving (rehashing a table of a few hundred thousand entries stops it for tens of ms).
    waiting: HashMap<u64, Waiting, RandomState>,
    /// Tokens of `waiting` with their deadlines, oldest first (tokens are issued in time order).
    waiting_deadlines: VecDeque<(Instant, u64)>,
    /// REGISTERs this owner shard sent to the database, by token (from `next_token`).
    database_waits: HashMap<u64, DatabaseWait, RandomState>,
    /// Their deadlines, oldest first.
    database_deadlines: VecDeque<(Instant, u64)>,
    /// Bumped by every [`CacheChange`]: see [`DatabaseWait`].
    cache_generation: u64,
    next_token: u64,
    calls: HashMap<ServerId, ProxyCall, RandomState>,
    /// Timer C deadlines of forwarded INVITEs, earliest first.
    timer_c: BTreeSet<(Instant, ServerId)>,
    branch_of: HashMap<ClientId, (ServerId, usize), RandomState>,
    next_branch: u64,
    counters: Counters,
    date: String,
    /// The wall clock as the shell last set it: nonces are dated with it.
    wall_clock: SystemTime,
    auth: Option<ShardAuth>,
    /// `[module::DoSProtection]`; `None` when disabled.
    flood: Option<FloodGuard>,
    /// Set when the node stops (SIGTERM): new out-of-dialog requests are answered 503 with this
    /// Retry-After.
    draining: Option<u32>,
    /// Answers to operators' reads, until the shell takes them (at most `max_waiting`: each
    /// was a database wait).
    operator_reads: Vec<OperatorRead>,
}

impl ShardCore {
    pub fn new(shard: usize, shards: usize, settings: CoreSettings) -> ShardCore {
        let capacity = settings.transaction_capacity;
        let max_waiting = settings.max_waiting;
        let auth = settings.auth.as_ref().map(|auth| {
            let id = u16::try_from(shard).unwrap_or(u16::MAX);
            match Authenticator::new(auth.settings.clone(), Arc::clone(&auth.db), id) {
                Ok(authenticator) => ShardAuth {
                    authenticator,
                    domains: auth.settings.domains.clone(),
                },
                // `startup` built one from the same settings before any shard started.
                Err(e) => panic!("authentication settings refused after validation: {e}"),
            }
        });
        let wall_clock = SystemTime::now();
        ShardCore {
            shard,
            shards,
            bindings: BindingStore::new(settings.registrar.clone()),
            transactions: TransactionTable::new(settings.timers, capacity, capacity),
            settings,
            waiting: HashMap::with_capacity_and_hasher(max_waiting, RandomState::new()),
            waiting_deadlines: VecDeque::new(),
            database_waits: HashMap::with_capacity_and_hasher(max_waiting, RandomState::new()),
            database_deadlines: VecDeque::new(),
            cache_generation: 0,
            next_token: 0,
            calls: HashMap::with_capacity_and_hasher(capacity, RandomState::new()),
            timer_c: BTreeSet::new(),
            branch_of: HashMap::with_capacity_and_hasher(capacity, RandomState::new()),
            next_branch: 0,
            counters: Counters::default(),
            date: http_date(wall_clock),
            wall_clock,
            auth,
            flood: None,
            draining: None,
            operator_reads: Vec::new(),
        }
    }

    /// Installs the shard's flood guard (`[module::DoSProtection]`); `None` disables it.
    pub fn set_flood_guard(&mut self, guard: Option<FloodGuard>) {
        self.flood = guard;
    }

    /// The flood guard's counters, when it is enabled.
    pub fn flood_counters(&self) -> Option<&FloodCounters> {
        self.flood.as_ref().map(FloodGuard::counters)
    }

    /// Whether a packet from `source` — a datagram, a stream message or a new connection — may
    /// be handled. The shell asks before parsing anything: a source over `packet-rate-limit` is
    /// banned (logged once) and what it sends is dropped, counted, until the ban ends.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        let Some(guard) = self.flood.as_mut() else {
            return true;
        };
        match guard.check(source, now) {
            dos::Verdict::Pass => true,
            dos::Verdict::Banned => {
                self.counters.flood_dropped += 1;
                false
            }
            dos::Verdict::NewBan => {
                self.counters.flood_dropped += 1;
                self.counters.flood_bans += 1;
                warn!(
                    %source,
                    ban_time = ?guard.ban_time(),
                    "over [module::DoSProtection] packet-rate-limit: banned"
                );
                false
            }
        }
    }

    /// A stream connection the shell closed at once (a connection limit).
    pub fn count_connection_refused(&mut self) {
        self.counters.connections_refused += 1;
    }

    /// Bytes from a stream the shell could not read as SIP (a bad WebSocket upgrade or frame).
    pub fn count_malformed(&mut self) {
        self.counters.malformed += 1;
    }

    /// A stream connection the shell closed for idling or for sending too slowly.
    pub fn count_connection_timed_out(&mut self) {
        self.counters.connections_timed_out += 1;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The authenticator's counters, when authentication is enabled.
    pub fn auth_counters(&self) -> Option<&AuthCounters> {
        self.auth.as_ref().map(|a| a.authenticator.counters())
    }

    // ---- operations (the admin endpoint, the graceful stop) ---------------------------------

    /// The node is stopping: from now on a new out-of-dialog request is answered 503 with
    /// `retry_after_s` (RFC 3263 §4.3: the client tries another server at once), while requests
    /// within dialogs, ACK and CANCEL go on, so that calls and transactions in progress finish.
    pub fn set_draining(&mut self, retry_after_s: u32) {
        self.draining = Some(retry_after_s);
    }

    /// Requests this shard still owes a final response, or an answer to another shard: forwarded
    /// requests without a final response yet, and requests waiting on another shard or on the
    /// bindings database. Transactions that only absorb retransmissions are not counted.
    pub fn in_progress(&self) -> usize {
        let calls = self.calls.values().filter(|c| !c.final_sent).count();
        calls + self.waiting.len() + self.database_waits.len()
    }

    /// Server and client transactions open.
    pub fn transactions_open(&self) -> (usize, usize) {
        (
            self.transactions.server_count(),
            self.transactions.client_count(),
        )
    }

    /// Bindings and AORs the store holds (in Redis mode: its cache).
    pub fn bindings_held(&self) -> (usize, usize) {
        (self.bindings.len(), self.bindings.aor_count())
    }

    /// The live bindings of `aor`, an AOR this shard owns, for operators (`/bindings`); `None`
    /// when the store does not hold it (in Redis mode: not cached).
    pub fn bindings_of(&self, aor: &Aor, now: Instant) -> Option<Vec<Binding>> {
        self.bindings
            .holds(aor)
            .then(|| self.bindings.lookup(aor, now).cloned().collect())
    }

    /// Reads the bindings of `aor`, an AOR this shard owns, from Redis for an operator
    /// (`/bindings` in Redis mode, where the cache may not hold them): the lookup script, as a
    /// read (a replica serves it while no master is known), bounded like every database wait.
    /// Returns the token its answer will carry in [`ShardCore::take_operator_reads`], or `None`
    /// in memory mode or when too many requests wait for the database.
    pub fn read_bindings(&mut self, aor: &Aor, now: Instant, out: &mut Vec<Output>) -> Option<u64> {
        let RegistrarDb::Redis { wait_limit, .. } = &self.settings.registrar_db else {
            return None;
        };
        if self.database_waits.len() >= self.settings.max_waiting {
            self.counters.overloaded += 1;
            return None;
        }
        let deadline = now + *wait_limit;
        self.next_token += 1;
        let token = self.next_token;
        self.database_waits.insert(token, DatabaseWait::Operator);
        self.database_deadlines.push_back((deadline, token));
        out.push(Output::ToDatabase {
            token,
            call: redis_data::lookup_call(aor),
        });
        Some(token)
    }

    /// The answers to [`ShardCore::read_bindings`] that came in since the last call.
    pub fn take_operator_reads(&mut self) -> Vec<OperatorRead> {
        std::mem::take(&mut self.operator_reads)
    }

    /// Counts a response about to be sent, by class (and a 503).
    fn count_response_sent(&mut self, bytes: &[u8]) {
        if let Some(class) = metrics::class_index(bytes) {
            self.counters.responses_sent_by_class[class] += 1;
            if bytes.starts_with(b"SIP/2.0 503") {
                self.counters.service_unavailable_sent += 1;
            }
        }
    }

    /// The wall clock, for Date headers and nonce time stamps (the shell sets it each second).
    pub fn set_wall_clock(&mut self, now: SystemTime) {
        self.date = http_date(now);
        self.wall_clock = now;
    }

    /// When [`ShardCore::on_timers`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.transactions.next_deadline(),
            self.bindings.next_expiry(),
            self.timer_c.first().map(|(at, _)| *at),
            self.waiting_deadlines.front().map(|(at, _)| *at),
            self.database_deadlines.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.transactions.handle_timeouts(now);
        self.bindings.expire(now);
        while let Some(&(at, token)) = self.waiting_deadlines.front() {
            if at > now {
                break;
            }
            self.waiting_deadlines.pop_front();
            if self.waiting.contains_key(&token) {
                self.give_up_waiting(token, now);
            }
        }
        while let Some(&(at, token)) = self.database_deadlines.front() {
            if at > now {
                break;
            }
            self.database_deadlines.pop_front();
            let unavailable = DatabaseResult::Unavailable {
                retry_after_s: DATABASE_RETRY_AFTER_S,
            };
            self.on_database_result(token, unavailable, now, out);
        }
        while let Some(&(at, server)) = self.timer_c.first() {
            if at > now {
                break;
            }
            self.timer_c.remove(&(at, server));
            self.on_timer_c(server, now);
        }
        self.drain_actions(now, out);
    }

    /// Timer C fired (§16.8): branches that rang are cancelled, the others count as 408.
    fn on_timer_c(&mut self, server: ServerId, now: Instant) {
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        call.timer_c = None;
        let silent: Vec<usize> = (0..call.branches.len())
            .filter(|&i| call.fork.is_silent(i))
            .collect();
        call.cancelled = true;
        for index in silent {
            call.fork.on_failure(index, 408);
        }
        self.after_branch_event(server, now);
    }

    /// Restarts Timer C of a forwarded INVITE (§16.7 step 2: on every provisional response).
    fn restart_timer_c(&mut self, server: ServerId, now: Instant) {
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        if let Some(at) = call.timer_c.take() {
            self.timer_c.remove(&(at, server));
            let at = now + TIMER_C;
            call.timer_c = Some(at);
            self.timer_c.insert((at, server));
        }
    }

    pub fn count_send_failure(&mut self) {
        self.counters.send_failures += 1;
    }

    /// A send the core asked for failed.
    pub fn on_send_failed(&mut self, txn: TransactionId, now: Instant, out: &mut Vec<Output>) {
        self.counters.send_failures += 1;
        self.transactions.handle_transport_error(txn, now);
        self.drain_actions(now, out);
    }

    /// A UDP datagram.
    pub fn on_datagram(
        &mut self,
        bytes: &[u8],
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            // A keep-alive (RFC 5626 §4.4.1 uses CRLF over UDP only with STUN; some UAs send
            // bare CRLFs anyway). Nothing to answer.
            return;
        }
        let parsed = Message::parse_datagram(bytes);
        self.on_parsed(bytes, parsed, from, now, out);
    }

    /// One message cut from a stream by the shell's framer.
    pub fn on_stream_message(
        &mut self,
        bytes: &[u8],
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let parsed = Message::parse_stream(bytes);
        self.on_parsed(bytes, parsed, from, now, out);
    }

    /// One WebSocket message (RFC 7118 §5): one SIP message, delimited by the WebSocket framing
    /// like a datagram, so Content-Length may be absent.
    pub fn on_websocket_message(
        &mut self,
        bytes: &[u8],
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let parsed = Message::parse_datagram(bytes);
        self.on_parsed(bytes, parsed, from, now, out);
    }

    /// A stream that cannot be framed any more: answer what can be answered; the shell closes it.
    pub fn on_unframeable(
        &mut self,
        buf: &[u8],
        error: ParseError,
        from: Inbound,
        out: &mut Vec<Output>,
    ) {
        self.counters.malformed += 1;
        let mut response = Vec::new();
        if error_response(&mut response, buf, &error) {
            self.send_stateless(from, from.remote, response, out);
        }
    }

    fn on_parsed(
        &mut self,
        bytes: &[u8],
        parsed: Result<Message<'_>, ParseError>,
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let msg = match parsed.and_then(|m| m.validate().map(|()| m)) {
            Ok(msg) => msg,
            Err(error) => return self.on_malformed(bytes, error, from, out),
        };
        if msg.vias().nth(MAX_VIAS).is_some() {
            return self.on_too_many_vias(&msg, from, out);
        }
        if msg.is_request() {
            self.counters.requests += 1;
            self.counters.requests_by_method[metrics::method_index(msg.method())] += 1;
            self.on_request(&msg, from, now, out);
        } else {
            self.counters.responses += 1;
            if let Some(class) = metrics::class_index(msg.as_bytes()) {
                self.counters.responses_received_by_class[class] += 1;
            }
            match self.branch_owner(&msg) {
                Some(shard) if shard != self.shard => out.push(Output::ToShard {
                    shard,
                    msg: ShardMsg::Response {
                        bytes: msg.as_bytes().to_vec(),
                    },
                }),
                _ => self.on_response(&msg, now, out),
            }
        }
        self.drain_actions(now, out);
    }

    /// The shard whose client transaction sent the request this response answers, read from the
    /// branch this node put in its Via (`z9hG4bK<loop hash>.<shard>.<sequence>`). SO_REUSEPORT
    /// spreads datagrams over the shards by address, so a response may reach any shard; only
    /// the owner has the transaction.
    fn branch_owner(&self, msg: &Message<'_>) -> Option<usize> {
        let via = msg.top_via().ok()?;
        if !via
            .host
            .text
            .eq_ignore_ascii_case(&self.settings.advertised_host)
        {
            return None;
        }
        let mut parts = via.branch()?.strip_prefix("z9hG4bK")?.split('.');
        let (_hash, shard) = (parts.next()?, parts.next()?);
        shard.parse().ok().filter(|s| *s < self.shards)
    }

    /// Answers a malformed request statelessly when possible (§8.2.6, error reason phrases from
    /// the codec), and drops everything else.
    fn on_malformed(
        &mut self,
        bytes: &[u8],
        error: ParseError,
        from: Inbound,
        out: &mut Vec<Output>,
    ) {
        self.counters.malformed += 1;
        let mut response = Vec::new();
        let answered = match Message::parse_datagram(bytes) {
            // Parsed, but validate() refused it: the transaction headers may still be readable.
            Ok(msg) if msg.is_request() && msg.method() != Some(Method::Ack) => {
                match error.action() {
                    ErrorAction::Respond { status, reason } => {
                        let stamp = ViaStamp::for_request(&msg, from.remote);
                        stamped_response_to(&mut response, &msg, &stamp, status, reason, None)
                            .finish(None, b"");
                        true
                    }
                    ErrorAction::Drop => false,
                }
            }
            Ok(_) => false,
            Err(e) => error_response(&mut response, bytes, &e),
        };
        if answered {
            self.send_stateless(from, from.remote, response, out);
        } else {
            self.counters.dropped += 1;
            debug!(remote = %from.remote, "dropped: {error}");
        }
    }

    /// A message with more than [`MAX_VIAS`] Vias: a request is answered 400 statelessly (the
    /// response copies the Vias, so it is no larger than the request), a response dropped.
    fn on_too_many_vias(&mut self, msg: &Message<'_>, from: Inbound, out: &mut Vec<Output>) {
        self.counters.too_many_vias += 1;
        debug!(remote = %from.remote, "more than {MAX_VIAS} Vias");
        if !msg.is_request() || msg.method() == Some(Method::Ack) {
            self.counters.dropped += 1;
            return;
        }
        let stamp = ViaStamp::for_request(msg, from.remote);
        let mut response = Vec::new();
        stamped_response_to(&mut response, msg, &stamp, 400, "Too Many Vias", None)
            .finish(None, b"");
        let to = ViaStamp::response_destination(msg, from.remote);
        self.send_stateless(from, to, response, out);
    }

    fn send_stateless(
        &mut self,
        from: Inbound,
        to: SocketAddr,
        bytes: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        self.count_response_sent(&bytes);
        out.push(Output::Send {
            transport: from.transport,
            to,
            conn: from.conn,
            bytes: bytes.into(),
            txn: None,
        });
    }

    fn on_request(
        &mut self,
        msg: &Message<'_>,
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let peer = transaction::Peer {
            transport: from.transport,
            addr: from.remote,
            conn: from.conn,
        };
        match self.transactions.handle_request(msg, peer, now) {
            Ok(RequestMatch::New(server)) => self.on_new_request(server, msg, from, now, out),
            Ok(RequestMatch::Absorbed) => self.counters.retransmissions += 1,
            Ok(RequestMatch::EndToEndAck) => self.forward_ack(msg, from, out),
            Err(TransactionError::TableFull) => {
                self.counters.overloaded += 1;
                if msg.method() != Some(Method::Ack) {
                    let stamp = ViaStamp::for_request(msg, from.remote);
                    let mut response = Vec::new();
                    let mut w =
                        stamped_response_to(&mut response, msg, &stamp, 503, "Overloaded", None);
                    w.header("Retry-After", "5");
                    w.finish(None, b"");
                    let to = ViaStamp::response_destination(msg, from.remote);
                    self.send_stateless(from, to, response, out);
                }
            }
            Err(e) => {
                self.counters.dropped += 1;
                debug!(remote = %from.remote, "request refused by the transaction layer: {e:?}");
            }
        }
    }

    fn on_new_request(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if msg.method() == Some(Method::Cancel) {
            return self.on_cancel(server, msg, from, now);
        }
        if let Some(retry_after_s) = self.draining {
            let in_dialog = msg.to().ok().and_then(|to| to.tag()).is_some();
            if !in_dialog {
                self.counters.draining_refused += 1;
                let extra = [("Retry-After", retry_after_s.to_string())];
                return self.reply(server, msg, from, 503, "Shutting Down", &extra, now);
            }
        }
        if self.is_loop(msg) {
            return self.reply(server, msg, from, 482, "Loop Detected", &[], now);
        }
        let (mut decision, mut route) = routing::decide(msg, &self.settings.identity);
        let mut flow = None;
        if decision == Decision::Flow {
            match self.flow_target(&route, from) {
                FlowRoute::Inbound => {
                    (decision, route) = routing::decide_without_flows(msg, &self.settings.identity);
                }
                other => flow = Some(other),
            }
        }
        if !self.authorize(server, msg, from, &decision, now) {
            return;
        }
        match decision {
            Decision::Reply {
                status,
                reason,
                unsupported,
            } => {
                let extra = if unsupported.is_empty() {
                    Vec::new()
                } else {
                    vec![("Unsupported", unsupported.join(", "))]
                };
                self.reply(server, msg, from, status, reason, &extra, now);
            }
            // An ACK never creates a server transaction; nothing to absorb here.
            Decision::Absorb => {}
            Decision::Register => {
                // §10.3 step 2 / §8.2.2.3: the registrar is the UAS; it must understand Require.
                let unsupported: Vec<&str> = msg
                    .tokens(HeaderName::Require)
                    .filter_map(Result::ok)
                    .filter(|tag| {
                        !REGISTRAR_EXTENSIONS
                            .iter()
                            .any(|e| e.eq_ignore_ascii_case(tag))
                    })
                    .collect();
                if unsupported.is_empty() {
                    self.on_register(server, msg, from, now, out);
                } else {
                    let extra = [("Unsupported", unsupported.join(", "))];
                    self.reply(server, msg, from, 420, "Bad Extension", &extra, now);
                }
            }
            Decision::LookupAor => self.on_lookup(server, msg, from, route, now, out),
            Decision::Flow => match flow {
                Some(FlowRoute::Deliver(target)) => {
                    let request: Rc<[u8]> = msg.as_bytes().into();
                    self.fork(server, request, from, &route, vec![target], now);
                }
                // RFC 5626 §5.3: a flow token that was tampered with gets a 403.
                _ => self.reply(server, msg, from, 403, "Invalid Flow Token", &[], now),
            },
            Decision::Forward => match self.next_hop(msg, &route) {
                Some(target) => {
                    let request: Rc<[u8]> = msg.as_bytes().into();
                    self.fork(server, request, from, &route, vec![target], now);
                }
                None => self.reply(server, msg, from, 404, "Next Hop Not Resolvable", &[], now),
            },
        }
    }

    /// Where a request goes whose last Routes were ours with flow tokens (RFC 5626 §5.3): over
    /// the client connection a token names, unless the request came over that connection (the
    /// client sent it: it goes where its Request-URI says). Without `[cluster]` this node
    /// issues no tokens, and a user part in its Route means nothing.
    fn flow_target(&self, route: &RouteEdits, from: Inbound) -> FlowRoute {
        let Some(cluster) = &self.settings.cluster else {
            return FlowRoute::Inbound;
        };
        let mut target = None;
        for token in &route.flow_tokens {
            match cluster.flows.open(token) {
                Ok(flow) if Some(flow.conn) == from.conn => {}
                Ok(flow) => {
                    target.get_or_insert(Target {
                        uri: String::new(),
                        transport: flow.transport,
                        addr: flow.remote,
                        conn: Some(flow.conn),
                        route: Vec::new(),
                    });
                }
                Err(e) => {
                    debug!(remote = %from.remote, ?e, "flow token refused");
                    return FlowRoute::Forged;
                }
            }
        }
        target.map_or(FlowRoute::Inbound, FlowRoute::Deliver)
    }

    /// Digest authentication (`[module::Authentication]`), before the registrar and before
    /// routing: a REGISTER for the registrar (401), and an out-of-dialog request from a user of
    /// `auth-domains` that the proxy routes (407). Not challenged: requests answered here, ACK
    /// and CANCEL (they ride on their INVITE), in-dialog requests (To tag; as Flexisip), and
    /// requests from other domains. Answers the request (challenge or 403) and returns false
    /// when it must not go on. Credentials stay in a forwarded request, unchanged.
    fn authorize(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        decision: &Decision,
        now: Instant,
    ) -> bool {
        let Some(auth) = self.auth.as_mut() else {
            return true;
        };
        let is_register = match decision {
            Decision::Register => true,
            Decision::LookupAor | Decision::Forward | Decision::Flow => {
                let unchallengeable = matches!(msg.method(), Some(Method::Ack | Method::Cancel));
                let in_dialog = msg.to().ok().and_then(|to| to.tag()).is_some();
                let local_user = msg.from().ok().is_some_and(|f| match f.uri {
                    Uri::Sip(uri) => auth.domains.contains(uri.host.text),
                    _ => false,
                });
                if unchallengeable || in_dialog || !local_user {
                    return true;
                }
                false
            }
            Decision::Reply { .. } | Decision::Absorb => return true,
        };
        let outcome = auth
            .authenticator
            .check(msg, from.remote, is_register, now, self.wall_clock);
        match outcome {
            AuthOutcome::NotRequired(_) => true,
            AuthOutcome::Authenticated { .. } => {
                self.counters.auth_authenticated += 1;
                true
            }
            AuthOutcome::Challenge {
                status, headers, ..
            } => {
                self.counters.auth_challenged += 1;
                let mut extra: Vec<(&str, String)> = headers
                    .into_iter()
                    .filter_map(|(name, value)| Some((name.canonical()?, value)))
                    .collect();
                // Over UDP the source may be forged: a short request gets fewer challenges
                // (strongest first) rather than a response many times its size.
                if from.transport == Transport::Udp {
                    let kept = dos::headers_within_budget(msg.as_bytes().len(), &extra);
                    if kept < extra.len() {
                        extra.truncate(kept);
                        self.counters.challenges_trimmed += 1;
                    }
                }
                self.reply(
                    server,
                    msg,
                    from,
                    status,
                    reason_phrase(status),
                    &extra,
                    now,
                );
                false
            }
            AuthOutcome::Forbidden { reason } => {
                self.counters.auth_forbidden += 1;
                debug!(remote = %from.remote, ?reason, "authentication refused");
                self.reply(server, msg, from, 403, "Forbidden", &[], now);
                false
            }
        }
    }

    /// Sends a locally generated response on a server transaction.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        status: u16,
        reason: &str,
        extra: &[(&str, String)],
        now: Instant,
    ) {
        let stamp = ViaStamp::for_request(msg, from.remote);
        let mut response = Vec::new();
        let tag = self.to_tag(msg);
        let mut w = stamped_response_to(&mut response, msg, &stamp, status, reason, Some(&tag));
        for (name, value) in extra {
            w.header(name, value);
        }
        w.finish(None, b"");
        if let Err(e) = self
            .transactions
            .respond_local(server, status, response.into(), now)
        {
            debug!("response {status} not sent: {e:?}");
        }
    }

    /// A To tag for responses this node generates: stable for a request, so retransmitted
    /// requests that reach a new transaction get the same tag.
    fn to_tag(&self, msg: &Message<'_>) -> String {
        let branch = msg.top_via().ok().and_then(|v| v.branch()).unwrap_or("");
        format!(
            "{:x}",
            stable_hash(&[msg.call_id().unwrap_or("").as_bytes(), branch.as_bytes()])
        )
    }

    // ---- registrar ------------------------------------------------------------------------

    fn on_register(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let source = Source {
            transport: from.transport,
            remote: from.remote,
            local: from.local,
            connection: from.conn,
        };
        let mut request = match RegisterRequest::from_message(msg, source, &self.settings.registrar)
        {
            Ok(request) => request,
            Err(e) => return self.answer_register(server, msg, from, Err(e), now),
        };
        // A stream client is reachable only over its connection, which this node holds: the
        // binding gets this node's internal URI with the connection's flow token as the first
        // Path entry (RFC 3327 §5.3 order: nearest the registrar first), so the other nodes
        // route to it through here.
        if let Some(cluster) = &self.settings.cluster {
            if let Some(token) = cluster.token_for(from.transport, from.remote, from.conn) {
                request
                    .path
                    .insert(0, cluster.internal_uri(Some(&token)).into());
            }
        }
        let owner = owner_shard(&request.aor, self.shards);
        if owner == self.shard {
            if self.settings.registrar_db == RegistrarDb::Memory {
                let result = self.bindings.register(request, now);
                return self.answer_register(server, msg, from, result, now);
            }
            let reply_to = ReplyTo::Here {
                server,
                request: msg.as_bytes().into(),
                inbound: from,
            };
            return self.register_here(request, reply_to, now, out);
        }
        let Some(token) = self.wait(
            Waiting::Register {
                server,
                request: msg.as_bytes().into(),
                inbound: from,
            },
            now,
        ) else {
            return self.overloaded(server, msg, from, now);
        };
        out.push(Output::ToShard {
            shard: owner,
            msg: ShardMsg::Register {
                from: self.shard,
                token,
                request,
            },
        });
    }

    /// Applies a REGISTER for an AOR this shard owns: in memory at once, or through the
    /// database (the store, its cache, checks it first; the answer waits for the master).
    fn register_here(
        &mut self,
        request: RegisterRequest,
        reply_to: ReplyTo,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let (node, wait_limit) = match &self.settings.registrar_db {
            RegistrarDb::Memory => {
                let result = self.bindings.register(request, now);
                return self.deliver_registered(reply_to, result, now, out);
            }
            RegistrarDb::Redis { node, wait_limit } => (node, *wait_limit),
        };
        let call = if request.is_fetch() {
            Ok(redis_data::lookup_call(&request.aor))
        } else {
            self.bindings
                .check_register(&request, now)
                .and_then(|()| redis_data::register_call(&request, &self.settings.registrar, node))
        };
        let call = match call {
            Ok(call) if self.database_waits.len() < self.settings.max_waiting => call,
            Ok(_) => {
                self.counters.overloaded += 1;
                let full = RegisterError::DatabaseUnavailable {
                    retry_after_s: DATABASE_RETRY_AFTER_S,
                };
                return self.deliver_registered(reply_to, Err(full), now, out);
            }
            Err(e) => return self.deliver_registered(reply_to, Err(e), now, out),
        };
        self.next_token += 1;
        let token = self.next_token;
        let generation = self.cache_generation;
        self.database_waits.insert(
            token,
            DatabaseWait::Register {
                request,
                reply_to,
                generation,
            },
        );
        self.database_deadlines.push_back((now + wait_limit, token));
        out.push(Output::ToDatabase { token, call });
    }

    /// The database's answer to a REGISTER of [`ShardCore::register_here`]: the store caches
    /// what Redis now holds for the AOR, and the client gets its 200 OK (or 503).
    pub fn on_database_result(
        &mut self,
        token: u64,
        result: DatabaseResult,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        match self.database_waits.remove(&token) {
            Some(DatabaseWait::Register {
                request,
                reply_to,
                generation,
            }) => {
                let cache = generation == self.cache_generation;
                let result = match result {
                    DatabaseResult::Reply(reply) => {
                        self.apply_database_reply(&request, &reply, cache, now)
                    }
                    DatabaseResult::Unavailable { retry_after_s } => {
                        Err(RegisterError::DatabaseUnavailable { retry_after_s })
                    }
                };
                if matches!(result, Err(RegisterError::DatabaseUnavailable { .. })) {
                    self.counters.database_unavailable += 1;
                }
                self.deliver_registered(reply_to, result, now, out);
            }
            Some(DatabaseWait::Lookup {
                aor,
                reply_to,
                generation,
            }) => {
                let cache = generation == self.cache_generation;
                let targets = match result {
                    DatabaseResult::Reply(reply) => {
                        self.apply_database_lookup(&aor, &reply, cache, now)
                    }
                    DatabaseResult::Unavailable { retry_after_s } => Err(retry_after_s),
                };
                if targets.is_err() {
                    self.counters.database_unavailable += 1;
                }
                self.deliver_targets(reply_to, targets, now, out);
            }
            Some(DatabaseWait::Operator) => {
                let read = match result {
                    DatabaseResult::Reply(reply) => redis_data::decode_lookup(&reply, now)
                        .map(|lookup| lookup.bindings)
                        .map_err(|e| format!("Redis: {e}")),
                    DatabaseResult::Unavailable { .. } => {
                        Err("Redis did not answer in time".to_owned())
                    }
                };
                self.operator_reads.push((token, read));
                return;
            }
            None => return,
        }
        self.drain_actions(now, out);
    }

    /// Lists the targets of what the lookup script returned for `aor`, and caches it when
    /// `cache` (no change notification came in meanwhile).
    fn apply_database_lookup(
        &mut self,
        aor: &Aor,
        reply: &redis_data::Reply,
        cache: bool,
        now: Instant,
    ) -> Result<Vec<Target>, u32> {
        let lookup = redis_data::decode_lookup(reply, now).map_err(|e| {
            warn!(%aor, "registrar database: {e}");
            DATABASE_RETRY_AFTER_S
        })?;
        let bindings = self.only_our_connections(lookup.bindings);
        if cache && self.bindings.load(aor, &bindings, now).is_ok() {
            return Ok(self.targets(aor, now));
        }
        // Not to be cached, or the cache is full: route from what was read, without keeping it.
        let mut scratch = BindingStore::new(RegistrarConfig {
            max_aors_per_shard: 1,
            ..self.settings.registrar.clone()
        });
        let _ = scratch.load(aor, &bindings, now);
        Ok(targets_in(&scratch, aor, now, &self.settings))
    }

    /// A connection id means something only on the node that holds the connection: other
    /// nodes' bindings are reached by their addresses.
    fn only_our_connections(&self, mut bindings: Vec<StoredBinding>) -> Vec<StoredBinding> {
        if let RegistrarDb::Redis { node, .. } = &self.settings.registrar_db {
            for b in bindings.iter_mut().filter(|b| b.node != *node) {
                b.source.connection = None;
            }
        }
        bindings
    }

    /// The password file was read again (SIGHUP): challenges and checks use it from now on.
    pub fn set_password_db(&mut self, db: Arc<PasswordDb>) {
        if let Some(auth) = &mut self.auth {
            auth.authenticator.set_password_db(db);
        }
    }

    /// Redis says an AOR changed (or that changes were missed): the cache forgets it (or
    /// everything), and answers still on their way are not cached.
    pub fn on_cache_change(&mut self, change: CacheChange) {
        self.cache_generation += 1;
        match change {
            CacheChange::Changed(aor) => {
                self.bindings.forget(&aor);
            }
            CacheChange::Resync => self.bindings.clear(),
        }
    }

    fn deliver_targets(
        &mut self,
        reply_to: LookupReplyTo,
        targets: Result<Vec<Target>, u32>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        match reply_to {
            LookupReplyTo::Here {
                server,
                request,
                inbound,
                route,
            } => self.on_targets(server, request, inbound, &route, targets, now),
            LookupReplyTo::Shard { shard, token } => out.push(Output::ToShard {
                shard,
                msg: ShardMsg::Found { token, targets },
            }),
        }
    }

    fn apply_database_reply(
        &mut self,
        req: &RegisterRequest,
        reply: &redis_data::Reply,
        cache: bool,
        now: Instant,
    ) -> Result<RegisterOutcome, RegisterError> {
        let decoded = if req.is_fetch() {
            redis_data::decode_lookup(reply, now).map(|r| (r.bindings, Vec::new(), 0))
        } else {
            redis_data::decode_register(reply, now).map(|r| (r.bindings, r.outcomes, r.evicted))
        };
        let (bindings, outcomes, evicted) = decoded.map_err(|e| {
            warn!(aor = %req.aor, "registrar database: {e}");
            RegisterError::DatabaseUnavailable {
                retry_after_s: DATABASE_RETRY_AFTER_S,
            }
        })?;
        let bindings = self.only_our_connections(bindings);
        if !cache {
            // A change notification came in while the write was out: what it returned may
            // predate that change, so the next lookup reads Redis.
            self.bindings.forget(&req.aor);
        } else if self.bindings.load(&req.aor, &bindings, now).is_err() {
            // The cache is full; Redis holds the bindings all the same.
            debug!(aor = %req.aor, "binding cache full");
        }
        let count = |o: ContactOutcome| outcomes.iter().filter(|&&x| x == o).count();
        Ok(RegisterOutcome {
            aor: req.aor.clone(),
            contacts: bindings
                .iter()
                .filter(|b| now < b.expires_at)
                .map(|b| ContactEcho::of_stored(b, now))
                .collect(),
            path: if req.path_supported {
                req.path.clone()
            } else {
                Vec::new()
            },
            require_outbound: req.outbound_supported && bindings.iter().any(|b| b.reg_id.is_some()),
            added: count(ContactOutcome::Added),
            refreshed: count(ContactOutcome::Refreshed),
            removed: count(ContactOutcome::Removed),
            evicted: usize::try_from(evicted).unwrap_or(usize::MAX),
        })
    }

    fn deliver_registered(
        &mut self,
        reply_to: ReplyTo,
        result: Result<RegisterOutcome, RegisterError>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        match reply_to {
            ReplyTo::Here {
                server,
                request,
                inbound,
            } => {
                if let Ok(msg) = Message::parse_datagram(&request) {
                    self.answer_register(server, &msg, inbound, result, now);
                }
            }
            ReplyTo::Shard { shard, token } => out.push(Output::ToShard {
                shard,
                msg: ShardMsg::Registered { token, result },
            }),
        }
    }

    /// The answer to a REGISTER (§10.3 step 8): every current binding with its expires, Date,
    /// Path when the client supports it; or the registrar's error (423 with Min-Expires).
    fn answer_register(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        result: Result<RegisterOutcome, RegisterError>,
        now: Instant,
    ) {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                self.counters.registers_refused += 1;
                let status = e.status();
                let min_expires = status.min_expires_s.map(|m| ("Min-Expires", m.to_string()));
                let retry_after = status.retry_after_s.map(|s| ("Retry-After", s.to_string()));
                let extra: Vec<(&str, String)> =
                    min_expires.into_iter().chain(retry_after).collect();
                return self.reply(server, msg, from, status.code, status.reason, &extra, now);
            }
        };
        self.counters.registers_accepted += 1;
        let mut extra: Vec<(&str, String)> = outcome
            .contacts
            .iter()
            .map(|c| ("Contact", c.to_string()))
            .collect();
        if !outcome.path.is_empty() {
            extra.push(("Path", outcome.path.join(", ")));
        }
        if outcome.require_outbound {
            extra.push(("Require", "outbound".into()));
        }
        extra.push(("Date", self.date.clone()));
        self.reply(server, msg, from, 200, "OK", &extra, now);
    }

    // ---- proxy ----------------------------------------------------------------------------

    fn on_lookup(
        &mut self,
        server: ServerId,
        msg: &Message<'_>,
        from: Inbound,
        route: RouteEdits,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(Uri::Sip(uri)) = msg.request_uri() else {
            return self.reply(server, msg, from, 416, "Unsupported URI Scheme", &[], now);
        };
        let aor = Aor::from_sip_uri(uri);
        let owner = owner_shard(&aor, self.shards);
        if owner == self.shard {
            let reply_to = LookupReplyTo::Here {
                server,
                request: msg.as_bytes().into(),
                inbound: from,
                route,
            };
            return self.lookup_here(aor, reply_to, now, out);
        }
        let Some(token) = self.wait(
            Waiting::Lookup {
                server,
                request: msg.as_bytes().into(),
                inbound: from,
                route,
            },
            now,
        ) else {
            return self.overloaded(server, msg, from, now);
        };
        out.push(Output::ToShard {
            shard: owner,
            msg: ShardMsg::Lookup {
                from: self.shard,
                token,
                aor,
            },
        });
    }

    /// Lists the targets of an AOR this shard owns: from the cache, or, in Redis mode when the
    /// cache does not hold the AOR (another node registered it, or this node restarted), from
    /// Redis.
    fn lookup_here(
        &mut self,
        aor: Aor,
        reply_to: LookupReplyTo,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let wait_limit = match &self.settings.registrar_db {
            RegistrarDb::Redis { wait_limit, .. } if !self.bindings.holds(&aor) => *wait_limit,
            _ => {
                let targets = self.targets(&aor, now);
                return self.deliver_targets(reply_to, Ok(targets), now, out);
            }
        };
        if self.database_waits.len() >= self.settings.max_waiting {
            self.counters.overloaded += 1;
            return self.deliver_targets(reply_to, Err(DATABASE_RETRY_AFTER_S), now, out);
        }
        self.next_token += 1;
        let token = self.next_token;
        let call = redis_data::lookup_call(&aor);
        let generation = self.cache_generation;
        self.database_waits.insert(
            token,
            DatabaseWait::Lookup {
                aor,
                reply_to,
                generation,
            },
        );
        self.database_deadlines.push_back((now + wait_limit, token));
        out.push(Output::ToDatabase { token, call });
    }

    /// The reachable contacts of an AOR, best first. Contacts naming a host by DNS name are
    /// skipped: this node does not resolve names yet.
    fn targets(&self, aor: &Aor, now: Instant) -> Vec<Target> {
        targets_in(&self.bindings, aor, now, &self.settings)
    }

    fn on_targets(
        &mut self,
        server: ServerId,
        request: Rc<[u8]>,
        from: Inbound,
        route: &RouteEdits,
        targets: Result<Vec<Target>, u32>,
        now: Instant,
    ) {
        let targets = match targets {
            Ok(targets) => targets,
            Err(retry_after_s) => {
                let Ok(msg) = Message::parse_datagram(&request) else {
                    return;
                };
                let retry_after = [("Retry-After", retry_after_s.to_string())];
                return self.reply(
                    server,
                    &msg,
                    from,
                    503,
                    "Registrar Database Unavailable",
                    &retry_after,
                    now,
                );
            }
        };
        if targets.is_empty() {
            let Ok(msg) = Message::parse_datagram(&request) else {
                return;
            };
            return self.reply(server, &msg, from, 404, "Not Found", &[], now);
        }
        self.fork(server, request, from, route, targets, now);
    }

    /// Forwards a request to every target, one client transaction each (§16.6), and keeps the
    /// response context (§16.7).
    fn fork(
        &mut self,
        server: ServerId,
        request: Rc<[u8]>,
        from: Inbound,
        route: &RouteEdits,
        targets: Vec<Target>,
        now: Instant,
    ) {
        let Ok(msg) = Message::parse_datagram(&request) else {
            return;
        };
        let stamp = ViaStamp::for_request(&msg, from.remote);
        let method = msg.method();
        let record_route = matches!(
            method,
            Some(Method::Invite | Method::Subscribe | Method::Refer | Method::Notify)
        );
        let loop_hash = loop_hash(&msg);
        let cluster = self.settings.cluster.as_ref();
        // Only a Record-Route carries it: no MAC for the requests that get none.
        let inbound_token = cluster
            .filter(|_| record_route)
            .and_then(|c| c.token_for(from.transport, from.remote, from.conn));
        let mut call = ProxyCall {
            request: request.clone(),
            inbound: from,
            fork: Fork::new(targets.len()),
            branches: Vec::with_capacity(targets.len()),
            cancelled: false,
            final_sent: false,
            timer_c: (method == Some(Method::Invite)).then_some(now + TIMER_C),
        };
        let mut forwarded = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            self.next_branch += 1;
            let branch = format!(
                "z9hG4bK{loop_hash:016x}.{}.{}",
                self.shard, self.next_branch
            );
            let mut edits = self.forwarding_edits(&msg, &stamp, route, target, &branch);
            if route.strict_request_uri.is_none() && !target.uri.is_empty() {
                edits.set_request_uri(&target.uri);
            }
            for value in &target.route {
                edits.prepend_route(value);
            }
            if record_route {
                // RFC 5658: when the two sides reach this node differently (transport, the
                // internal address of a cluster, a flow token), Record-Route twice, the entry
                // facing the callee on top, so each side reaches this node its own way.
                let target_token =
                    cluster.and_then(|c| c.token_for(target.transport, target.addr, target.conn));
                let inbound_rr =
                    self.record_route(from.transport, from.remote.ip(), inbound_token.as_deref());
                let outbound_rr =
                    self.record_route(target.transport, target.addr.ip(), target_token.as_deref());
                if outbound_rr != inbound_rr {
                    edits.prepend_record_route(&outbound_rr);
                }
                edits.prepend_record_route(&inbound_rr);
            }
            edits.write(&mut forwarded);
            let peer = transaction::Peer {
                transport: target.transport,
                addr: target.addr,
                conn: target.conn,
            };
            let client =
                match self
                    .transactions
                    .start_client(forwarded.as_slice().into(), peer, now)
                {
                    Ok(client) => Some(client),
                    Err(e) => {
                        debug!("branch to {} not started: {e:?}", target.addr);
                        None
                    }
                };
            if let Some(client) = client {
                self.branch_of.insert(client, (server, index));
            }
            call.branches.push(BranchInfo {
                client,
                peer,
                stored: None,
                cancel_sent: false,
            });
        }
        self.counters.forwarded += 1;
        if let Some(at) = call.timer_c {
            self.timer_c.insert((at, server));
        }
        let failed: Vec<usize> = call
            .branches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.client.is_none())
            .map(|(i, _)| i)
            .collect();
        self.calls.insert(server, call);
        for index in failed {
            self.branch_failed(server, index, now);
        }
    }

    /// The next hop of a request routed by Route or by an IP-literal Request-URI (§16.6 step 6
    /// and 7; no DNS: names are not resolved yet).
    fn next_hop(&self, msg: &Message<'_>, route: &RouteEdits) -> Option<Target> {
        let skip = route.pop_top_routes;
        let next_route = msg
            .name_addrs(HeaderName::Route)
            .filter_map(Result::ok)
            .nth(skip);
        let uri_text = match (&next_route, &route.strict_request_uri) {
            (_, Some(strict)) => strict.clone(),
            (Some(r), None) => r.uri.as_str().to_owned(),
            (None, None) => msg.request_uri()?.as_str().to_owned(),
        };
        let (transport, addr) = contact_address(&uri_text)?;
        Some(Target {
            // Loose routing keeps the Request-URI (§16.6 step 6): no rewrite.
            uri: String::new(),
            transport,
            addr,
            conn: None,
            route: Vec::new(),
        })
    }

    /// The edits every forwarded request gets (§16.6 steps 3–8): the received request's Via
    /// stamped with received/rport, Max-Forwards decremented, this node's Routes removed (or the
    /// strict-router Request-URI restored), and this node's Via with `branch` on top.
    fn forwarding_edits<'m, 'a>(
        &self,
        msg: &'m Message<'a>,
        stamp: &ViaStamp,
        route: &RouteEdits,
        target: &Target,
        branch: &str,
    ) -> ForwardEdits<'m, 'a> {
        let mut edits = ForwardEdits::new(msg);
        edits
            .stamp_top_via(stamp)
            .decrement_max_forwards()
            .remove_top_routes(route.pop_top_routes);
        if let Some(uri) = &route.strict_request_uri {
            edits.set_request_uri(uri).remove_last_route();
        }
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            target.transport,
            self.sent_by(target.transport)
        );
        edits.push_via(&via);
        edits
    }

    /// The ACK for a 2xx belongs to no transaction (§13.2.2.4): forward it statelessly along
    /// its route, or absorb it when it is for us.
    fn forward_ack(&mut self, msg: &Message<'_>, from: Inbound, out: &mut Vec<Output>) {
        let (mut decision, mut route) = routing::decide(msg, &self.settings.identity);
        let mut target = None;
        if decision == Decision::Flow {
            match self.flow_target(&route, from) {
                FlowRoute::Deliver(flow) => target = Some(flow),
                FlowRoute::Inbound => {
                    (decision, route) = routing::decide_without_flows(msg, &self.settings.identity);
                }
                FlowRoute::Forged => {}
            }
        }
        if decision == Decision::Forward {
            target = self.next_hop(msg, &route);
        }
        let Some(target) = target else {
            if matches!(decision, Decision::Forward | Decision::Flow) {
                self.counters.dropped += 1;
            }
            return;
        };
        let stamp = ViaStamp::for_request(msg, from.remote);
        let branch = format!("z9hG4bK{:016x}.ack", loop_hash(msg));
        let mut bytes = Vec::new();
        self.forwarding_edits(msg, &stamp, &route, &target, &branch)
            .write(&mut bytes);
        out.push(Output::Send {
            transport: target.transport,
            to: target.addr,
            conn: target.conn,
            bytes: bytes.into(),
            txn: None,
        });
    }

    fn on_response(&mut self, msg: &Message<'_>, now: Instant, out: &mut Vec<Output>) {
        match self.transactions.handle_response(msg, now) {
            ResponseMatch::Deliver(client) => self.on_branch_response(client, msg, now),
            ResponseMatch::Absorbed => {}
            ResponseMatch::Stray => self.forward_stray_response(msg, out),
        }
    }

    /// A response no client transaction wants — typically a 2xx retransmitted after the INVITE
    /// transaction ended — is routed statelessly by its Via (§16.11, §18.2.2) when the top Via is
    /// ours; anything else is dropped.
    fn forward_stray_response(&mut self, msg: &Message<'_>, out: &mut Vec<Output>) {
        let mut vias = msg.vias().filter_map(Result::ok);
        let (Some(ours), Some(next)) = (vias.next(), vias.next()) else {
            self.counters.dropped += 1;
            return;
        };
        let is_ours = ours
            .host
            .text
            .eq_ignore_ascii_case(&self.settings.advertised_host)
            && ours
                .branch()
                .is_some_and(|b| b.starts_with("z9hG4bK") && b.contains('.'));
        let transport = Transport::from_token(next.transport);
        let ip = next
            .received()
            .and_then(|r| r.trim_matches(['[', ']']).parse().ok())
            .or(match next.host.kind {
                HostKind::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
                HostKind::Ipv6(Some(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            });
        let (true, Some(transport), Some(ip)) = (is_ours, transport, ip) else {
            self.counters.dropped += 1;
            return;
        };
        let port = match next.rport() {
            Some(Some(port)) => port,
            _ => next.port.unwrap_or(transport.default_port()),
        };
        let mut bytes = Vec::new();
        ForwardEdits::new(msg).remove_top_via().write(&mut bytes);
        out.push(Output::Send {
            transport,
            to: SocketAddr::new(ip, port),
            conn: None,
            bytes: bytes.into(),
            txn: None,
        });
    }

    fn on_branch_response(&mut self, client: ClientId, msg: &Message<'_>, now: Instant) {
        let Some(&(server, index)) = self.branch_of.get(&client) else {
            return;
        };
        let Some(status) = msg.status() else {
            return;
        };
        let mut upstream = Vec::new();
        ForwardEdits::new(msg).remove_top_via().write(&mut upstream);
        if status < 200 {
            self.restart_timer_c(server, now);
        }
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        match call.fork.on_response(index, status) {
            Verdict::ForwardNow => {
                if status >= 200 {
                    call.final_sent = true;
                }
                if let Err(e) = self
                    .transactions
                    .respond(server, status, upstream.into(), now)
                {
                    debug!("response {status} not forwarded: {e:?}");
                }
            }
            Verdict::Store => call.branches[index].stored = Some(upstream.into()),
            Verdict::Drop => {}
        }
        self.after_branch_event(server, now);
    }

    /// A branch ended without a response: Timer B/F or a transport error. Counted as 408 in the
    /// response context (§16.7 step 2, §16.9); if it wins, the caller gets 480.
    fn branch_failed(&mut self, server: ServerId, index: usize, now: Instant) {
        if let Some(call) = self.calls.get_mut(&server) {
            call.fork.on_failure(index, 408);
        }
        self.after_branch_event(server, now);
    }

    /// Cancels what must be cancelled and sends the best final response once every branch is
    /// done (§16.7 steps 5, 6, 10).
    fn after_branch_event(&mut self, server: ServerId, now: Instant) {
        let Some(call) = self.calls.get_mut(&server) else {
            return;
        };
        let mut to_cancel = call.fork.branches_to_cancel();
        if call.cancelled {
            // Every branch that can be cancelled now (§16.10).
            to_cancel = (0..call.branches.len()).collect();
        }
        let mut cancels = Vec::new();
        for index in to_cancel {
            let branch = &mut call.branches[index];
            if branch.cancel_sent {
                continue;
            }
            let Some(client) = branch.client else {
                continue;
            };
            if let Some(cancel) = self.transactions.cancel_request(client) {
                branch.cancel_sent = true;
                cancels.push((cancel, branch.peer));
            }
        }
        let finished = call.fork.all_finished() && !call.final_sent;
        let winner = call.fork.winner();
        if finished {
            call.final_sent = true;
        }
        let (request, inbound) = (call.request.clone(), call.inbound);
        let stored = winner.and_then(|(i, _)| call.branches[i].stored.clone());
        for (cancel, peer) in cancels {
            if let Err(e) = self.transactions.start_client(cancel.into(), peer, now) {
                debug!("CANCEL not sent: {e:?}");
            }
        }
        if !finished {
            return;
        }
        let Some((_, status)) = winner else { return };
        let upstream = fork::upstream_status(status);
        match stored {
            Some(bytes) if upstream == status => {
                if let Err(e) = self.transactions.respond(server, status, bytes, now) {
                    debug!("best response {status} not sent: {e:?}");
                }
            }
            _ => {
                // A synthesized failure (no answer at all) or a 503 the proxy turns into 500.
                let Ok(msg) = Message::parse_datagram(&request) else {
                    return;
                };
                let (status, reason) = if stored.is_none() {
                    (480, "Temporarily Unavailable")
                } else {
                    (upstream, reason_phrase(upstream))
                };
                self.reply(server, &msg, inbound, status, reason, &[], now);
            }
        }
    }

    /// §9.2 and §16.10: a CANCEL gets its own 200 (or 481); the INVITE's pending branches are
    /// cancelled, and the INVITE is answered by whatever the branches answer (487s).
    fn on_cancel(&mut self, server: ServerId, msg: &Message<'_>, from: Inbound, now: Instant) {
        let Some(target) = self.transactions.cancel_target(server) else {
            return self.reply(
                server,
                msg,
                from,
                481,
                "Call/Transaction Does Not Exist",
                &[],
                now,
            );
        };
        self.reply(server, msg, from, 200, "OK", &[], now);
        if let Some(call) = self.calls.get_mut(&target) {
            call.cancelled = true;
            self.after_branch_event(target, now);
            return;
        }
        // The INVITE is still waiting for its targets: answer it 487 now.
        let waiting = self
            .waiting
            .iter()
            .find(|(_, w)| matches!(w, Waiting::Lookup { server, .. } if *server == target))
            .map(|(token, _)| *token);
        if let Some(token) = waiting {
            if let Some(Waiting::Lookup {
                request, inbound, ..
            }) = self.waiting.remove(&token)
            {
                if let Ok(invite) = Message::parse_datagram(&request) {
                    self.reply(
                        target,
                        &invite,
                        inbound,
                        487,
                        "Request Terminated",
                        &[],
                        now,
                    );
                }
            }
        }
    }

    // ---- other shards ---------------------------------------------------------------------

    fn wait(&mut self, waiting: Waiting, now: Instant) -> Option<u64> {
        if self.waiting.len() >= self.settings.max_waiting {
            return None;
        }
        let limit = match &self.settings.registrar_db {
            RegistrarDb::Memory => WAIT_LIMIT,
            RegistrarDb::Redis { wait_limit, .. } => WAIT_LIMIT.max(*wait_limit),
        };
        self.next_token += 1;
        self.waiting.insert(self.next_token, waiting);
        self.waiting_deadlines
            .push_back((now + limit, self.next_token));
        Some(self.next_token)
    }

    fn overloaded(&mut self, server: ServerId, msg: &Message<'_>, from: Inbound, now: Instant) {
        self.counters.overloaded += 1;
        self.reply(
            server,
            msg,
            from,
            503,
            "Overloaded",
            &[("Retry-After", "5".into())],
            now,
        );
    }

    pub fn on_shard_message(&mut self, msg: ShardMsg, now: Instant, out: &mut Vec<Output>) {
        match msg {
            ShardMsg::Register {
                from,
                token,
                request,
            } => {
                let reply_to = ReplyTo::Shard { shard: from, token };
                self.register_here(request, reply_to, now, out);
            }
            ShardMsg::Lookup { from, token, aor } => {
                let reply_to = LookupReplyTo::Shard { shard: from, token };
                self.lookup_here(aor, reply_to, now, out);
            }
            ShardMsg::Registered { token, result } => {
                if let Some(Waiting::Register {
                    server,
                    request,
                    inbound,
                }) = self.waiting.remove(&token)
                {
                    if let Ok(msg) = Message::parse_datagram(&request) {
                        self.answer_register(server, &msg, inbound, result, now);
                    }
                }
            }
            ShardMsg::Response { bytes } => match Message::parse_datagram(&bytes) {
                Ok(msg) => self.on_response(&msg, now, out),
                Err(_) => self.counters.dropped += 1,
            },
            ShardMsg::Found { token, targets } => {
                if let Some(Waiting::Lookup {
                    server,
                    request,
                    inbound,
                    route,
                }) = self.waiting.remove(&token)
                {
                    self.on_targets(server, request, inbound, &route, targets, now);
                }
            }
        }
        self.drain_actions(now, out);
    }

    /// A message for another shard could not be queued (its channel is full): whatever waited
    /// on it is answered 503; an answer that could not be returned is lost with its request,
    /// which the client retransmits.
    pub fn on_shard_unreachable(&mut self, msg: ShardMsg, now: Instant, out: &mut Vec<Output>) {
        self.counters.overloaded += 1;
        let token = match msg {
            ShardMsg::Register { token, .. } | ShardMsg::Lookup { token, .. } => token,
            ShardMsg::Registered { .. } | ShardMsg::Found { .. } | ShardMsg::Response { .. } => {
                return;
            }
        };
        self.give_up_waiting(token, now);
        self.drain_actions(now, out);
    }

    /// Answers 503 to a request whose answer from another shard will not come.
    fn give_up_waiting(&mut self, token: u64, now: Instant) {
        let (server, request, inbound) = match self.waiting.remove(&token) {
            Some(Waiting::Register {
                server,
                request,
                inbound,
            })
            | Some(Waiting::Lookup {
                server,
                request,
                inbound,
                ..
            }) => (server, request, inbound),
            None => return,
        };
        if let Ok(msg) = Message::parse_datagram(&request) {
            self.reply(
                server,
                &msg,
                inbound,
                503,
                "Overloaded",
                &[("Retry-After", "5".into())],
                now,
            );
        }
    }

    // ---- transactions -> outputs ----------------------------------------------------------

    fn drain_actions(&mut self, now: Instant, out: &mut Vec<Output>) {
        while let Some(action) = self.transactions.poll_action() {
            match action {
                Action::Send { id, to, bytes } => {
                    if matches!(id, TransactionId::Server(_)) {
                        self.count_response_sent(&bytes);
                    }
                    out.push(Output::Send {
                        transport: to.transport,
                        to: to.addr,
                        conn: to.conn,
                        bytes,
                        txn: Some(id),
                    })
                }
                Action::Timeout(TransactionId::Client(client))
                | Action::TransportError(TransactionId::Client(client)) => {
                    if let Some(&(server, index)) = self.branch_of.get(&client) {
                        self.branch_failed(server, index, now);
                    }
                }
                Action::Timeout(TransactionId::Server(_))
                | Action::TransportError(TransactionId::Server(_)) => {}
                Action::Terminated(TransactionId::Client(client)) => {
                    self.branch_of.remove(&client);
                }
                Action::Terminated(TransactionId::Server(server)) => {
                    if let Some(call) = self.calls.remove(&server) {
                        if let Some(at) = call.timer_c {
                            self.timer_c.remove(&(at, server));
                        }
                        for branch in call.branches.iter().filter_map(|b| b.client) {
                            self.branch_of.remove(&branch);
                        }
                    }
                }
            }
        }
    }

    // ---- identity ---------------------------------------------------------------------------

    fn port(&self, transport: Transport) -> u16 {
        self.settings
            .ports
            .iter()
            .find(|(t, _)| *t == transport)
            .or_else(|| self.settings.ports.first())
            .map_or(transport.default_port(), |(_, p)| *p)
    }

    fn sent_by(&self, transport: Transport) -> String {
        format!("{}:{}", self.settings.advertised_host, self.port(transport))
    }

    /// This node's Record-Route value facing a peer: its internal URI toward another node of
    /// the cluster (the nodes reach each other without DNS), else its advertised host and the
    /// port of `transport` (the seed: "nodes use their hostname in Record-Route"), with the
    /// flow token of a client connection when there is one.
    fn record_route(&self, transport: Transport, peer: IpAddr, token: Option<&str>) -> String {
        match &self.settings.cluster {
            Some(cluster) if cluster.is_node(peer) => cluster.internal_uri(None),
            _ => cluster::route_uri(
                &self.settings.advertised_host,
                self.port(transport),
                transport,
                token,
            ),
        }
    }

    /// §16.3 step 4: a request that carries a Via of ours whose branch was computed from this
    /// very request has looped (a spiral changes the Request-URI and so the hash).
    fn is_loop(&self, msg: &Message<'_>) -> bool {
        let prefix = format!("z9hG4bK{:016x}.", loop_hash(msg));
        let host = &self.settings.advertised_host;
        msg.vias().filter_map(Result::ok).any(|via| {
            via.host.text.eq_ignore_ascii_case(host)
                && via.branch().is_some_and(|b| b.starts_with(&prefix))
        })
    }
}

/// Where a request routed by flow tokens goes ([`ShardCore::flow_target`]).
#[derive(Debug)]
enum FlowRoute {
    /// Over the client connection a token names.
    Deliver(Target),
    /// Every token names the connection the request came over: route it by its Request-URI.
    Inbound,
    /// A token fails its check (RFC 5626 §5.3: 403).
    Forged,
}

/// The fields a loop check compares (§16.6 step 8): Request-URI, From tag, To tag, Call-ID,
/// CSeq number, and the topmost Via's branch as it arrived.
fn loop_hash(msg: &Message<'_>) -> u64 {
    let from_tag = msg.from().ok().and_then(|f| f.tag()).unwrap_or("");
    let to_tag = msg.to().ok().and_then(|t| t.tag()).unwrap_or("");
    let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0).to_string();
    // The topmost Via that is not ours: the one the previous hop added.
    let ruri = msg.request_uri().map_or("", |u| u.as_str());
    stable_hash(&[
        ruri.as_bytes(),
        from_tag.as_bytes(),
        to_tag.as_bytes(),
        msg.call_id().unwrap_or("").as_bytes(),
        cseq.as_bytes(),
    ])
}

/// FNV-1a over the parts, with a separator: stable across processes and runs.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The reachable contacts of `aor` in `store`, best first (see [`ShardCore::targets`]).
fn targets_in(
    store: &BindingStore,
    aor: &Aor,
    now: Instant,
    settings: &CoreSettings,
) -> Vec<Target> {
    store
        .lookup(aor, now)
        .filter_map(|b| {
            if !b.path.is_empty() {
                return path_target(b, settings);
            }
            let contact = contact_address(&b.uri);
            let (transport, addr, conn) = match b.next_hop() {
                NextHop::Address { transport, addr } => (transport, addr, None),
                NextHop::Connection {
                    transport,
                    connection,
                    fallback,
                } => (
                    transport,
                    contact.map_or(fallback, |(_, a)| a),
                    Some(connection),
                ),
                NextHop::ContactUri => {
                    let (transport, addr) = contact?;
                    (transport, addr, None)
                }
            };
            Some(Target {
                uri: b.uri.to_string(),
                transport,
                addr,
                conn,
                route: Vec::new(),
            })
        })
        .collect()
}

/// The target of a binding registered with a Path (RFC 3327 §5.3): its first entry is the next
/// hop (when it names a host rather than an address, which this node does not resolve yet, the
/// proxy the REGISTER came from, which is usually the same) and the Path the route set. When
/// that entry is this node's own (a cluster node's Path with a flow token), the request goes
/// straight over the connection the token names, with the rest of the Path as its route set;
/// `None` when its token fails the check (the node restarted: the connection is gone).
fn path_target(b: &Binding, settings: &CoreSettings) -> Option<Target> {
    let first = NameAddr::parse(b.path.first()?.as_bytes()).ok()?;
    let Uri::Sip(next) = first.uri else {
        return None;
    };
    if settings.identity.is_this_node(&next) {
        let flow = match (&settings.cluster, next.user) {
            (Some(cluster), Some(token)) => cluster.flows.open(token),
            _ => return None,
        };
        let flow = flow
            .map_err(|e| debug!(contact = %b.uri, ?e, "own Path entry refused"))
            .ok()?;
        return Some(Target {
            uri: b.uri.to_string(),
            transport: flow.transport,
            addr: flow.remote,
            conn: Some(flow.conn),
            route: b.path[1..].iter().map(|p| p.to_string()).collect(),
        });
    }
    let (transport, addr) = sip_uri_address(&next).unwrap_or((b.source.transport, b.source.remote));
    Some(Target {
        uri: b.uri.to_string(),
        transport,
        addr,
        conn: None,
        route: b.path.iter().map(|p| p.to_string()).collect(),
    })
}

/// The transport and address a SIP URI names, when its host is an IP literal (§18.1.1 / RFC
/// 3263 without DNS: the `transport` parameter, else UDP; `sips:` means TLS; the default port
/// of the transport).
fn contact_address(uri: &str) -> Option<(Transport, SocketAddr)> {
    let Ok(Uri::Sip(uri)) = Uri::parse(uri) else {
        return None;
    };
    sip_uri_address(&uri)
}

/// [`contact_address`] of a parsed URI.
fn sip_uri_address(uri: &SipUri<'_>) -> Option<(Transport, SocketAddr)> {
    let ip = match uri.host.kind {
        HostKind::Ipv4(ip) => std::net::IpAddr::V4(ip),
        HostKind::Ipv6(Some(ip)) => std::net::IpAddr::V6(ip),
        _ => return None,
    };
    let transport = match uri.transport().and_then(Transport::from_token) {
        Some(t) => t,
        None if uri.secure => Transport::Tls,
        None => Transport::Udp,
    };
    let port = uri.port.unwrap_or(transport.default_port());
    Some((transport, SocketAddr::new(ip, port)))
}

/// An HTTP-date (RFC 7231 §7.1.1.1, the form SIP's Date uses, RFC 3261 §20.17), e.g.
/// `Wed, 25 Nov 2026 15:40:22 GMT`.
fn http_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut out = String::with_capacity(29);
    let _ = write!(
        out,
        "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_621_222);
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 15:40:22 GMT");
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn contact_addresses() {
        assert_eq!(
            contact_address("sip:a@192.0.2.1:5070;transport=tcp"),
            Some((Transport::Tcp, "192.0.2.1:5070".parse().unwrap()))
        );
        assert_eq!(
            contact_address("sips:a@[2001:db8::1]"),
            Some((Transport::Tls, "[2001:db8::1]:5061".parse().unwrap()))
        );
        assert_eq!(contact_address("sip:a@host.example.com"), None);
    }
}
