//! The values that cross between [`super::HaClient`] and its driver: identifiers, the logical
//! Redis commands it asks for, the replies and events the driver hands back, and completions.
//!
//! The driver maps [`RedisCommand`] onto its client library (redis-rs) and the library's replies
//! onto [`Reply`]; nothing here knows RESP bytes.

use std::fmt;
use std::sync::Arc;

/// One connection the driver opens for the client. Never reused: a new connection to the same
/// address gets a new id, so a reply that arrives on a connection the client gave up is
/// recognised by its id and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One request sent on a connection; replies on a connection come back in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One registrar write accepted by [`super::HaClient::submit`]. Ids increase with submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// One read accepted by [`super::HaClient::submit_read`]. Ids increase with submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadId(pub u64);

/// Index of a script in [`super::HaConfig::scripts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScriptId(pub u16);

/// A Lua script the writes run. The SHA1 is computed by whoever builds the configuration (the
/// client only passes it to `EVALSHA`); every new master connection loads every script first,
/// and a `-NOSCRIPT` (a script cache flushed under the connection) loads them again on that
/// connection before the call is resent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub sha1: Arc<str>,
    pub source: Arc<str>,
}

/// A registrar write: `EVALSHA script keys args`. Opaque to the client, which only requires that
/// applying it twice is harmless (the scripts enforce the RFC 3261 §10.3 Call-ID/CSeq ordering
/// on the server), because a write may be replayed after a failover. A read
/// ([`super::HaClient::submit_read`]) has the same shape and runs a read-only script
/// (`EVALSHA_RO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub script: ScriptId,
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

/// What kind of peer a connection goes to; the driver may use it to pick connection settings
/// (a pub/sub connection is a subscriber and receives [`Event::Message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A sentinel, for `SENTINEL get-master-addr-by-name`.
    Sentinel,
    /// A sentinel subscribed to `+switch-master`.
    SentinelPubSub,
    /// A redis-server (the master, a node being checked, or a replica serving reads).
    Server,
    /// The master subscribed to the data-change channel
    /// ([`super::HaConfig::changes_channel`]).
    ServerPubSub,
}

impl ConnKind {
    /// Whether the connection is a subscriber, whose pushes are [`Event::Message`]s.
    pub fn is_subscriber(self) -> bool {
        matches!(self, ConnKind::SentinelPubSub | ConnKind::ServerPubSub)
    }
}

/// A logical Redis command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisCommand {
    /// `AUTH [username] password`, first on every connection that has a password configured.
    Auth {
        username: Option<String>,
        password: String,
    },
    /// `SENTINEL get-master-addr-by-name <name>`.
    SentinelGetMasterAddrByName(String),
    /// `SENTINEL replicas <name>`: the replicas a sentinel knows, for reads without a master.
    SentinelReplicas(String),
    /// `SUBSCRIBE <channels>`; the driver answers it with one [`Event::Reply`] once subscribed.
    Subscribe(Vec<String>),
    /// `ROLE`.
    Role,
    /// `INFO replication`.
    InfoReplication,
    /// `SCRIPT LOAD <source>`.
    ScriptLoad(Arc<str>),
    /// `EVALSHA <sha1> <numkeys> <keys..> <args..>`.
    EvalSha { sha1: Arc<str>, write: Arc<Write> },
    /// `EVALSHA_RO <sha1> <numkeys> <keys..> <args..>`: a read, which a replica also serves.
    EvalShaRo { sha1: Arc<str>, read: Arc<Write> },
    /// `WAIT <replicas> <timeout_ms>`.
    Wait { replicas: u32, timeout_ms: u64 },
}

/// A reply, RESP2-shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Reply>),
    Error(String),
}

impl Reply {
    /// The text of a bulk or status reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            Reply::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// What the client asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a connection (resolve `addr`, `host:port`, as the driver sees fit) and report
    /// [`Event::Connected`] or [`Event::ConnectFailed`].
    Connect {
        conn: ConnId,
        addr: Arc<str>,
        kind: ConnKind,
    },
    /// Send a command; report its reply as [`Event::Reply`] with the same ids.
    Send {
        conn: ConnId,
        request: RequestId,
        cmd: RedisCommand,
    },
    /// Close the connection and forget it; replies still in flight on it are ignored anyway.
    Close { conn: ConnId },
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        conn: ConnId,
    },
    ConnectFailed {
        conn: ConnId,
    },
    Reply {
        conn: ConnId,
        request: RequestId,
        reply: Reply,
    },
    /// The connection broke (EOF, reset, I/O error).
    Disconnected {
        conn: ConnId,
    },
    /// A pub/sub message on a subscriber connection ([`ConnKind::is_subscriber`]).
    Message {
        conn: ConnId,
        channel: String,
        payload: String,
    },
}

/// The outcome of a write, delivered exactly once per [`WriteId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A verified master executed the write (and, with `wait_replicas > 0`, that many replicas
    /// acknowledged it). `reply` is the script's answer, which may be a script error.
    Acked { write: WriteId, reply: Reply },
    /// No master could take it within `failover_hold`: answer 503 with this Retry-After.
    Failed { write: WriteId, retry_after_s: u32 },
    /// A read was served (by the master, or a replica while no master is known): `reply` is the
    /// script's answer, which may be a script error. Delivered exactly once per [`ReadId`].
    ReadDone { read: ReadId, reply: Reply },
    /// No node served the read within `request_timeout` of its submission.
    ReadFailed { read: ReadId, retry_after_s: u32 },
}

/// What the data subscription reports, for the caches of the data it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message on the changes channel: its payload (the layout publishes the AOR).
    Published(String),
    /// The subscription was (re)established after a gap (the first one, a new master, a lost
    /// connection) or changes were too many to queue: messages may have been missed, so every
    /// cached entry is suspect.
    Resync,
}

/// Why [`super::HaClient::submit`] refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The journal holds `journal_capacity` writes: answer 503 at once.
    JournalFull,
    /// `max_reads` reads are waiting already: answer 503 at once.
    TooManyReads,
    /// The write names a script that is not in the configuration (a programming error upstream).
    UnknownScript(ScriptId),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::JournalFull => f.write_str("the Redis write journal is full"),
            Rejected::TooManyReads => f.write_str("too many Redis reads waiting"),
            Rejected::UnknownScript(id) => write!(f, "no script with index {}", id.0),
        }
    }
}

impl std::error::Error for Rejected {}
