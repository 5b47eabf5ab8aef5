//! What the node counts, and its rendering in the Prometheus text exposition format (version
//! 0.0.4, <https://prometheus.io/docs/instrumenting/exposition_formats/>), sans-IO.
//!
//! # How the shards share their numbers
//!
//! A shard counts with plain `u64` increments on state only it touches ([`crate::core::Counters`],
//! and the request handling [`Histogram`] its shell keeps): no atomics, no locks on the request
//! path. Once a second its timer loop copies them, with the gauges it can read cheaply then
//! (transactions, connections and bindings held), into a [`ShardSnapshot`] behind that shard's
//! own mutex (`crate::admin::ShardOps`), which only the admin thread ever reads. So the shard
//! takes one uncontended lock a second, and a scrape, however frequent, costs the shards nothing;
//! figures are at most about a second old.
//!
//! # Families
//!
//! Every figure is exposed twice: per shard, with a `shard` label, under `sipshard_shard_*`; and
//! for the node, the sum over the shards, under `sipshard_*` (so that `sum()` over either never
//! counts a request twice). Counters end in `_total`, histograms are in seconds with cumulative
//! `le` buckets, `_sum` and `_count`, as the format requires. The Redis thread's figures are
//! node-wide (`sipshard_redis_*`).

use std::fmt::{self, Write as _};
use std::time::Duration;

use sipshard_net::Method;

use crate::auth::AuthCounters;
use crate::core::Counters;
use crate::dos::FloodCounters;

/// Method labels of `requests_total`, in [`method_index`] order; the last one collects every
/// other method (extension methods are not labels: a peer must not create series).
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// Index of `method` in [`METHODS`].
pub fn method_index(method: Option<Method<'_>>) -> usize {
    match method {
        Some(Method::Invite) => 0,
        Some(Method::Ack) => 1,
        Some(Method::Bye) => 2,
        Some(Method::Cancel) => 3,
        Some(Method::Register) => 4,
        Some(Method::Options) => 5,
        Some(Method::Info) => 6,
        Some(Method::Update) => 7,
        Some(Method::Prack) => 8,
        Some(Method::Subscribe) => 9,
        Some(Method::Notify) => 10,
        Some(Method::Refer) => 11,
        Some(Method::Message) => 12,
        Some(Method::Publish) => 13,
        Some(Method::Other(_)) | None => 14,
    }
}

/// Status class labels of the response counters: index `status / 100 - 1`.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Index in [`CLASSES`] of a status code (100–699), read from a response's first line
/// (`SIP/2.0 NNN ...`); `None` for anything else.
pub fn class_index(response: &[u8]) -> Option<usize> {
    match response.get(8) {
        Some(digit @ b'1'..=b'6') if response.starts_with(b"SIP/2.0 ") => {
            Some(usize::from(digit - b'1'))
        }
        _ => None,
    }
}

/// Upper bounds of the request handling histogram: the time a shard spends on one message
/// (parse, transaction, decision, the writes it queues), from a few microseconds for an
/// absorbed retransmission to milliseconds for a stall.
pub const HANDLING_BOUNDS: [Duration; 12] = [
    Duration::from_micros(5),
    Duration::from_micros(10),
    Duration::from_micros(25),
    Duration::from_micros(50),
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(50),
];

/// A histogram with fixed bucket bounds: a count per bucket (the last one past every bound,
/// `+Inf`) and the sum. Observing is a search over a dozen bounds and two additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [Duration],
    /// Non-cumulative: `counts[i]` observations in `(bounds[i-1], bounds[i]]`.
    counts: Vec<u64>,
    sum: Duration,
}

impl Histogram {
    pub fn new(bounds: &'static [Duration]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: Duration::ZERO,
        }
    }

    pub fn observe(&mut self, value: Duration) {
        let bucket = self.bounds.partition_point(|&b| b < value);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum = self.sum.saturating_add(value);
    }

    /// Adds `other`'s observations (same bounds; a histogram of other bounds is ignored).
    fn merge(&mut self, other: &Histogram) {
        if other.bounds != self.bounds {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }
}

/// What one shard publishes about itself (see the module documentation).
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub counters: Counters,
    /// The authenticator's counters, with authentication enabled.
    pub auth: Option<AuthCounters>,
    /// The flood guard's counters, with `[module::DoSProtection]` enabled.
    pub flood: Option<FloodCounters>,
    pub server_transactions: usize,
    pub client_transactions: usize,
    /// Stream connections the shard holds (accepted, opened, in their TLS handshake).
    pub connections: usize,
    /// Bindings and AORs in the shard's store (in Redis mode, its cache).
    pub bindings: usize,
    pub aors: usize,
    /// Requests the shard still owes a final response or an answer (see
    /// [`crate::core::ShardCore::in_progress`]).
    pub in_progress: usize,
    pub handling: Histogram,
}

impl Default for ShardSnapshot {
    fn default() -> ShardSnapshot {
        ShardSnapshot {
            counters: Counters::default(),
            auth: None,
            flood: None,
            server_transactions: 0,
            client_transactions: 0,
            connections: 0,
            bindings: 0,
            aors: 0,
            in_progress: 0,
            handling: Histogram::new(&HANDLING_BOUNDS),
        }
    }
}

/// The Redis thread's figures (`db-implementation=redis`), as the admin thread read them.
#[derive(Debug, Clone)]
pub struct RedisSnapshot {
    pub health: sipshard_registrar::ha::Health,
    pub round_trips: sipshard_registrar::redis_thread::RoundTrips,
}

/// Node-wide state that is not a shard's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// SIGTERM or SIGINT came: new requests are refused while transactions finish.
    pub draining: bool,
    /// Shards bound to every listen address.
    pub listening_shards: usize,
}

/// One metric family being written: its HELP and TYPE lines come first, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// The text being built.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Type, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", EscapeHelp(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", EscapeLabel(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket` (cumulative, `le` in seconds), `_sum` and `_count` samples of `h`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.buckets(name, labels, h.bounds, &h.counts, h.sum);
    }

    fn buckets(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[Duration],
        counts: &[u64],
        sum: Duration,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.as_secs_f64().to_string());
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, sum.as_secs_f64());
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// HELP text escaping: backslash and line feed.
struct EscapeHelp<'a>(&'a str);

impl fmt::Display for EscapeHelp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Label value escaping: backslash, double quote and line feed.
struct EscapeLabel<'a>(&'a str);

impl fmt::Display for EscapeLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A figure with no label beyond `shard`: its name (without the `sipshard_` or
/// `sipshard_shard_` prefix), type, help, and how to read it from a snapshot.
struct Scalar {
    name: &'static str,
    kind: Type,
    help: &'static str,
    read: fn(&ShardSnapshot) -> u64,
}

/// A labelled figure: one sample per (label value, reading).
struct Labelled {
    name: &'static str,
    kind: Type,
    help: &'static str,
    label: &'static str,
    read: fn(&ShardSnapshot) -> Vec<(&'static str, u64)>,
}

fn auth(s: &ShardSnapshot) -> AuthCounters {
    s.auth.unwrap_or_default()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

static SCALARS: &[Scalar] = &[
    Scalar {
        name: "retransmissions_total",
        kind: Type::Counter,
        help: "Request retransmissions absorbed by a server transaction (RFC 3261 §17.2).",
        read: |s| s.counters.retransmissions,
    },
    Scalar {
        name: "service_unavailable_sent_total",
        kind: Type::Counter,
        help: "503 responses this node generated (overload, database unavailable, draining).",
        read: |s| s.counters.service_unavailable_sent,
    },
    Scalar {
        name: "draining_refused_total",
        kind: Type::Counter,
        help: "New out-of-dialog requests answered 503 while the node was shutting down.",
        read: |s| s.counters.draining_refused,
    },
    Scalar {
        name: "malformed_total",
        kind: Type::Counter,
        help: "Messages that could not be parsed or validated (answered 400/505/513 or dropped).",
        read: |s| s.counters.malformed,
    },
    Scalar {
        name: "overloaded_total",
        kind: Type::Counter,
        help: "Requests refused because a table or queue of the shard was full.",
        read: |s| s.counters.overloaded,
    },
    Scalar {
        name: "forwarded_total",
        kind: Type::Counter,
        help: "Requests forwarded (each fork counts once).",
        read: |s| s.counters.forwarded,
    },
    Scalar {
        name: "database_unavailable_total",
        kind: Type::Counter,
        help: "Registrar requests answered 503 because Redis did not take or confirm them.",
        read: |s| s.counters.database_unavailable,
    },
    Scalar {
        name: "flood_bans_total",
        kind: Type::Counter,
        help: "Sources banned for exceeding [module::DoSProtection] packet-rate-limit.",
        read: |s| s.counters.flood_bans,
    },
    Scalar {
        name: "auth_lockouts_total",
        kind: Type::Counter,
        help: "Authentication lockouts started (per source or per source and user).",
        read: |s| auth(s).lockouts,
    },
    Scalar {
        name: "server_transactions",
        kind: Type::Gauge,
        help: "Server transactions open.",
        read: |s| count(s.server_transactions),
    },
    Scalar {
        name: "client_transactions",
        kind: Type::Gauge,
        help: "Client transactions open.",
        read: |s| count(s.client_transactions),
    },
    Scalar {
        name: "connections",
        kind: Type::Gauge,
        help: "Stream connections (TCP, TLS, WebSocket) open.",
        read: |s| count(s.connections),
    },
    Scalar {
        name: "bindings",
        kind: Type::Gauge,
        help: "Bindings held (in Redis mode: cached).",
        read: |s| count(s.bindings),
    },
    Scalar {
        name: "aors",
        kind: Type::Gauge,
        help: "Addresses of record with at least one binding held (in Redis mode: cached).",
        read: |s| count(s.aors),
    },
    Scalar {
        name: "requests_in_progress",
        kind: Type::Gauge,
        help: "Requests still owed a final response or another shard's or Redis's answer.",
        read: |s| count(s.in_progress),
    },
];

static LABELLED: &[Labelled] = &[
    Labelled {
        name: "requests_total",
        kind: Type::Counter,
        help: "Requests received (retransmissions included), by method.",
        label: "method",
        read: |s| {
            METHODS
                .iter()
                .copied()
                .zip(s.counters.requests_by_method.iter().copied())
                .collect()
        },
    },
    Labelled {
        name: "responses_received_total",
        kind: Type::Counter,
        help: "Responses received, by status class.",
        label: "class",
        read: |s| {
            CLASSES
                .iter()
                .copied()
                .zip(s.counters.responses_received_by_class.iter().copied())
                .collect()
        },
    },
    Labelled {
        name: "responses_sent_total",
        kind: Type::Counter,
        help: "Responses sent, generated or relayed (retransmissions included), by status class.",
        label: "class",
        read: |s| {
            CLASSES
                .iter()
                .copied()
                .zip(s.counters.responses_sent_by_class.iter().copied())
                .collect()
        },
    },
    Labelled {
        name: "drops_total",
        kind: Type::Counter,
        help: "Messages, connections and sends given up, by reason.",
        label: "reason",
        read: |s| {
            let c = &s.counters;
            vec![
                ("unanswerable", c.dropped),
                ("too_many_vias", c.too_many_vias),
                ("flood", c.flood_dropped),
                ("send_failure", c.send_failures),
                ("connection_refused", c.connections_refused),
                ("connection_timed_out", c.connections_timed_out),
            ]
        },
    },
    Labelled {
        name: "registers_total",
        kind: Type::Counter,
        help: "REGISTER requests answered by the registrar, by result.",
        label: "result",
        read: |s| {
            vec![
                ("accepted", s.counters.registers_accepted),
                ("refused", s.counters.registers_refused),
            ]
        },
    },
    Labelled {
        name: "auth_total",
        kind: Type::Counter,
        help: "Digest authentication outcomes as answered: authenticated, challenged (401/407), forbidden (403).",
        label: "outcome",
        read: |s| {
            vec![
                ("authenticated", s.counters.auth_authenticated),
                ("challenged", s.counters.auth_challenged),
                ("forbidden", s.counters.auth_forbidden),
            ]
        },
    },
    Labelled {
        name: "auth_failures_total",
        kind: Type::Counter,
        help: "Credentials refused by the authenticator, by reason.",
        label: "reason",
        read: |s| {
            let a = auth(s);
            vec![
                ("bad_credentials", a.bad_credentials),
                ("replay", a.replays),
                ("stale_nonce", a.stale_nonces),
                ("invalid_nonce", a.invalid_nonces),
                ("malformed", a.malformed),
                ("forbidden", a.forbidden),
                ("locked_out", a.locked_out_refusals),
            ]
        },
    },
    Labelled {
        name: "flood_table_evictions_total",
        kind: Type::Counter,
        help: "Flood guard table entries evicted for new ones (its tables are bounded), by table.",
        label: "table",
        read: |s| {
            let f = s.flood.clone().unwrap_or_default();
            vec![("buckets", f.buckets_evicted), ("bans", f.bans_evicted)]
        },
    },
];

/// Renders every family: the shards' (per shard and summed), the node's state, and Redis's
/// when the node uses it.
pub fn render(shards: &[ShardSnapshot], node: NodeState, redis: Option<&RedisSnapshot>) -> String {
    let mut e = Exposition { out: String::new() };
    let ids: Vec<String> = (0..shards.len()).map(|i| i.to_string()).collect();
    for scalar in SCALARS {
        let total: u64 = shards.iter().map(scalar.read).sum();
        let name = format!("sipshard_{}", scalar.name);
        e.family(&name, scalar.kind, scalar.help);
        e.sample(&name, &[], total);
        let name = format!("sipshard_shard_{}", scalar.name);
        e.family(&name, scalar.kind, scalar.help);
        for (id, shard) in ids.iter().zip(shards) {
            e.sample(&name, &[("shard", id)], (scalar.read)(shard));
        }
    }
    for family in LABELLED {
        let per_shard: Vec<Vec<(&str, u64)>> = shards.iter().map(family.read).collect();
        let name = format!("sipshard_{}", family.name);
        e.family(&name, family.kind, family.help);
        let labels = per_shard.first().map_or_else(
            || (family.read)(&ShardSnapshot::default()),
            |first| first.clone(),
        );
        for (i, (value, _)) in labels.iter().enumerate() {
            let total: u64 = per_shard
                .iter()
                .filter_map(|readings| readings.get(i).map(|(_, n)| n))
                .sum();
            e.sample(&name, &[(family.label, value)], total);
        }
        let name = format!("sipshard_shard_{}", family.name);
        e.family(&name, family.kind, family.help);
        for (id, readings) in ids.iter().zip(&per_shard) {
            for (value, n) in readings {
                e.sample(&name, &[("shard", id), (family.label, value)], n);
            }
        }
    }
    let help = "Time a shard spent handling one received message (parsing, transaction, \
                routing, queueing what it sends), in seconds.";
    let mut total = Histogram::new(&HANDLING_BOUNDS);
    for shard in shards {
        total.merge(&shard.handling);
    }
    e.family("sipshard_request_handling_seconds", Type::Histogram, help);
    e.histogram("sipshard_request_handling_seconds", &[], &total);
    e.family(
        "sipshard_shard_request_handling_seconds",
        Type::Histogram,
        help,
    );
    for (id, shard) in ids.iter().zip(shards) {
        e.histogram(
            "sipshard_shard_request_handling_seconds",
            &[("shard", id)],
            &shard.handling,
        );
    }
    render_node(&mut e, shards.len(), node);
    if let Some(redis) = redis {
        render_redis(&mut e, redis);
    }
    e.out
}

fn render_node(e: &mut Exposition, shards: usize, node: NodeState) {
    e.family("sipshard_shards", Type::Gauge, "Shards (one thread each).");
    e.sample("sipshard_shards", &[], shards);
    e.family(
        "sipshard_listening_shards",
        Type::Gauge,
        "Shards bound to every listen address.",
    );
    e.sample("sipshard_listening_shards", &[], node.listening_shards);
    e.family(
        "sipshard_draining",
        Type::Gauge,
        "1 once SIGTERM or SIGINT came: new requests are refused while transactions finish.",
    );
    e.sample("sipshard_draining", &[], u8::from(node.draining));
}

fn render_redis(e: &mut Exposition, redis: &RedisSnapshot) {
    let h = &redis.health;
    let c = &h.counters;
    e.family(
        "sipshard_redis_master",
        Type::Gauge,
        "1 with the verified master's address while one is known, 0 without a label otherwise.",
    );
    match &h.master {
        Some(master) => e.sample("sipshard_redis_master", &[("address", master)], 1),
        None => e.sample("sipshard_redis_master", &[], 0),
    }
    let gauges: [(&str, &str, usize); 4] = [
        (
            "sipshard_redis_journal_depth",
            "Writes in the journal: held, in flight, and acknowledged ones kept for replay.",
            h.journal_len,
        ),
        (
            "sipshard_redis_held_writes",
            "Writes not yet acknowledged by a master (held while none is known).",
            h.pending_writes,
        ),
        (
            "sipshard_redis_replays_pending",
            "Acknowledged writes waiting to be replayed on a new master.",
            h.replays_pending,
        ),
        (
            "sipshard_redis_subscribed",
            "1 while the changes channel subscription is confirmed on the master.",
            usize::from(h.subscribed),
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, Type::Gauge, help);
        e.sample(name, &[], value);
    }
    let counters: [(&str, &str, u64); 6] = [
        (
            "sipshard_redis_failovers_total",
            "Verified masters lost (each is a failover seen, or an outage).",
            c.masters_lost,
        ),
        (
            "sipshard_redis_masters_verified_total",
            "Masters verified (quorum of sentinels, then ROLE).",
            c.masters_verified,
        ),
        (
            "sipshard_redis_replayed_total",
            "Acknowledged writes replayed on a new master.",
            c.replayed,
        ),
        (
            "sipshard_redis_request_timeouts_total",
            "Redis requests that timed out.",
            c.request_timeouts,
        ),
        (
            "sipshard_redis_resyncs_total",
            "Cache resyncs: subscription gaps and change queues that overflowed.",
            c.resyncs,
        ),
        (
            "sipshard_redis_reads_total",
            "Reads (the lookup script) submitted.",
            c.reads,
        ),
    ];
    for (name, help, value) in counters {
        e.family(name, Type::Counter, help);
        e.sample(name, &[], value);
    }
    let name = "sipshard_redis_writes_total";
    e.family(name, Type::Counter, "Registrar writes, by outcome.");
    for (outcome, n) in [
        ("submitted", c.submitted),
        ("acked", c.acked),
        ("failed", c.failed),
        ("rejected", c.rejected),
    ] {
        e.sample(name, &[("outcome", outcome)], n);
    }
    let name = "sipshard_redis_round_trip_seconds";
    e.family(
        name,
        Type::Histogram,
        "Time from a write's or read's submission by a shard to its acknowledgement, in seconds (held writes included).",
    );
    let rt = &redis.round_trips;
    e.buckets(name, &[], rt.bounds, &rt.counts, rt.sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(requests: u64, retransmissions: u64) -> ShardSnapshot {
        let mut s = ShardSnapshot::default();
        s.counters.requests_by_method[method_index(Some(Method::Options))] = requests;
        s.counters.retransmissions = retransmissions;
        s.handling.observe(Duration::from_micros(7));
        s.handling.observe(Duration::from_secs(1));
        s
    }

    fn state() -> NodeState {
        NodeState {
            draining: false,
            listening_shards: 2,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let text = render(&[shard(1, 0), shard(2, 0)], state(), None);
        assert!(text.contains("sipshard_request_handling_seconds_bucket{le=\"0.000005\"} 0\n"));
        assert!(text.contains("sipshard_request_handling_seconds_bucket{le=\"0.00001\"} 2\n"));
        assert!(text.contains("sipshard_request_handling_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("sipshard_request_handling_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("sipshard_request_handling_seconds_count 4\n"));
        assert!(text.contains(
            "sipshard_shard_request_handling_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2\n"
        ));
    }

    #[test]
    fn node_totals_are_the_sum_of_the_shards() {
        let text = render(&[shard(3, 1), shard(4, 5)], state(), None);
        assert!(text.contains("sipshard_requests_total{method=\"OPTIONS\"} 7\n"));
        assert!(text.contains("sipshard_shard_requests_total{shard=\"0\",method=\"OPTIONS\"} 3\n"));
        assert!(text.contains("sipshard_shard_requests_total{shard=\"1\",method=\"OPTIONS\"} 4\n"));
        assert!(text.contains("sipshard_retransmissions_total 6\n"));
        assert!(text.contains("sipshard_shard_retransmissions_total{shard=\"1\"} 5\n"));
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let text = render(&[shard(1, 1)], state(), None);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{line}: no TYPE before it");
            }
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition { out: String::new() };
        e.family("x", Type::Gauge, "a \\ b\nc");
        e.sample("x", &[("address", "a\"b\\c\nd")], 1);
        assert_eq!(
            e.out,
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{address=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn status_classes_are_read_from_the_status_line() {
        assert_eq!(class_index(b"SIP/2.0 200 OK\r\n"), Some(1));
        assert_eq!(class_index(b"SIP/2.0 503 Service Unavailable\r\n"), Some(4));
        assert_eq!(class_index(b"SIP/2.0 699 x\r\n"), Some(5));
        assert_eq!(class_index(b"SIP/2.0 099 x\r\n"), None);
        assert_eq!(class_index(b"INVITE sip:a@b SIP/2.0\r\n"), None);
        assert_eq!(class_index(b"SIP/2."), None);
    }
}
