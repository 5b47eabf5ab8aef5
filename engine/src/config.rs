//! Configuration: Flexisip-compatible INI files, parsed and validated once at start-up.
//!
//! **Why Flexisip's format.** sipshard takes over from Flexisip as proxy and registrar in
//! deployments that already have a `flexisip.conf`. Where sipshard implements the same feature it
//! uses the same section, key, value syntax and default, so that file keeps working.
//!
//! **Why strict.** A typo must stop the node at start-up with one line naming the file, the line,
//! the key and what was expected (and, for an unknown key, the nearest valid one), instead of
//! running with a default the operator did not mean. Nothing here is read after start-up: the
//! shards see typed fields ([`Duration`], [`Listen`], enums), never strings.
//!
//! **One table.** `KEYS` lists every key with its section, default, one-line doc and `Kind`;
//! the kind says what a value looks like and which field of [`Config`] it sets. Parsing,
//! unknown-key suggestions, [`Config::default`] and [`Config::dump_default`] all read it, so a new
//! key is a field plus a row.
//!
//! # Format
//!
//! - `[section]` headers and `key=value` lines; section and key names are case-insensitive; spaces
//!   around names and values are trimmed.
//! - Lines whose first non-blank character is `#` or `;` are comments. As in Flexisip, a `#` after
//!   a value is part of the value (passwords may contain one), so comments go on their own line.
//! - Lists are separated by spaces, tabs or commas (Flexisip's `ConfigStringList` delimiters).
//! - Booleans: `true`/`false`, `1`/`0`, `yes`/`no`.
//! - Durations: a whole number with an optional unit `ms`, `s`, `min`, `h` or `d` (`500ms`,
//!   `10min`, `1d`). A bare number counts the key's own unit, as Flexisip's `ConfigDuration` does:
//!   seconds for expiries, milliseconds for the SIP timers, minutes for `ban-time` (the doc of
//!   each key says which). `m` is refused: Flexisip reads it as months, most people as minutes.
//! - A key set twice in one file is an error (one of the two lines was edited in vain); `--set`
//!   overrides apply after the file and the last one wins.
//! - Flexisip sections, keys and `transports` URI parameters (`maddr`, `tls-*`) that sipshard does
//!   not implement are refused, not ignored: a setting that silently does nothing is worse than a
//!   start-up error.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sipshard_net::{Host, HostKind, Uri};

use crate::auth::settings::parse_algorithms;
use crate::auth::{Algorithm, AuthSettingsError};

/// The transport of a [`Listen`]: the codec's type, shared with the registrar and the shards.
pub use sipshard_net::Transport;

// ---------------------------------------------------------------------------------------------
// The configuration values
// ---------------------------------------------------------------------------------------------

/// The node's configuration, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub global: Global,
    pub registrar: Registrar,
    pub forward: Forward,
    pub authentication: Authentication,
    pub dos_protection: DosProtection,
    pub cluster: Cluster,
}

/// `[global]`: sockets, shards, SIP timers and resource bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// `transports`: one entry per socket to open (a `sip:` URI without `transport=` gives two).
    pub transports: Vec<Listen>,
    /// `threads`: number of shards; 0 means one per core.
    pub threads: usize,
    /// `aliases`: other host names this node answers for, lower-cased.
    pub aliases: Vec<String>,
    /// `sip-t1`: RTT estimate, RFC 3261 §17.1.1.1.
    pub sip_t1: Duration,
    /// `sip-t2`: maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub sip_t2: Duration,
    /// `sip-t4`: maximum time a message stays in the network.
    pub sip_t4: Duration,
    /// `max-message-size`: largest SIP message accepted on a stream.
    pub max_message_size_bytes: usize,
    /// `shard-queue-capacity`: bound of each inter-shard channel.
    pub shard_queue_capacity: usize,
    /// `transaction-table-capacity`: transactions per shard; beyond it requests get 503.
    pub transaction_table_capacity: usize,
    /// `max-connections-per-shard`: stream connections one shard holds; beyond it new ones are
    /// closed at once.
    pub max_connections_per_shard: usize,
    /// `max-connections-per-address`: stream connections one shard accepts from one address
    /// (trusted addresses excepted).
    pub max_connections_per_address: usize,
    /// `log-level`.
    pub log_level: LogLevel,
    /// `tls-certificates-dir`: holds `agent.pem` (certificate chain and key) when
    /// `tls-certificates-file` is not set.
    pub tls_certificates_dir: Option<PathBuf>,
    /// `tls-certificates-file`: the certificate chain (PEM, leaf first) of TLS transports.
    pub tls_certificates_file: Option<PathBuf>,
    /// `tls-certificates-private-key`: the private key (PEM) of `tls-certificates-file`.
    pub tls_certificates_private_key: Option<PathBuf>,
    /// `tls-certificates-ca-file`: the CAs trusted for peers' certificates; `None` for the
    /// system's store.
    pub tls_certificates_ca_file: Option<PathBuf>,
    /// `tls-verify-incoming`: ask TLS clients for a certificate and refuse those without a
    /// trusted one (mutual TLS, for links between cluster nodes).
    pub tls_verify_incoming: bool,
    /// `idle-timeout`: a stream connection that carried nothing for this long is closed.
    pub idle_timeout: Duration,
    /// `incomplete-message-timeout`: longest a stream peer may take to complete one message
    /// (or its WebSocket upgrade) once it started it.
    pub incomplete_message_timeout: Duration,
    /// `admin-listen`: the admin HTTP endpoint's address (`crate::admin`); `None`: no endpoint.
    pub admin_listen: Option<SocketAddr>,
    /// `shutdown-grace-period`: how long SIGTERM lets transactions in progress finish.
    pub shutdown_grace_period: Duration,
}

/// `[module::Registrar]`: which domains we register for and how bindings are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrar {
    /// `reg-domains`: domains we are registrar for, lower-cased; `*` means any.
    pub reg_domains: Vec<String>,
    /// `db-implementation`.
    pub db_implementation: DbImplementation,
    /// `max-expires`: longest registration granted.
    pub max_expires: Duration,
    /// `min-expires`: shorter requested registrations get 423 Interval Too Brief.
    pub min_expires: Duration,
    /// `default-expires`: used when a REGISTER names no expiry.
    pub default_expires: Duration,
    /// `max-contacts-by-aor`.
    pub max_contacts_by_aor: usize,
    /// `max-aors-per-shard`: bound of each shard's slice of the binding cache.
    pub max_aors_per_shard: usize,
    /// `redis-server-domain`: host of the Redis server (empty when unused).
    pub redis_server_domain: String,
    /// `redis-server-port`.
    pub redis_server_port: u16,
    /// `redis-auth-password`: shown as `<hidden>` by `Debug` and `Display`.
    pub redis_auth_password: Secret,
    /// `redis-username`: the ACL user for AUTH; empty for the default user.
    pub redis_username: String,
    /// `redis-sentinel-addresses`: `host:port` of each sentinel; empty to follow
    /// `redis-server-domain` by `INFO replication` instead.
    pub redis_sentinel_addresses: Vec<String>,
    /// `redis-sentinel-master-name`: the name the sentinels monitor the master under.
    pub redis_sentinel_master_name: String,
    /// `redis-sentinel-password`: AUTH for the sentinels; empty for none.
    pub redis_sentinel_password: Secret,
    /// `redis-timeout`: the longest any one Redis request may take.
    pub redis_timeout: Duration,
    /// `redis-failover-hold`: how long writes wait while no master is known, then 503.
    pub redis_failover_hold: Duration,
    /// `redis-wait-replicas`: replicas that must confirm a write (`WAIT`) before the 200 OK.
    pub redis_wait_replicas: usize,
    /// `redis-replay-window`: writes acknowledged this long before the master was lost are
    /// written again on the new one (asynchronous replication may not have carried them).
    pub redis_replay_window: Duration,
}

/// `[module::Forward]`: what happens to requests that are not for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// `allow-foreign-domains`: false answers 403 to requests for domains we do not serve; true
    /// forwards them when the Request-URI host is an IP literal.
    pub allow_foreign_domains: bool,
}

/// `[module::Authentication]`: digest authentication of REGISTER (401) and of requests from
/// local users (407), with Flexisip's keys and password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// `enabled`.
    pub enabled: bool,
    /// `auth-domains`: domains whose users are authenticated, lower-cased; `*` means any.
    pub auth_domains: Vec<String>,
    /// `available-algorithms`: offered algorithms, strongest first, no repeats.
    pub available_algorithms: Vec<Algorithm>,
    /// `db-implementation`.
    pub db_implementation: AuthDbImplementation,
    /// `file-path`: the password file (Flexisip's format); `None` when empty.
    pub file_path: Option<PathBuf>,
    /// `nonce-expires`: how long a nonce may be used.
    pub nonce_expires: Duration,
    /// `nonce-secret`: the key of the nonces' HMAC; empty means a random one per start.
    pub nonce_secret: Secret,
    /// `trusted-hosts`: addresses whose requests are never challenged.
    pub trusted_hosts: Vec<IpAddr>,
}

/// `[module::DoSProtection]`: Flexisip's flood protection, per source address (see `dos.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DosProtection {
    /// `enabled`.
    pub enabled: bool,
    /// `time-period`: the window the packet rate is averaged over.
    pub time_period: Duration,
    /// `packet-rate-limit`: packets per second a source may send on average.
    pub packet_rate_limit: usize,
    /// `ban-time`: how long a source over the limit is ignored.
    pub ban_time: Duration,
    /// `white-list`: addresses never limited (besides `[cluster] nodes`, 127.0.0.1 and ::1).
    pub white_list: Vec<IpAddr>,
}

/// `[module::Authentication] db-implementation`: where the passwords are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDbImplementation {
    /// A password file in Flexisip's format (`file-path`).
    File,
}

/// `[cluster]`: the nodes that share the registration database and serve one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `enabled`.
    pub enabled: bool,
    /// `cluster-domain`: the name clients reach the cluster by (SRV), lower-cased; this node
    /// answers for it as for its own names. Empty: none.
    pub cluster_domain: String,
    /// `nodes`: addresses of every node of the cluster.
    pub nodes: Vec<IpAddr>,
    /// `internal-transport`: where the other nodes reach this one (a `sip:` URI with an IP
    /// address). `None`: the first of `transports` whose address is one of `nodes`.
    pub internal_transport: Option<Listen>,
}

/// One socket to listen on, from one URI of `transports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub host: ListenHost,
    pub port: u16,
    /// The URI it came from, as written.
    pub uri: String,
}

/// Where a [`Listen`] binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenHost {
    /// `*`: every local address.
    Any,
    Ip(IpAddr),
    /// A host name, lower-cased; resolved when the socket is opened.
    Name(String),
}

/// `db-implementation`: where registrations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbImplementation {
    /// In the memory of this node.
    Internal,
    /// In Redis, shared by the cluster.
    Redis,
}

/// `log-level`, most to least severe. Flexisip's `message` is read as `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

/// A configuration value that must not appear in logs: `Debug` and `Display` print `<hidden>`
/// (or nothing when it is empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "<hidden>" })
    }
}

impl fmt::Display for ListenHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenHost::Any => f.write_str("*"),
            ListenHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            ListenHost::Ip(ip) => write!(f, "{ip}"),
            ListenHost::Name(name) => f.write_str(name),
        }
    }
}

/// `UDP 127.0.0.1:5060`.
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.transport, self.host, self.port)
    }
}

impl DbImplementation {
    pub fn as_str(self) -> &'static str {
        match self {
            DbImplementation::Internal => "internal",
            DbImplementation::Redis => "redis",
        }
    }
}

impl AuthDbImplementation {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthDbImplementation::File => "file",
        }
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the configuration was refused. `Display` is one line, meant to be printed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the offending setting was written; `None` when no single place is to blame.
    pub location: Option<Location>,
    pub kind: ConfigErrorKind,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A whole file (it could not be read).
    File { origin: String },
    /// A line of a file (1-based).
    Line { origin: String, line: usize },
    /// A `--set SECTION/KEY=VALUE` override; `setting` is `SECTION/KEY` as written (the value is
    /// left out: it may be a password).
    Override { setting: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file could not be read or is not UTF-8.
    Read { reason: String },
    /// A line that is neither a `[section]` header, a comment nor `key=value`. The line is not
    /// echoed: it may hold a password.
    Syntax,
    /// `key=value` before the first `[section]`.
    KeyOutsideSection { key: String },
    UnknownSection {
        section: String,
        suggestion: Option<&'static str>,
    },
    /// `suggestion` is a key of the same section, or `[other-section] key`.
    UnknownKey {
        section: &'static str,
        key: String,
        suggestion: Option<String>,
    },
    DuplicateKey {
        section: &'static str,
        key: &'static str,
        first_line: usize,
    },
    /// The value does not parse; `problem` says what was expected.
    BadValue {
        section: &'static str,
        key: &'static str,
        problem: String,
    },
    /// A `--set` argument that is not `SECTION/KEY=VALUE`; `text` is what precedes `=`.
    BadOverride { text: String },
    /// Values that are fine alone but not together (e.g. `min-expires` above `max-expires`).
    Inconsistent { problem: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { origin } => f.write_str(origin),
            Location::Line { origin, line } => write!(f, "{origin}:{line}"),
            Location::Override { setting } => write!(f, "--set {setting}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigErrorKind::Read { reason } => {
                write!(f, "cannot read the configuration: {reason}")
            }
            ConfigErrorKind::Syntax => {
                f.write_str("expected a [section] header, a # comment or key=value")
            }
            ConfigErrorKind::KeyOutsideSection { key } => {
                write!(f, "key {key} comes before any [section] header")
            }
            ConfigErrorKind::UnknownSection {
                section,
                suggestion,
            } => {
                write!(f, "unknown section [{section}] ")?;
                match suggestion {
                    Some(s) => write!(f, "(did you mean [{s}]?)"),
                    None => {
                        let all: Vec<String> =
                            SECTIONS.iter().map(|s| format!("[{}]", s.name)).collect();
                        write!(f, "(sections are {})", all.join(", "))
                    }
                }
            }
            ConfigErrorKind::UnknownKey {
                section,
                key,
                suggestion,
            } => {
                write!(f, "unknown key [{section}] {key} ")?;
                match suggestion {
                    Some(s) => write!(f, "(did you mean {s}?)"),
                    None => {
                        let all: Vec<&str> = keys_of(section).map(|k| k.name).collect();
                        write!(f, "(keys of [{section}] are {})", all.join(", "))
                    }
                }
            }
            ConfigErrorKind::DuplicateKey {
                section,
                key,
                first_line,
            } => write!(
                f,
                "[{section}] {key} is set twice (first on line {first_line}); keep one"
            ),
            ConfigErrorKind::BadValue {
                section,
                key,
                problem,
            } => write!(f, "[{section}] {key}: {problem}"),
            ConfigErrorKind::BadOverride { text } => write!(
                f,
                "--set {text:?} is not SECTION/KEY=VALUE (e.g. module::Registrar/max-expires=3600)"
            ),
            ConfigErrorKind::Inconsistent { problem } => f.write_str(problem),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const GLOBAL: &str = "global";
const REGISTRAR: &str = "module::Registrar";
const FORWARD: &str = "module::Forward";
const AUTHENTICATION: &str = "module::Authentication";
const DOS_PROTECTION: &str = "module::DoSProtection";
const CLUSTER: &str = "cluster";

struct Section {
    name: &'static str,
    doc: &'static str,
}

/// Sections in dump order.
static SECTIONS: &[Section] = &[
    Section {
        name: GLOBAL,
        doc: "Sockets, shards, SIP timers and resource bounds.",
    },
    Section {
        name: REGISTRAR,
        doc: "The registrar: which domains it serves and how it keeps bindings.",
    },
    Section {
        name: FORWARD,
        doc: "Requests that are not for a domain this node serves.",
    },
    Section {
        name: AUTHENTICATION,
        doc: "Digest authentication of REGISTER (401) and of requests from local users (407).",
    },
    Section {
        name: DOS_PROTECTION,
        doc: "Flood protection: a packet-rate limit per source address, with temporary bans.",
    },
    Section {
        name: CLUSTER,
        doc: "Several nodes serving one domain: they share the registration database (Redis), trust each other, and reach each other's stream clients through the node that holds the connection (Path).",
    },
];

/// Which field a key sets.
type Field<T> = fn(&mut Config) -> &mut T;

/// What a value looks like, and the field it sets.
enum Kind {
    Bool(Field<bool>),
    /// A whole number in `min..=max`.
    Count {
        min: usize,
        max: usize,
        field: Field<usize>,
    },
    /// 1 to 65535.
    Port(Field<u16>),
    /// A duration in `min..=max`, a whole number of `bare` (the unit of a number written alone).
    Duration {
        bare: Unit,
        min: Duration,
        max: Duration,
        field: Field<Duration>,
    },
    /// One host name or IP address, or nothing.
    OptionalHost(Field<String>),
    /// Any text, never echoed; when not empty, at least `min_bytes` long.
    Secret {
        min_bytes: usize,
        field: Field<Secret>,
    },
    /// A file name, or nothing.
    OptionalPath(Field<Option<PathBuf>>),
    /// Digest algorithm names (`MD5 SHA-256`), at least one.
    Algorithms(Field<Vec<Algorithm>>),
    /// `file` (the only password store sipshard reads).
    AuthDatabase(Field<AuthDbImplementation>),
    /// Host names or IP addresses.
    Hosts(Field<Vec<String>>),
    /// Host names or IP addresses, or `*`.
    Domains(Field<Vec<String>>),
    /// SIP URIs to listen on, at least one.
    Transports(Field<Vec<Listen>>),
    /// IP addresses.
    Addresses(Field<Vec<IpAddr>>),
    /// `host:port` items (IPv6 hosts in brackets).
    HostPorts(Field<Vec<String>>),
    /// One SIP URI with an IP address, as in `transports`, or nothing.
    InternalTransport(Field<Option<Listen>>),
    /// One word (no spaces), or nothing.
    Word(Field<String>),
    /// `IP:port` (IPv6 in brackets), or nothing.
    OptionalSocketAddr(Field<Option<SocketAddr>>),
    Database(Field<DbImplementation>),
    LogLevel(Field<LogLevel>),
}

/// The unit of a duration written as a bare number, which is also its resolution.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Seconds,
    Minutes,
}

struct Key {
    section: &'static str,
    name: &'static str,
    default: &'static str,
    doc: &'static str,
    kind: Kind,
}

/// Shortest `nonce-secret` accepted (the nonce HMAC's key).
const MIN_NONCE_SECRET_BYTES: usize = crate::auth::nonce::MIN_SECRET_BYTES;

/// Largest expiry a REGISTER can carry (RFC 3261 §20.19: delta-seconds, 32 bits).
const MAX_EXPIRES: Duration = Duration::from_secs(u32::MAX as u64);

/// Every key, in dump order within its section.
static KEYS: &[Key] = &[
    Key {
        section: GLOBAL,
        name: "transports",
        default: "sip:127.0.0.1:5060",
        doc: "SIP URIs to listen on (sip:*:5060, sips:host, sip:host:port;transport=tcp); sip: without transport= means UDP and TCP.",
        kind: Kind::Transports(|c| &mut c.global.transports),
    },
    Key {
        section: GLOBAL,
        name: "threads",
        default: "0",
        doc: "Number of shards (one thread each); 0 means one per core.",
        kind: Kind::Count {
            min: 0,
            max: 1024,
            field: |c| &mut c.global.threads,
        },
    },
    Key {
        section: GLOBAL,
        name: "aliases",
        default: "",
        doc: "Other host names this node answers for, besides the hosts of transports.",
        kind: Kind::Hosts(|c| &mut c.global.aliases),
    },
    Key {
        section: GLOBAL,
        name: "sip-t1",
        default: "500ms",
        doc: "SIP timer T1, the round-trip time estimate (RFC 3261 §17.1.1.1); a bare number counts milliseconds.",
        kind: Kind::Duration {
            bare: Unit::Millis,
            min: Duration::from_millis(1),
            max: Duration::from_secs(60),
            field: |c| &mut c.global.sip_t1,
        },
    },
    Key {
        section: GLOBAL,
        name: "sip-t2",
        default: "4s",
        doc: "SIP timer T2, the longest retransmission interval; a bare number counts milliseconds.",
        kind: Kind::Duration {
            bare: Unit::Millis,
            min: Duration::from_millis(1),
            max: Duration::from_secs(600),
            field: |c| &mut c.global.sip_t2,
        },
    },
    Key {
        section: GLOBAL,
        name: "sip-t4",
        default: "5s",
        doc: "SIP timer T4, the longest time a message stays in the network; a bare number counts milliseconds.",
        kind: Kind::Duration {
            bare: Unit::Millis,
            min: Duration::from_millis(1),
            max: Duration::from_secs(600),
            field: |c| &mut c.global.sip_t4,
        },
    },
    Key {
        section: GLOBAL,
        name: "max-message-size",
        default: "65536",
        doc: "Largest SIP message accepted, in bytes; a bigger one is refused.",
        kind: Kind::Count {
            min: 1024,
            max: 16 * 1024 * 1024,
            field: |c| &mut c.global.max_message_size_bytes,
        },
    },
    Key {
        section: GLOBAL,
        name: "shard-queue-capacity",
        default: "1024",
        doc: "Messages each inter-shard channel holds; when full, the request is answered 503.",
        kind: Kind::Count {
            min: 1,
            max: 1 << 20,
            field: |c| &mut c.global.shard_queue_capacity,
        },
    },
    Key {
        section: GLOBAL,
        name: "transaction-table-capacity",
        default: "262144",
        doc: "Transactions each shard holds. A UDP non-INVITE transaction stays 32 s (64*T1) after its answer to absorb retransmissions; when the table is full the oldest such one makes room, and only when none is left are new requests answered 503.",
        kind: Kind::Count {
            min: 1,
            max: 1 << 24,
            field: |c| &mut c.global.transaction_table_capacity,
        },
    },
    Key {
        section: GLOBAL,
        name: "max-connections-per-shard",
        default: "8192",
        doc: "Stream connections each shard holds; a new one beyond it is closed at once. The open-file limit must cover threads times this.",
        kind: Kind::Count {
            min: 1,
            max: 1 << 20,
            field: |c| &mut c.global.max_connections_per_shard,
        },
    },
    Key {
        section: GLOBAL,
        name: "max-connections-per-address",
        default: "128",
        doc: "Stream connections each shard accepts from one IP address; one more is closed at once. Trusted addresses ([module::DoSProtection] white-list, [cluster] nodes) are exempt.",
        kind: Kind::Count {
            min: 1,
            max: 1 << 20,
            field: |c| &mut c.global.max_connections_per_address,
        },
    },
    Key {
        section: GLOBAL,
        name: "log-level",
        default: "info",
        doc: "Least severe level logged: error, warning, info (Flexisip's message), debug or trace.",
        kind: Kind::LogLevel(|c| &mut c.global.log_level),
    },
    Key {
        section: GLOBAL,
        name: "tls-certificates-dir",
        default: "/etc/flexisip/tls/",
        doc: "Directory holding agent.pem, the PEM certificate chain (leaf first) and private key of the TLS transports (sips:, transport=tls); used when tls-certificates-file is empty.",
        kind: Kind::OptionalPath(|c| &mut c.global.tls_certificates_dir),
    },
    Key {
        section: GLOBAL,
        name: "tls-certificates-file",
        default: "",
        doc: "PEM certificate chain (leaf first) of the TLS transports, with tls-certificates-private-key; overrides tls-certificates-dir. Its SubjectAltNames should cover this node's host name and the SIP domains (RFC 5922): a warning at start-up says which are not.",
        kind: Kind::OptionalPath(|c| &mut c.global.tls_certificates_file),
    },
    Key {
        section: GLOBAL,
        name: "tls-certificates-private-key",
        default: "",
        doc: "PEM private key of tls-certificates-file (PKCS#8, PKCS#1 or SEC1).",
        kind: Kind::OptionalPath(|c| &mut c.global.tls_certificates_private_key),
    },
    Key {
        section: GLOBAL,
        name: "tls-certificates-ca-file",
        default: "",
        doc: "PEM file of the certificate authorities trusted for peers' certificates: servers this node connects to over TLS (always verified: a trusted chain, valid now, naming the target's host, RFC 5922 §7.2), and clients when tls-verify-incoming is true. Empty: the system's store (/etc/ssl/certs/ca-certificates.crt).",
        kind: Kind::OptionalPath(|c| &mut c.global.tls_certificates_ca_file),
    },
    Key {
        section: GLOBAL,
        name: "tls-verify-incoming",
        default: "false",
        doc: "Ask TLS clients for a certificate and refuse the connection without one signed by tls-certificates-ca-file (mutual TLS, for links between cluster nodes). Phones rarely have one: leave false where they connect.",
        kind: Kind::Bool(|c| &mut c.global.tls_verify_incoming),
    },
    Key {
        section: GLOBAL,
        name: "idle-timeout",
        default: "3600",
        doc: "A stream connection (TCP, TLS, WebSocket) that carried nothing for this long is closed; clients keep theirs open with CRLF keep-alives (RFC 5626 §4.4.1). A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_secs(1),
            max: Duration::from_secs(7 * 24 * 3600),
            field: |c| &mut c.global.idle_timeout,
        },
    },
    Key {
        section: GLOBAL,
        name: "incomplete-message-timeout",
        default: "10",
        doc: "Longest a stream peer may take to deliver one message once its first byte arrived (and to finish a WebSocket upgrade; a TLS handshake has 5 s): a slower one is disconnected, so trickled bytes (slow-loris) cannot hold connections. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_millis(100),
            max: Duration::from_secs(600),
            field: |c| &mut c.global.incomplete_message_timeout,
        },
    },
    Key {
        section: GLOBAL,
        name: "admin-listen",
        default: "127.0.0.1:9060",
        doc: "IP:port of the admin HTTP endpoint: /metrics (Prometheus), /health, /ready, /bindings?aor=. It has no authentication: keep it on loopback or a management network. Empty: no endpoint. If it cannot be bound the node logs an error and serves SIP without it.",
        kind: Kind::OptionalSocketAddr(|c| &mut c.global.admin_listen),
    },
    Key {
        section: GLOBAL,
        name: "shutdown-grace-period",
        default: "5",
        doc: "On SIGTERM or SIGINT the node closes its stream listeners, answers new out-of-dialog requests 503 with Retry-After, and lets requests in progress finish for up to this long, then flushes the Redis journal (for what is left of it, at least 1 s) and exits 0. A second signal stops at once. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::ZERO,
            max: Duration::from_secs(3600),
            field: |c| &mut c.global.shutdown_grace_period,
        },
    },
    Key {
        section: REGISTRAR,
        name: "reg-domains",
        default: "localhost 127.0.0.1",
        doc: "Domains this registrar accepts registrations for; * accepts any.",
        kind: Kind::Domains(|c| &mut c.registrar.reg_domains),
    },
    Key {
        section: REGISTRAR,
        name: "db-implementation",
        default: "internal",
        doc: "Where bindings are kept: internal (this node's memory) or redis (shared by the cluster).",
        kind: Kind::Database(|c| &mut c.registrar.db_implementation),
    },
    Key {
        section: REGISTRAR,
        name: "max-expires",
        default: "86400",
        doc: "Longest registration granted; longer requests are shortened. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_secs(1),
            max: MAX_EXPIRES,
            field: |c| &mut c.registrar.max_expires,
        },
    },
    Key {
        section: REGISTRAR,
        name: "min-expires",
        default: "60",
        doc: "Shortest registration accepted; shorter requests get 423 Interval Too Brief. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::ZERO,
            max: MAX_EXPIRES,
            field: |c| &mut c.registrar.min_expires,
        },
    },
    Key {
        section: REGISTRAR,
        name: "default-expires",
        default: "600",
        doc: "Registration length when a REGISTER names none. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_secs(1),
            max: MAX_EXPIRES,
            field: |c| &mut c.registrar.default_expires,
        },
    },
    Key {
        section: REGISTRAR,
        name: "max-contacts-by-aor",
        default: "12",
        doc: "Most bindings kept per address of record; beyond it the least recently updated is dropped.",
        kind: Kind::Count {
            min: 1,
            max: 1000,
            field: |c| &mut c.registrar.max_contacts_by_aor,
        },
    },
    Key {
        section: REGISTRAR,
        name: "max-aors-per-shard",
        default: "1048576",
        doc: "Most addresses of record with bindings on one shard; REGISTERs for new ones get 503 beyond it. Reserved up front (virtual memory) so the shard never rehashes.",
        kind: Kind::Count {
            min: 1,
            max: 1 << 26,
            field: |c| &mut c.registrar.max_aors_per_shard,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-server-domain",
        default: "",
        doc: "Host name or address of the Redis server (db-implementation=redis).",
        kind: Kind::OptionalHost(|c| &mut c.registrar.redis_server_domain),
    },
    Key {
        section: REGISTRAR,
        name: "redis-server-port",
        default: "6379",
        doc: "Port of the Redis server.",
        kind: Kind::Port(|c| &mut c.registrar.redis_server_port),
    },
    Key {
        section: REGISTRAR,
        name: "redis-auth-password",
        default: "",
        doc: "Password for Redis AUTH; empty for none. Never logged.",
        kind: Kind::Secret {
            min_bytes: 0,
            field: |c| &mut c.registrar.redis_auth_password,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-username",
        default: "",
        doc: "ACL user name for Redis AUTH; empty for the default user.",
        kind: Kind::Word(|c| &mut c.registrar.redis_username),
    },
    Key {
        section: REGISTRAR,
        name: "redis-sentinel-addresses",
        default: "",
        doc: "host:port of each Redis Sentinel; the master is the one a majority of them names. Empty: follow redis-server-domain by INFO replication.",
        kind: Kind::HostPorts(|c| &mut c.registrar.redis_sentinel_addresses),
    },
    Key {
        section: REGISTRAR,
        name: "redis-sentinel-master-name",
        default: "",
        doc: "Name under which the sentinels monitor the master (sentinel monitor <name> ...).",
        kind: Kind::Word(|c| &mut c.registrar.redis_sentinel_master_name),
    },
    Key {
        section: REGISTRAR,
        name: "redis-sentinel-password",
        default: "",
        doc: "Password for AUTH to the sentinels; empty for none. Never logged.",
        kind: Kind::Secret {
            min_bytes: 0,
            field: |c| &mut c.registrar.redis_sentinel_password,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-timeout",
        default: "1s",
        doc: "Longest any one Redis request may take before the connection is given up. A bare number counts milliseconds.",
        kind: Kind::Duration {
            bare: Unit::Millis,
            min: Duration::from_millis(10),
            max: Duration::from_secs(60),
            field: |c| &mut c.registrar.redis_timeout,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-failover-hold",
        default: "20s",
        doc: "How long registrations wait for a Redis master while none is known (during a failover) before 503. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
            field: |c| &mut c.registrar.redis_failover_hold,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-wait-replicas",
        default: "0",
        doc: "Replicas that must have a write (WAIT) before the 200 OK; 0 acknowledges on the master alone.",
        kind: Kind::Count {
            min: 0,
            max: 16,
            field: |c| &mut c.registrar.redis_wait_replicas,
        },
    },
    Key {
        section: REGISTRAR,
        name: "redis-replay-window",
        default: "15s",
        doc: "Writes acknowledged this long before the master was lost are written again on the new master (asynchronous replication may not have carried them). Cover the sentinels' down-after plus the election. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::ZERO,
            max: Duration::from_secs(300),
            field: |c| &mut c.registrar.redis_replay_window,
        },
    },
    Key {
        section: FORWARD,
        name: "allow-foreign-domains",
        default: "false",
        doc: "false: requests for domains this node does not serve get 403; true: they are forwarded when the Request-URI host is an IP address.",
        kind: Kind::Bool(|c| &mut c.forward.allow_foreign_domains),
    },
    Key {
        section: AUTHENTICATION,
        name: "enabled",
        default: "false",
        doc: "Challenge REGISTER (401) and out-of-dialog requests from users of auth-domains (407); needs file-path.",
        kind: Kind::Bool(|c| &mut c.authentication.enabled),
    },
    Key {
        section: AUTHENTICATION,
        name: "auth-domains",
        default: "*",
        doc: "Domains whose users are authenticated (the realm is the domain); * means any. REGISTER for other domains gets 403.",
        kind: Kind::Domains(|c| &mut c.authentication.auth_domains),
    },
    Key {
        section: AUTHENTICATION,
        name: "available-algorithms",
        default: "MD5",
        doc: "Digest algorithms offered, one challenge each, strongest first: MD5, SHA-256, SHA-512-256 (and -sess variants).",
        kind: Kind::Algorithms(|c| &mut c.authentication.available_algorithms),
    },
    Key {
        section: AUTHENTICATION,
        name: "db-implementation",
        default: "file",
        doc: "Where passwords are kept: file (a password file in Flexisip's format, at file-path).",
        kind: Kind::AuthDatabase(|c| &mut c.authentication.db_implementation),
    },
    Key {
        section: AUTHENTICATION,
        name: "file-path",
        default: "",
        doc: "The password file: a version:1 line, then user@domain clrtxt:PASSWORD ; (or md5:HA1, sha256:HA1) per line.",
        kind: Kind::OptionalPath(|c| &mut c.authentication.file_path),
    },
    Key {
        section: AUTHENTICATION,
        name: "nonce-expires",
        default: "300",
        doc: "How long a nonce is accepted; then the phone is challenged again with stale=true. A bare number counts seconds.",
        kind: Kind::Duration {
            bare: Unit::Seconds,
            min: Duration::from_secs(1),
            max: Duration::from_secs(86_400),
            field: |c| &mut c.authentication.nonce_expires,
        },
    },
    Key {
        section: AUTHENTICATION,
        name: "nonce-secret",
        default: "",
        doc: "Key of the nonces (at least 16 bytes), the same on every node of a cluster; empty: random per start (one node only). Never logged.",
        kind: Kind::Secret {
            min_bytes: MIN_NONCE_SECRET_BYTES,
            field: |c| &mut c.authentication.nonce_secret,
        },
    },
    Key {
        section: AUTHENTICATION,
        name: "trusted-hosts",
        default: "",
        doc: "IP addresses whose requests are never challenged (gateways); the nodes of [cluster] are trusted too.",
        kind: Kind::Addresses(|c| &mut c.authentication.trusted_hosts),
    },
    Key {
        section: DOS_PROTECTION,
        name: "enabled",
        default: "true",
        doc: "Limit the packet rate of each source address and ban the sources that go over it.",
        kind: Kind::Bool(|c| &mut c.dos_protection.enabled),
    },
    Key {
        section: DOS_PROTECTION,
        name: "time-period",
        default: "3000",
        doc: "Window the packet rate is averaged over: a source may send a burst of packet-rate-limit times this. A bare number counts milliseconds.",
        kind: Kind::Duration {
            bare: Unit::Millis,
            min: Duration::from_millis(1),
            max: Duration::from_secs(3600),
            field: |c| &mut c.dos_protection.time_period,
        },
    },
    Key {
        section: DOS_PROTECTION,
        name: "packet-rate-limit",
        default: "20",
        doc: "Packets per second (datagrams, stream messages and new connections) a source address may send on average, per shard; over it, it is banned.",
        kind: Kind::Count {
            min: 1,
            max: 1_000_000,
            field: |c| &mut c.dos_protection.packet_rate_limit,
        },
    },
    Key {
        section: DOS_PROTECTION,
        name: "ban-time",
        default: "2",
        doc: "How long everything from a banned source is dropped. A bare number counts minutes.",
        kind: Kind::Duration {
            bare: Unit::Minutes,
            min: Duration::from_secs(60),
            max: Duration::from_secs(86_400),
            field: |c| &mut c.dos_protection.ban_time,
        },
    },
    Key {
        section: DOS_PROTECTION,
        name: "white-list",
        default: "",
        doc: "IP addresses never limited (gateways, trunks); the nodes of [cluster], 127.0.0.1 and ::1 always are.",
        kind: Kind::Addresses(|c| &mut c.dos_protection.white_list),
    },
    Key {
        section: CLUSTER,
        name: "enabled",
        default: "false",
        doc: "Run as one node of a cluster.",
        kind: Kind::Bool(|c| &mut c.cluster.enabled),
    },
    Key {
        section: CLUSTER,
        name: "cluster-domain",
        default: "",
        doc: "The domain name by which clients reach the cluster (its DNS SRV records); this node answers for it as for its own names.",
        kind: Kind::OptionalHost(|c| &mut c.cluster.cluster_domain),
    },
    Key {
        section: CLUSTER,
        name: "nodes",
        default: "",
        doc: "IP addresses of every node of the cluster: their requests are never challenged nor rate limited.",
        kind: Kind::Addresses(|c| &mut c.cluster.nodes),
    },
    Key {
        section: CLUSTER,
        name: "internal-transport",
        default: "",
        doc: "The SIP URI the other nodes reach this node at, with an IP address and one of the transports this node listens on, e.g. sip:10.0.0.1:5060;transport=tcp. It goes in the Path this node adds to its stream clients' bindings and in the Record-Route facing other nodes. Empty: the first of transports whose address is in nodes.",
        kind: Kind::InternalTransport(|c| &mut c.cluster.internal_transport),
    },
];

fn keys_of(section: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

impl Default for Config {
    /// Every key at the default written in its row of `KEYS`.
    fn default() -> Config {
        let mut config = Config::placeholder();
        for key in KEYS {
            if let Err(problem) = key.kind.set(&mut config, key.default) {
                // KEYS is a constant and `tests::table_defaults_are_valid` parses every row.
                panic!(
                    "built-in default of [{}] {} is invalid: {problem}",
                    key.section, key.name
                );
            }
        }
        config
    }
}

impl Config {
    /// Parses INI text on top of the defaults and validates the result. `origin` names the text
    /// in errors (usually the file name).
    pub fn from_ini_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut loader = Loader::new();
        loader.apply_ini(text, origin)?;
        loader.finish()
    }

    /// Reads the file at `path` if any (otherwise starts from the defaults), then applies each
    /// `SECTION/KEY=VALUE` of `overrides` (from `--set`, in order), then validates.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let mut loader = Loader::new();
        if let Some(path) = path {
            let origin = path.display().to_string();
            let text = read_bounded(path).map_err(|reason| ConfigError {
                location: Some(Location::File {
                    origin: origin.clone(),
                }),
                kind: ConfigErrorKind::Read { reason },
            })?;
            loader.apply_ini(&text, &origin)?;
        }
        for text in overrides {
            loader.apply_override(text)?;
        }
        loader.finish()
    }

    /// Every section and key with its default value, each preceded by its doc as a `#` comment:
    /// a starting point for a configuration file, which [`Config::from_ini_str`] reads back as
    /// [`Config::default`].
    pub fn dump_default() -> String {
        let mut out = String::from(
            "# sipshard configuration: every key at its default value.\n\
             # Flexisip's INI format: section and key names are case-insensitive; lists are\n\
             # separated by spaces or commas; booleans are true/false (1/0, yes/no); durations take\n\
             # a unit (500ms, 30s, 10min, 1h, 1d), a bare number counts the unit its doc names.\n\
             # Comments start a line with # or ;.\n",
        );
        for section in SECTIONS {
            out.push_str(&format!("\n# {}\n[{}]\n", section.doc, section.name));
            for key in keys_of(section.name) {
                out.push_str(&format!("\n# {}\n{}={}\n", key.doc, key.name, key.default));
            }
        }
        out
    }

    /// The structure the defaults are written onto; every field is overwritten by a row of
    /// [`KEYS`] before anyone sees it.
    fn placeholder() -> Config {
        Config {
            global: Global {
                transports: Vec::new(),
                threads: 0,
                aliases: Vec::new(),
                sip_t1: Duration::ZERO,
                sip_t2: Duration::ZERO,
                sip_t4: Duration::ZERO,
                max_message_size_bytes: 0,
                shard_queue_capacity: 0,
                transaction_table_capacity: 0,
                max_connections_per_shard: 0,
                max_connections_per_address: 0,
                log_level: LogLevel::Info,
                tls_certificates_dir: None,
                tls_certificates_file: None,
                tls_certificates_private_key: None,
                tls_certificates_ca_file: None,
                tls_verify_incoming: false,
                idle_timeout: Duration::ZERO,
                incomplete_message_timeout: Duration::ZERO,
                admin_listen: None,
                shutdown_grace_period: Duration::ZERO,
            },
            registrar: Registrar {
                reg_domains: Vec::new(),
                db_implementation: DbImplementation::Internal,
                max_expires: Duration::ZERO,
                min_expires: Duration::ZERO,
                default_expires: Duration::ZERO,
                max_contacts_by_aor: 0,
                max_aors_per_shard: 0,
                redis_server_domain: String::new(),
                redis_server_port: 0,
                redis_auth_password: Secret::default(),
                redis_username: String::new(),
                redis_sentinel_addresses: Vec::new(),
                redis_sentinel_master_name: String::new(),
                redis_sentinel_password: Secret::default(),
                redis_timeout: Duration::ZERO,
                redis_failover_hold: Duration::ZERO,
                redis_wait_replicas: 0,
                redis_replay_window: Duration::ZERO,
            },
            forward: Forward {
                allow_foreign_domains: false,
            },
            authentication: Authentication {
                enabled: false,
                auth_domains: Vec::new(),
                available_algorithms: Vec::new(),
                db_implementation: AuthDbImplementation::File,
                file_path: None,
                nonce_expires: Duration::ZERO,
                nonce_secret: Secret::default(),
                trusted_hosts: Vec::new(),
            },
            dos_protection: DosProtection {
                enabled: false,
                time_period: Duration::ZERO,
                packet_rate_limit: 0,
                ban_time: Duration::ZERO,
                white_list: Vec::new(),
            },
            cluster: Cluster {
                enabled: false,
                cluster_domain: String::new(),
                nodes: Vec::new(),
                internal_transport: None,
            },
        }
    }
}

/// Largest configuration file read: far above any real one, low enough that `--config /dev/zero`
/// fails at once instead of filling memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

// ---------------------------------------------------------------------------------------------
// Loading: text to fields, with where each key was set
// ---------------------------------------------------------------------------------------------

struct Loader {
    config: Config,
    /// For each row of [`KEYS`], where it was last set and the order of that setting (so the
    /// consistency checks can blame the latest of the keys involved); `None` while at default.
    set_at: Vec<Option<(usize, Location)>>,
    settings: usize,
}

impl Loader {
    fn new() -> Loader {
        Loader {
            config: Config::default(),
            set_at: vec![None; KEYS.len()],
            settings: 0,
        }
    }

    fn apply_ini(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut section: Option<&'static str> = None;
        let mut first_line: Vec<Option<usize>> = vec![None; KEYS.len()];
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let location = || Location::Line {
                origin: origin.to_owned(),
                line: line_number,
            };
            let error = |kind| ConfigError {
                location: Some(location()),
                kind,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let (name, after) = rest
                    .split_once(']')
                    .ok_or_else(|| error(ConfigErrorKind::Syntax))?;
                let after = after.trim_start();
                if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                    return Err(error(ConfigErrorKind::Syntax));
                }
                section = Some(find_section(name.trim()).map_err(error)?);
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| error(ConfigErrorKind::Syntax))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(error(ConfigErrorKind::Syntax));
            }
            let section = section.ok_or_else(|| {
                error(ConfigErrorKind::KeyOutsideSection {
                    key: name.to_owned(),
                })
            })?;
            let key = find_key(section, name).map_err(error)?;
            if let Some(first_line) = first_line[key] {
                return Err(error(ConfigErrorKind::DuplicateKey {
                    section,
                    key: KEYS[key].name,
                    first_line,
                }));
            }
            first_line[key] = Some(line_number);
            self.set(key, value.trim(), location())?;
        }
        Ok(())
    }

    /// One `--set SECTION/KEY=VALUE`.
    fn apply_override(&mut self, text: &str) -> Result<(), ConfigError> {
        let malformed = |text: &str| ConfigError {
            location: None,
            kind: ConfigErrorKind::BadOverride {
                text: text.to_owned(),
            },
        };
        let (setting, value) = text.split_once('=').ok_or_else(|| malformed(text))?;
        let setting = setting.trim();
        let (section, name) = setting.rsplit_once('/').ok_or_else(|| malformed(setting))?;
        let location = Location::Override {
            setting: setting.to_owned(),
        };
        let error = |kind| ConfigError {
            location: Some(location.clone()),
            kind,
        };
        let section = find_section(section.trim()).map_err(error)?;
        let key = find_key(section, name.trim()).map_err(error)?;
        self.set(key, value.trim(), location)
    }

    fn set(&mut self, index: usize, value: &str, location: Location) -> Result<(), ConfigError> {
        let key = &KEYS[index];
        if let Err(mut problem) = key.kind.set(&mut self.config, value) {
            if value.contains(" #") || value.contains("\t#") {
                problem
                    .push_str(" (a # after a value is part of it: put comments on their own line)");
            }
            return Err(ConfigError {
                location: Some(location),
                kind: ConfigErrorKind::BadValue {
                    section: key.section,
                    key: key.name,
                    problem,
                },
            });
        }
        self.settings += 1;
        self.set_at[index] = Some((self.settings, location));
        Ok(())
    }

    /// Checks what no single key can: orderings and requirements between keys.
    fn finish(self) -> Result<Config, ConfigError> {
        let c = &self.config;
        let r = &c.registrar;
        let g = &c.global;
        if r.min_expires > r.default_expires {
            return Err(self.inconsistent(
                &[(REGISTRAR, "min-expires"), (REGISTRAR, "default-expires")],
                format!(
                    "[{REGISTRAR}] min-expires ({}) is above default-expires ({}); expected min-expires <= default-expires <= max-expires",
                    show_duration(r.min_expires),
                    show_duration(r.default_expires)
                ),
            ));
        }
        if r.default_expires > r.max_expires {
            return Err(self.inconsistent(
                &[(REGISTRAR, "default-expires"), (REGISTRAR, "max-expires")],
                format!(
                    "[{REGISTRAR}] default-expires ({}) is above max-expires ({}); expected min-expires <= default-expires <= max-expires",
                    show_duration(r.default_expires),
                    show_duration(r.max_expires)
                ),
            ));
        }
        if g.sip_t1 > g.sip_t2 {
            return Err(self.inconsistent(
                &[(GLOBAL, "sip-t1"), (GLOBAL, "sip-t2")],
                format!(
                    "[{GLOBAL}] sip-t1 ({}) is above sip-t2 ({}); retransmissions start at T1 and are capped at T2",
                    show_duration(g.sip_t1),
                    show_duration(g.sip_t2)
                ),
            ));
        }
        if r.db_implementation == DbImplementation::Redis
            && r.redis_server_domain.is_empty()
            && r.redis_sentinel_addresses.is_empty()
        {
            return Err(self.inconsistent(
                &[
                    (REGISTRAR, "db-implementation"),
                    (REGISTRAR, "redis-server-domain"),
                    (REGISTRAR, "redis-sentinel-addresses"),
                ],
                format!(
                    "[{REGISTRAR}] db-implementation=redis needs redis-server-domain or \
                     redis-sentinel-addresses"
                ),
            ));
        }
        if !r.redis_sentinel_addresses.is_empty() && r.redis_sentinel_master_name.is_empty() {
            return Err(self.inconsistent(
                &[
                    (REGISTRAR, "redis-sentinel-addresses"),
                    (REGISTRAR, "redis-sentinel-master-name"),
                ],
                format!(
                    "[{REGISTRAR}] redis-sentinel-addresses needs redis-sentinel-master-name \
                     (the name in the sentinels' `sentinel monitor <name> ...`)"
                ),
            ));
        }
        let a = &c.authentication;
        if a.enabled && a.file_path.is_none() {
            return Err(self.inconsistent(
                &[(AUTHENTICATION, "enabled"), (AUTHENTICATION, "file-path")],
                format!("[{AUTHENTICATION}] enabled=true needs file-path (the password file)"),
            ));
        }
        if a.enabled && c.cluster.enabled && a.nonce_secret.is_empty() {
            return Err(self.inconsistent(
                &[
                    (AUTHENTICATION, "enabled"),
                    (AUTHENTICATION, "nonce-secret"),
                    (CLUSTER, "enabled"),
                ],
                format!(
                    "[{AUTHENTICATION}] enabled=true in a cluster needs nonce-secret, the same on every node (else each node refuses the others' nonces)"
                ),
            ));
        }
        if c.cluster.enabled && c.cluster.nodes.is_empty() {
            return Err(self.inconsistent(
                &[(CLUSTER, "enabled"), (CLUSTER, "nodes")],
                format!("[{CLUSTER}] enabled=true needs the addresses of the nodes in nodes"),
            ));
        }
        Ok(self.config)
    }

    /// An `Inconsistent` error located where the most recently set of `keys` was set.
    fn inconsistent(&self, keys: &[(&str, &str)], problem: String) -> ConfigError {
        let location = KEYS
            .iter()
            .zip(&self.set_at)
            .filter(|(key, _)| keys.contains(&(key.section, key.name)))
            .filter_map(|(_, set_at)| set_at.as_ref())
            .max_by_key(|(order, _)| *order)
            .map(|(_, location)| location.clone());
        ConfigError {
            location,
            kind: ConfigErrorKind::Inconsistent { problem },
        }
    }
}

fn find_section(name: &str) -> Result<&'static str, ConfigErrorKind> {
    if let Some(section) = SECTIONS.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
        return Ok(section.name);
    }
    Err(ConfigErrorKind::UnknownSection {
        section: name.to_owned(),
        suggestion: nearest(name, SECTIONS.iter().map(|s| s.name)),
    })
}

/// The row of `KEYS` for `name` in `section`.
fn find_key(section: &'static str, name: &str) -> Result<usize, ConfigErrorKind> {
    if let Some(index) = KEYS
        .iter()
        .position(|k| k.section == section && k.name.eq_ignore_ascii_case(name))
    {
        return Ok(index);
    }
    // A near miss in the same section first; otherwise the key may belong to another section.
    let suggestion = nearest(name, keys_of(section).map(|k| k.name))
        .map(str::to_owned)
        .or_else(|| {
            let elsewhere = KEYS.iter().filter(|k| k.section != section);
            let name_of = nearest(name, elsewhere.clone().map(|k| k.name))?;
            let key = elsewhere.clone().find(|k| k.name == name_of)?;
            Some(format!("[{}] {}", key.section, key.name))
        });
    Err(ConfigErrorKind::UnknownKey {
        section,
        key: name.to_owned(),
        suggestion,
    })
}

/// The candidate closest to `name` by edit distance, if close enough to be a typo (a third of the
/// name's length, at least 1). Ties go to the first candidate.
fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, ASCII case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

impl Kind {
    /// Parses `value` and stores it in the field; the error says what was expected.
    fn set(&self, config: &mut Config, value: &str) -> Result<(), String> {
        match *self {
            Kind::Bool(field) => *field(config) = parse_bool(value)?,
            Kind::Count { min, max, field } => *field(config) = parse_count(value, min, max)?,
            Kind::Port(field) => *field(config) = parse_port(value)?,
            Kind::OptionalSocketAddr(field) => {
                let value = value.trim();
                *field(config) = match value {
                    "" => None,
                    _ => Some(value.parse().map_err(|_| {
                        format!(
                            "expected IP:port ([address]:port for IPv6) or nothing, got {value:?}"
                        )
                    })?),
                }
            }
            Kind::Duration {
                bare,
                min,
                max,
                field,
            } => *field(config) = parse_duration(value, bare, min, max)?,
            Kind::OptionalHost(field) => {
                *field(config) = match parse_hosts(value, false)?.as_slice() {
                    [] => String::new(),
                    [host] => host.clone(),
                    _ => {
                        return Err(format!(
                            "expected one host name or IP address, got {value:?}"
                        ));
                    }
                }
            }
            Kind::Secret { min_bytes, field } => {
                // The value is never quoted: only its length is.
                if !value.is_empty() && value.len() < min_bytes {
                    return Err(format!(
                        "expected at least {min_bytes} bytes (or nothing), got {} bytes",
                        value.len()
                    ));
                }
                *field(config) = Secret::new(value);
            }
            Kind::OptionalPath(field) => {
                *field(config) = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            Kind::Algorithms(field) => {
                *field(config) = parse_algorithms(value).map_err(|e| match e {
                    AuthSettingsError::UnknownAlgorithm(name) => format!(
                        "unknown algorithm {name:?} (expected MD5, SHA-256, SHA-512-256 or their \
                         -sess variants)"
                    ),
                    _ => "expected at least one algorithm: MD5, SHA-256 or SHA-512-256".to_owned(),
                })?;
            }
            Kind::AuthDatabase(field) => {
                *field(config) = match value.to_ascii_lowercase().as_str() {
                    "file" => AuthDbImplementation::File,
                    _ => {
                        return Err(format!(
                            "expected file (a password file at file-path; sipshard reads no \
                             other password store), got {value:?}"
                        ));
                    }
                }
            }
            Kind::Hosts(field) => *field(config) = parse_hosts(value, false)?,
            Kind::Domains(field) => *field(config) = parse_hosts(value, true)?,
            Kind::Transports(field) => *field(config) = parse_transports(value)?,
            Kind::Addresses(field) => *field(config) = parse_addresses(value)?,
            Kind::HostPorts(field) => *field(config) = parse_host_ports(value)?,
            Kind::InternalTransport(field) => *field(config) = parse_internal_transport(value)?,
            Kind::Word(field) => {
                if value.split_whitespace().count() > 1 {
                    return Err(format!("expected one word, got {value:?}"));
                }
                *field(config) = value.to_owned();
            }
            Kind::Database(field) => {
                *field(config) = match value.to_ascii_lowercase().as_str() {
                    "internal" => DbImplementation::Internal,
                    "redis" => DbImplementation::Redis,
                    _ => return Err(format!("expected internal or redis, got {value:?}")),
                }
            }
            Kind::LogLevel(field) => {
                *field(config) = match value.to_ascii_lowercase().as_str() {
                    "error" => LogLevel::Error,
                    "warning" | "warn" => LogLevel::Warning,
                    "info" | "message" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => {
                        return Err(format!(
                            "expected error, warning, info, debug or trace, got {value:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!(
            "expected true or false (or 1/0, yes/no), got {value:?}"
        )),
    }
}

/// Digits only: no sign, no spaces, no `_`.
fn parse_digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_count(value: &str, min: usize, max: usize) -> Result<usize, String> {
    parse_digits(value)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected a whole number from {min} to {max}, got {value:?}"))
}

fn parse_port(value: &str) -> Result<u16, String> {
    parse_digits(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("expected a port number from 1 to 65535, got {value:?}"))
}

impl Unit {
    fn millis(self) -> u64 {
        match self {
            Unit::Millis => 1,
            Unit::Seconds => 1000,
            Unit::Minutes => 60_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Seconds => "seconds",
            Unit::Minutes => "minutes",
        }
    }
}

/// `600`, `500ms`, `2s`, `10min`, `1h`, `1d`: whole numbers only, as in Flexisip.
fn parse_duration(
    value: &str,
    bare: Unit,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let expected = || {
        format!(
            "expected a duration: a whole number of {} or with a unit (500ms, 30s, 10min, 1h, 1d), got {value:?}",
            bare.name()
        )
    };
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(digits_end);
    let unit_ms: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => bare.millis(),
        "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "m" => {
            return Err(format!(
                "unit m of {value:?} is ambiguous (Flexisip reads months): write min for minutes"
            ));
        }
        _ => return Err(expected()),
    };
    let count = parse_digits(digits).ok_or_else(expected)?;
    let range = || {
        format!(
            "expected a duration from {} to {}, got {value:?}",
            show_duration(min),
            show_duration(max)
        )
    };
    let total_ms = count.checked_mul(unit_ms).ok_or_else(range)?;
    if total_ms % bare.millis() != 0 {
        return Err(format!(
            "expected a whole number of {}, got {value:?}",
            bare.name()
        ));
    }
    let duration = Duration::from_millis(total_ms);
    if duration < min || duration > max {
        return Err(range());
    }
    Ok(duration)
}

/// A duration in the largest unit that writes it exactly (`500ms`, `90s`, `10min`, `1d`); the
/// result parses back to the same value.
fn show_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, unit_ms) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1000),
    ] {
        if ms % unit_ms == 0 {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

/// Flexisip's list delimiters: space, newline and comma (tabs too).
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|item| !item.is_empty())
}

/// Host names or IP addresses in canonical form (lower-case names, IPv6 in brackets as in URIs:
/// `[2001:db8::1]`). For `reg-domains` (`domains`), `*` is accepted too and the list must not be
/// empty: a registrar for no domain is a mistake.
fn parse_hosts(value: &str, domains: bool) -> Result<Vec<String>, String> {
    let hosts = list_items(value)
        .map(|item| {
            if domains && item == "*" {
                return Ok(item.to_owned());
            }
            if let Ok(ip) = item.parse::<Ipv6Addr>() {
                return Ok(format!("[{ip}]"));
            }
            match Host::parse(item).map(|host| (host.kind, host.text)) {
                Ok((HostKind::Domain, name)) => Ok(name.to_ascii_lowercase()),
                Ok((HostKind::Ipv4(ip), _)) => Ok(ip.to_string()),
                Ok((HostKind::Ipv6(Some(ip)), _)) => Ok(format!("[{ip}]")),
                Ok((HostKind::Ipv6(None), _)) | Err(_) => Err(format!(
                    "{item:?} is not a host name or IP address{}",
                    if domains { " (or *)" } else { "" }
                )),
            }
        })
        .collect::<Result<Vec<String>, String>>()?;
    if domains && hosts.is_empty() {
        return Err("expected at least one domain, or * for any".to_owned());
    }
    Ok(hosts)
}

/// `host:port` items, the host a name or IP address (IPv6 in brackets), the port given.
fn parse_host_ports(value: &str) -> Result<Vec<String>, String> {
    list_items(value)
        .map(|item| {
            let bad = || format!("{item:?} is not host:port (IPv6 as [address]:port)");
            let (host, port) = item.rsplit_once(':').ok_or_else(bad)?;
            let host = parse_hosts(host, false).map_err(|_| bad())?;
            let port = parse_port(port).map_err(|_| bad())?;
            match host.as_slice() {
                [host] => Ok(format!("{host}:{port}")),
                _ => Err(bad()),
            }
        })
        .collect()
}

fn parse_addresses(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for item in list_items(value) {
        let unbracketed = item
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(item);
        let ip: IpAddr = unbracketed
            .parse()
            .map_err(|_| format!("{item:?} is not an IP address"))?;
        if addresses.contains(&ip) {
            return Err(format!("{ip} is listed twice"));
        }
        addresses.push(ip);
    }
    Ok(addresses)
}

fn parse_transports(value: &str) -> Result<Vec<Listen>, String> {
    let mut listens: Vec<Listen> = Vec::new();
    for item in list_items(value) {
        for listen in parse_listen(item)? {
            if let Some(same) = listens.iter().find(|l| {
                l.transport == listen.transport && l.host == listen.host && l.port == listen.port
            }) {
                return Err(format!(
                    "{} and {} both listen on {listen}",
                    same.uri, listen.uri
                ));
            }
            listens.push(listen);
        }
    }
    if listens.is_empty() {
        return Err("expected at least one SIP URI to listen on, such as sip:*:5060".to_owned());
    }
    Ok(listens)
}

/// `internal-transport`: one URI of `transports` syntax naming an IP address (the nodes reach
/// each other without DNS). A `sip:` URI without `transport=` means UDP there (RFC 3263 §4.1:
/// the default for a `sip:` URI with an address).
fn parse_internal_transport(value: &str) -> Result<Option<Listen>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let listen = parse_listen(value)?.into_iter().next();
    match listen {
        Some(listen) if matches!(listen.host, ListenHost::Ip(_)) => Ok(Some(listen)),
        _ => Err(format!(
            "{value:?}: expected one SIP URI with an IP address, such as \
             sip:10.0.0.1:5060;transport=tcp (the nodes reach each other without DNS)"
        )),
    }
}

/// One URI of `transports`: `sip:*:5060`, `sip:host:port;transport=tcp`, `sips:host`. A `sip:`
/// URI without `transport=` listens on UDP and TCP, as Flexisip does; `sips:` means TLS (or WSS).
/// Without a port, the transport's default: 5060, 5061 for TLS, 80/443 for WS/WSS (RFC 7118).
fn parse_listen(text: &str) -> Result<Vec<Listen>, String> {
    let bad = |why: &str| format!("{text:?} is not a URI to listen on: {why}");
    // Flexisip's `*` host (every address) is not URI grammar: parse a stand-in address instead.
    let (any_host, parsable) = match text.split_once(':') {
        Some((scheme, rest))
            if rest.starts_with('*')
                && matches!(rest.as_bytes().get(1), None | Some(b':' | b';')) =>
        {
            (true, format!("{scheme}:0.0.0.0{}", &rest[1..]))
        }
        _ => (false, text.to_owned()),
    };
    let uri = Uri::parse(&parsable).map_err(|_| bad("not a valid URI"))?;
    let sip = uri
        .as_sip()
        .ok_or_else(|| bad("expected a sip: or sips: URI"))?;
    if sip.user.is_some() {
        return Err(bad("a URI to listen on has no user part"));
    }
    if !sip.headers.is_empty() {
        return Err(bad("a URI to listen on has no ?headers"));
    }
    if let Some(param) = sip
        .params
        .iter()
        .find(|p| !p.name.eq_ignore_ascii_case("transport"))
    {
        return Err(bad(&format!(
            "parameter {} is not supported (only transport= is)",
            param.name
        )));
    }
    let named = match sip.params.get("transport") {
        None => None,
        Some(value) => {
            let token = value
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| bad("transport= needs a value"))?;
            Some(Transport::from_token(token).ok_or_else(|| {
                bad(&format!(
                    "unknown transport {token:?} (expected udp, tcp, tls, ws or wss)"
                ))
            })?)
        }
    };
    let transports = match (sip.secure, named) {
        (false, None) => vec![Transport::Udp, Transport::Tcp],
        (false, Some(transport)) => vec![transport],
        // sips: is TLS underneath (RFC 3261 §26.2): over TCP that is TLS, over WebSocket WSS.
        (true, None | Some(Transport::Tcp | Transport::Tls)) => vec![Transport::Tls],
        (true, Some(Transport::Ws | Transport::Wss)) => vec![Transport::Wss],
        (true, Some(Transport::Udp)) => return Err(bad("sips: needs a TLS transport, not UDP")),
    };
    let host = if any_host {
        ListenHost::Any
    } else {
        match sip.host.kind {
            HostKind::Ipv4(ip) => ListenHost::Ip(IpAddr::V4(ip)),
            HostKind::Ipv6(Some(ip)) => ListenHost::Ip(IpAddr::V6(ip)),
            HostKind::Ipv6(None) => return Err(bad("not a valid IPv6 address")),
            HostKind::Domain => ListenHost::Name(sip.host.text.to_ascii_lowercase()),
        }
    };
    if sip.port == Some(0) {
        return Err(bad("port 0"));
    }
    Ok(transports
        .into_iter()
        .map(|transport| Listen {
            transport,
            host: host.clone(),
            port: sip.port.unwrap_or(transport.default_port()),
            uri: text.to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn listen(text: &str) -> Vec<(Transport, ListenHost, u16)> {
        parse_listen(text)
            .unwrap()
            .into_iter()
            .map(|l| (l.transport, l.host, l.port))
            .collect()
    }

    fn ip(text: &str) -> ListenHost {
        ListenHost::Ip(text.parse().unwrap())
    }

    #[test]
    fn table_defaults_are_valid() {
        let mut config = Config::placeholder();
        for key in KEYS {
            assert!(
                key.kind.set(&mut config, key.default).is_ok(),
                "[{}] {}",
                key.section,
                key.name
            );
        }
    }

    #[test]
    fn table_is_well_formed() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                SECTIONS.iter().any(|s| s.name == key.section),
                "{}",
                key.name
            );
            assert_eq!(
                key.name,
                key.name.to_ascii_lowercase(),
                "names are lower case"
            );
            assert!(
                !key.doc.is_empty() && !key.doc.contains('\n'),
                "{}",
                key.name
            );
            assert!(
                !KEYS[..i]
                    .iter()
                    .any(|k| k.section == key.section && k.name == key.name),
                "[{}] {} twice",
                key.section,
                key.name
            );
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        let expected = Config {
            global: Global {
                transports: vec![
                    Listen {
                        transport: Transport::Udp,
                        host: ip("127.0.0.1"),
                        port: 5060,
                        uri: "sip:127.0.0.1:5060".into(),
                    },
                    Listen {
                        transport: Transport::Tcp,
                        host: ip("127.0.0.1"),
                        port: 5060,
                        uri: "sip:127.0.0.1:5060".into(),
                    },
                ],
                threads: 0,
                aliases: vec![],
                sip_t1: Duration::from_millis(500),
                sip_t2: Duration::from_secs(4),
                sip_t4: Duration::from_secs(5),
                max_message_size_bytes: 65536,
                shard_queue_capacity: 1024,
                transaction_table_capacity: 262_144,
                max_connections_per_shard: 8192,
                max_connections_per_address: 128,
                log_level: LogLevel::Info,
                tls_certificates_dir: Some("/etc/flexisip/tls/".into()),
                tls_certificates_file: None,
                tls_certificates_private_key: None,
                tls_certificates_ca_file: None,
                tls_verify_incoming: false,
                idle_timeout: Duration::from_secs(3600),
                incomplete_message_timeout: Duration::from_secs(10),
                admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9060))),
                shutdown_grace_period: Duration::from_secs(5),
            },
            registrar: Registrar {
                reg_domains: vec!["localhost".into(), "127.0.0.1".into()],
                db_implementation: DbImplementation::Internal,
                max_expires: Duration::from_secs(86400),
                min_expires: Duration::from_secs(60),
                default_expires: Duration::from_secs(600),
                max_contacts_by_aor: 12,
                max_aors_per_shard: 1_048_576,
                redis_server_domain: String::new(),
                redis_server_port: 6379,
                redis_auth_password: Secret::default(),
                redis_username: String::new(),
                redis_sentinel_addresses: Vec::new(),
                redis_sentinel_master_name: String::new(),
                redis_sentinel_password: Secret::default(),
                redis_timeout: Duration::from_secs(1),
                redis_failover_hold: Duration::from_secs(20),
                redis_wait_replicas: 0,
                redis_replay_window: Duration::from_secs(15),
            },
            forward: Forward {
                allow_foreign_domains: false,
            },
            authentication: Authentication {
                enabled: false,
                auth_domains: vec!["*".into()],
                available_algorithms: vec![Algorithm::Md5],
                db_implementation: AuthDbImplementation::File,
                file_path: None,
                nonce_expires: Duration::from_secs(300),
                nonce_secret: Secret::default(),
                trusted_hosts: vec![],
            },
            dos_protection: DosProtection {
                enabled: true,
                time_period: Duration::from_secs(3),
                packet_rate_limit: 20,
                ban_time: Duration::from_secs(120),
                white_list: vec![],
            },
            cluster: Cluster {
                enabled: false,
                cluster_domain: String::new(),
                nodes: vec![],
                internal_transport: None,
            },
        };
        assert_eq!(c, expected);
        assert!(Loader::new().finish().is_ok(), "defaults are consistent");
    }

    #[test]
    fn durations() {
        let s = |v| parse_duration(v, Unit::Seconds, Duration::ZERO, MAX_EXPIRES);
        let ms = |v| parse_duration(v, Unit::Millis, Duration::ZERO, Duration::MAX);
        assert_eq!(s("600"), Ok(Duration::from_secs(600)));
        assert_eq!(s("10min"), Ok(Duration::from_secs(600)));
        assert_eq!(s("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(s("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(s("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(s("2S"), Ok(Duration::from_secs(2)));
        assert_eq!(s("3000ms"), Ok(Duration::from_secs(3)));
        assert_eq!(ms("500"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("4s"), Ok(Duration::from_secs(4)));
        for bad in [
            "",
            "ms",
            "1.5s",
            "-1",
            "+1",
            "1 s",
            "10 minutes",
            "1w",
            "s10",
            "1s500ms",
        ] {
            assert!(s(bad).unwrap_err().contains("expected a duration"), "{bad}");
        }
        assert!(s("10m").unwrap_err().contains("write min for minutes"));
        // Flexisip's ban-time counts minutes when bare.
        let min = |v| parse_duration(v, Unit::Minutes, Duration::ZERO, Duration::MAX);
        assert_eq!(min("2"), Ok(Duration::from_secs(120)));
        assert_eq!(min("1h"), Ok(Duration::from_secs(3600)));
        assert!(min("90s").unwrap_err().contains("whole number of minutes"));
        assert!(s("1500ms").unwrap_err().contains("whole number of seconds"));
        assert!(s("4294967296").unwrap_err().contains("from 0s to"));
        assert!(s("99999999999999999999d").is_err());
        assert!(ms("18446744073709551615d").is_err(), "overflow is an error");
    }

    #[test]
    fn show_duration_round_trips() {
        for ms in [
            0, 1, 500, 1000, 4000, 60_000, 90_000, 600_000, 3_600_000, 86_400_000, 86_400_001,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(
                parse_duration(
                    &show_duration(d),
                    Unit::Millis,
                    Duration::ZERO,
                    Duration::MAX
                ),
                Ok(d)
            );
        }
        assert_eq!(show_duration(Duration::from_secs(86400)), "1d");
        assert_eq!(show_duration(Duration::from_secs(600)), "10min");
        assert_eq!(show_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn listen_uris() {
        assert_eq!(
            listen("sip:*:5060"),
            [
                (Transport::Udp, ListenHost::Any, 5060),
                (Transport::Tcp, ListenHost::Any, 5060)
            ]
        );
        assert_eq!(listen("sip:*"), listen("sip:*:5060"));
        assert_eq!(
            listen("sip:host:5070;transport=udp"),
            [(Transport::Udp, ListenHost::Name("host".into()), 5070)]
        );
        assert_eq!(
            listen("sip:127.0.0.1:5060;transport=TCP"),
            [(Transport::Tcp, ip("127.0.0.1"), 5060)]
        );
        assert_eq!(
            listen("sips:Host1.Example.org"),
            [(
                Transport::Tls,
                ListenHost::Name("host1.example.org".into()),
                5061
            )]
        );
        assert_eq!(
            listen("sip:*;transport=tls"),
            [(Transport::Tls, ListenHost::Any, 5061)]
        );
        assert_eq!(
            listen("sips:*:443;transport=tcp"),
            [(Transport::Tls, ListenHost::Any, 443)]
        );
        assert_eq!(
            listen("sip:[::1]:8080;transport=ws"),
            [(Transport::Ws, ip("::1"), 8080)]
        );
        assert_eq!(
            listen("sips:[::]:8443;transport=wss"),
            [(Transport::Wss, ip("::"), 8443)]
        );
        assert_eq!(
            listen("sip:*;transport=ws"),
            [(Transport::Ws, ListenHost::Any, 80)]
        );
        assert_eq!(
            listen("sips:*;transport=ws"),
            [(Transport::Wss, ListenHost::Any, 443)]
        );
        assert_eq!(
            listen("sip:0.0.0.0:5060;transport=udp"),
            [(Transport::Udp, ip("0.0.0.0"), 5060)]
        );
        assert_eq!(parse_listen("sip:*:5060").unwrap()[0].uri, "sip:*:5060");
        for (bad, why) in [
            ("sip:", "not a valid URI"),
            ("127.0.0.1:5060", "not a valid URI"),
            ("tel:+33123", "sip: or sips:"),
            ("sip:alice@host", "no user part"),
            ("sip:host?subject=x", "no ?headers"),
            (
                "sip:host;maddr=10.0.0.1",
                "parameter maddr is not supported",
            ),
            ("sip:host;transport=sctp", "unknown transport \"sctp\""),
            ("sip:host;transport", "transport= needs a value"),
            ("sips:host;transport=udp", "not UDP"),
            ("sip:host:0", "port 0"),
            ("sip:host:65536", "not a valid URI"),
            ("sip:**:5060", "not a valid URI"),
            ("sip:[2001:db8:::192.0.2.1]", "IPv6"),
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn transport_lists() {
        let t =
            parse_transports("sip:*:5060, sips:host1.example.org\tsip:[::1]:5070;transport=tcp")
                .unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[3].to_string(), "TCP [::1]:5070");
        let err = parse_transports("sip:*:5060 sip:*:5060;transport=udp").unwrap_err();
        assert!(err.contains("both listen on UDP *:5060"), "{err}");
        assert!(parse_transports("  ").unwrap_err().contains("at least one"));
    }

    #[test]
    fn host_and_address_lists() {
        assert_eq!(
            parse_hosts("Example.ORG, 10.0.0.1 ::1 [2001:DB8:0::2]", false).unwrap(),
            ["example.org", "10.0.0.1", "[::1]", "[2001:db8::2]"]
        );
        assert_eq!(parse_hosts("*", true).unwrap(), ["*"]);
        assert!(parse_hosts("*", false).is_err());
        assert_eq!(parse_hosts("", false).unwrap(), Vec::<String>::new());
        assert!(
            parse_hosts(" ", true)
                .unwrap_err()
                .contains("at least one domain")
        );
        assert!(
            parse_hosts("exa mple!.org", false)
                .unwrap_err()
                .contains("\"mple!.org\"")
        );
        assert_eq!(
            parse_addresses("10.0.0.1,::1 [fe80::1]").unwrap(),
            [
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                "::1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(
            parse_addresses("10.0.0.x")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(
            parse_addresses("10.0.0.1 10.0.0.1")
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn scalars() {
        for (v, b) in [
            ("true", true),
            ("1", true),
            ("YES", true),
            ("False", false),
            ("0", false),
            ("no", false),
        ] {
            assert_eq!(parse_bool(v), Ok(b));
        }
        assert!(parse_bool("on").is_err());
        assert_eq!(parse_count("12", 1, 1000), Ok(12));
        for bad in [
            "",
            "0",
            "1001",
            "-1",
            "+5",
            "1_000",
            "1e3",
            "99999999999999999999999",
        ] {
            assert!(parse_count(bad, 1, 1000).is_err(), "{bad}");
        }
        assert_eq!(parse_port("6379"), Ok(6379));
        assert!(parse_port("0").is_err() && parse_port("65536").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("max-expire", "max-expires"), 1);
        assert_eq!(edit_distance("Kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            nearest("max-expire", keys_of(REGISTRAR).map(|k| k.name)),
            Some("max-expires")
        );
        assert_eq!(nearest("zzz", keys_of(REGISTRAR).map(|k| k.name)), None);
        assert!(matches!(
            find_key(GLOBAL, "reg-domain"),
            Err(ConfigErrorKind::UnknownKey { suggestion: Some(s), .. }) if s == "[module::Registrar] reg-domains"
        ));
        assert!(matches!(
            find_section("module::registar"),
            Err(ConfigErrorKind::UnknownSection {
                suggestion: Some(REGISTRAR),
                ..
            })
        ));
    }

    #[test]
    fn secrets_are_hidden() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<hidden> <hidden>");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Secret::default().to_string(), "");
    }
}
