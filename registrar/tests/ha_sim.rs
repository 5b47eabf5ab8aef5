//! Deterministic simulation of the Redis HA client (`sipshard_registrar::ha`) against a model
//! of the seed deployment: three redis-servers (one master, two replicas, asynchronous
//! replication that lags and loses the last writes on promotion) and three sentinels (quorum 2)
//! that elect a new master after down-after. Faults come on a seeded random schedule: master
//! killed (and restarted empty), master paused (it wakes up still a master, accepting writes
//! until demoted ~10 s later), a node stalling past the request timeout, the client cut from a
//! node or from two sentinels, the master cut from its replicas and sentinels while the client
//! still reaches it (split brain), two sentinels dead (no quorum), replication lag spikes. A node
//! that wakes up answers what sat in its socket buffer, so late replies on connections the client
//! gave up are delivered.
//!
//! The client's writes are idempotent "set key to version if newer" operations. Invariants:
//! - every write that got `Completion::Acked` is on the final master (same or newer version);
//! - every write completes exactly once, within `failover_hold` of its submission;
//! - once the faults are over, a new write is acknowledged (the client recovers);
//! - every read (one with each write, `EVALSHA_RO`, served by any node: the sentinels list the
//!   replicas) completes exactly once within `request_timeout` of its submission, master or
//!   not.
//!
//! `HA_SIM_SEED=n` replays one seed; `HA_SIM_SEEDS=n` runs n seeds (default 1500).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipshard_registrar::ha::{
    Command, Completion, ConnId, ConnKind, Event, HaClient, HaConfig, ReadId, RedisCommand, Reply,
    RequestId, Script, ScriptId, Write, WriteId,
};

// ---------------------------------------------------------------------------------------------
// Model parameters (milliseconds), shaped like the measured lab (down-after 2 s).

const NODES: usize = 3;
const SENTINELS: usize = 3;
const KEYS: u8 = 8;
const LATENCY_MS: u64 = 1;
const DOWN_AFTER_MS: u64 = 2_000;
/// Sentinel demotes a returning old master this long after it reappears.
const DEMOTE_AFTER_MS: u64 = 10_000;
const TICK_MS: u64 = 100;
/// Faults and writes happen before this; then everything heals.
const FAULTS_END_MS: u64 = 40_000;
/// A write submitted here must be acknowledged: the client has recovered.
const PROBE_AT_MS: u64 = 75_000;
const END_MS: u64 = 100_000;

fn client_config(seed: u64) -> HaConfig {
    let sentinels = (0..SENTINELS)
        .map(|i| Arc::from(format!("s{i}:26379")))
        .collect();
    let mut c = HaConfig::sentinel(sentinels, "mymaster");
    c.scripts = vec![Script {
        sha1: "setifnewer".into(),
        source: "-- set KEYS[1] to ARGV[1] if newer".into(),
    }];
    // Covers down-after (2 s) + election (<= 1.5 s) + sentinels' skew + check interval (1 s)
    // + request timeout (1 s) + a replication lag spike.
    c.replay_window = Duration::from_secs(8);
    c.seed = seed;
    c
}

// ---------------------------------------------------------------------------------------------
// A tiny PRNG (SplitMix64), so that a seed replays exactly without a dependency.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeRole {
    Master,
    Replica(usize),
}

#[derive(Debug)]
struct Node {
    alive: bool,
    paused: bool,
    /// Cut from the sentinels and the other nodes (the client may still reach it).
    isolated: bool,
    /// Cut from the client.
    client_cut: bool,
    role: NodeRole,
    data: BTreeMap<u8, u64>,
    /// Requests received while paused, answered on resume (the socket buffer).
    inbox: VecDeque<(ConnId, RequestId, RedisCommand)>,
    /// Replies `-LOADING` until then (restarted with its data on disk).
    loading_until: u64,
    /// A replication stream was interrupted: full resync at the next tick.
    needs_sync: bool,
    /// A demotion (by the sentinels) is scheduled.
    demotion_pending: bool,
    lag_spike_until: u64,
}

#[derive(Debug)]
struct Sentinel {
    alive: bool,
    client_cut: bool,
    /// The master this sentinel names.
    belief: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Node(usize),
    Sentinel(usize),
}

#[derive(Debug)]
enum Ev {
    ToClient(Event),
    ToNode {
        node: usize,
        conn: ConnId,
        request: RequestId,
        cmd: RedisCommand,
    },
    ToSentinel {
        s: usize,
        conn: ConnId,
        request: RequestId,
        cmd: RedisCommand,
    },
    Replicate {
        from: usize,
        to: usize,
        key: u8,
        version: u64,
    },
    Tick,
    Elect,
    Demote(usize),
    UpdateBelief {
        s: usize,
        master: usize,
    },
    Submit {
        key: u8,
    },
    Fault(Fault),
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
    Isolate(usize),
    Rejoin,
    CutClient(usize),
    HealClient(usize),
    KillSentinel(usize),
    ReviveSentinel(usize),
    CutSentinel(usize),
    HealSentinel(usize),
    LagSpike(usize, u64),
}

struct Queued {
    at_ms: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    submitted: u64,
    acked: u64,
    failed: u64,
    replayed: u64,
    late_replies: u64,
    masters_lost: u64,
    elections: u64,
    stale_writes: u64,
    reads_served: u64,
    reads_failed: u64,
    replica_reads: u64,
}

struct Sim {
    rng: Rng,
    t0: Instant,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    sentinels: Vec<Sentinel>,
    /// The master the sentinels elected last.
    current: usize,
    down_since: Option<u64>,
    election_pending: bool,
    conns: BTreeMap<ConnId, Target>,
    /// Sentinel i's subscriber connections.
    subscribers: Vec<(usize, ConnId)>,
    client: HaClient,
    /// Per key, the last version submitted.
    versions: BTreeMap<u8, u64>,
    writes: BTreeMap<WriteId, (u8, u64, u64)>,
    outcomes: BTreeMap<WriteId, (bool, u64)>,
    /// Reads submitted (when) and their outcomes (served, when).
    reads: BTreeMap<ReadId, u64>,
    read_outcomes: BTreeMap<ReadId, (bool, u64)>,
    probe: Option<WriteId>,
    stats: Stats,
    /// `HA_SIM_TRACE=1`: print what happens (with `HA_SIM_SEED`).
    trace: bool,
}

fn node_of(addr: &str) -> Option<Target> {
    let (name, _) = addr.split_once(':')?;
    let i: usize = name.get(1..)?.parse().ok()?;
    match name.as_bytes().first()? {
        b'n' if i < NODES => Some(Target::Node(i)),
        b's' if i < SENTINELS => Some(Target::Sentinel(i)),
        _ => None,
    }
}

impl Sim {
    fn new(seed: u64, config: HaConfig) -> Sim {
        let t0 = Instant::now();
        let client = HaClient::new(config, t0).expect("valid configuration");
        let nodes = (0..NODES)
            .map(|i| Node {
                alive: true,
                paused: false,
                isolated: false,
                client_cut: false,
                role: if i == 0 {
                    NodeRole::Master
                } else {
                    NodeRole::Replica(0)
                },
                data: BTreeMap::new(),
                inbox: VecDeque::new(),
                loading_until: 0,
                needs_sync: false,
                demotion_pending: false,
                lag_spike_until: 0,
            })
            .collect();
        let sentinels = (0..SENTINELS)
            .map(|_| Sentinel {
                alive: true,
                client_cut: false,
                belief: 0,
            })
            .collect();
        let mut sim = Sim {
            rng: Rng(seed ^ 0xa5a5_5a5a_dead_beef),
            t0,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            sentinels,
            current: 0,
            down_since: None,
            election_pending: false,
            conns: BTreeMap::new(),
            subscribers: Vec::new(),
            client,
            versions: BTreeMap::new(),
            writes: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_outcomes: BTreeMap::new(),
            probe: None,
            stats: Stats::default(),
            trace: std::env::var_os("HA_SIM_TRACE").is_some(),
        };
        sim.schedule_workload();
        sim.schedule_faults();
        sim.at(TICK_MS, Ev::Tick);
        sim
    }

    fn at(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at_ms,
            seq: self.seq,
            ev,
        }));
    }

    fn after(&mut self, delay_ms: u64, ev: Ev) {
        self.at(self.now_ms + delay_ms, ev);
    }

    fn instant(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn schedule_workload(&mut self) {
        let writes = self.rng.range(40, 160);
        for _ in 0..writes {
            let at = self.rng.range(500, FAULTS_END_MS);
            let key = (self.rng.next() % u64::from(KEYS)) as u8;
            self.at(at, Ev::Submit { key });
        }
        // Bursts: several writes at once, to exercise the pipeline.
        for _ in 0..self.rng.range(1, 5) {
            let at = self.rng.range(500, FAULTS_END_MS);
            for key in 0..KEYS {
                self.at(at, Ev::Submit { key });
            }
        }
    }

    fn schedule_faults(&mut self) {
        let count = self.rng.range(1, 5);
        for _ in 0..count {
            let at = self.rng.range(1_000, FAULTS_END_MS - 10_000);
            let node = self.rng.below(NODES);
            match self.rng.below(9) {
                0 | 1 => {
                    // The master is killed (which node is master is decided when it fires).
                    self.at(at, Ev::Fault(Fault::Kill(usize::MAX)));
                }
                2 | 3 => {
                    self.at(at, Ev::Fault(Fault::Pause(usize::MAX)));
                    let d = self.rng.range(500, 8_000);
                    self.at(at + d, Ev::Fault(Fault::Resume(usize::MAX)));
                }
                4 => {
                    // A stall past the request timeout, too short for a failover.
                    self.at(at, Ev::Fault(Fault::Pause(node)));
                    let d = self.rng.range(300, 1_800);
                    self.at(at + d, Ev::Fault(Fault::Resume(node)));
                }
                5 => {
                    self.at(at, Ev::Fault(Fault::CutClient(node)));
                    let d = self.rng.range(500, 5_000);
                    self.at(at + d, Ev::Fault(Fault::HealClient(node)));
                }
                6 => {
                    self.at(at, Ev::Fault(Fault::Isolate(usize::MAX)));
                    let d = self.rng.range(1_000, 8_000);
                    self.at(at + d, Ev::Fault(Fault::Rejoin));
                }
                7 => {
                    // Two sentinels dead, or cut from the client.
                    let spared = self.rng.below(SENTINELS);
                    let d = self.rng.range(1_000, 15_000);
                    let cut = self.rng.chance(50);
                    for s in (0..SENTINELS).filter(|s| *s != spared) {
                        if cut {
                            self.at(at, Ev::Fault(Fault::CutSentinel(s)));
                            self.at(at + d, Ev::Fault(Fault::HealSentinel(s)));
                        } else {
                            self.at(at, Ev::Fault(Fault::KillSentinel(s)));
                            self.at(at + d, Ev::Fault(Fault::ReviveSentinel(s)));
                        }
                    }
                }
                _ => {
                    let d = self.rng.range(300, 2_500);
                    self.at(at, Ev::Fault(Fault::LagSpike(node, d)));
                }
            }
        }
        self.at(PROBE_AT_MS, Ev::Submit { key: 0 });
    }

    // --- the client side of the network ------------------------------------------------------

    fn drain_client(&mut self) {
        while let Some(cmd) = self.client.poll_command() {
            match cmd {
                Command::Connect { conn, addr, kind } => self.connect(conn, &addr, kind),
                Command::Send { conn, request, cmd } => self.send(conn, request, cmd),
                // A real driver drops the socket; what the peer already sent may still arrive,
                // and the client must ignore it: the model keeps delivering.
                Command::Close { .. } => {}
            }
        }
        while let Some(done) = self.client.poll_completion() {
            let (id, acked) = match done {
                Completion::Acked { write, .. } => (write, true),
                Completion::Failed { write, .. } => (write, false),
                Completion::ReadDone { read, .. } | Completion::ReadFailed { read, .. } => {
                    let served = matches!(done, Completion::ReadDone { .. });
                    let previous = self.read_outcomes.insert(read, (served, self.now_ms));
                    assert!(previous.is_none(), "{read:?} completed twice");
                    continue;
                }
            };
            if self.trace {
                eprintln!(
                    "{:>6} client: {id:?} acked={acked} {:?}",
                    self.now_ms,
                    self.client.health().master
                );
            }
            let previous = self.outcomes.insert(id, (acked, self.now_ms));
            assert!(previous.is_none(), "{id:?} completed twice");
        }
    }

    fn connect(&mut self, conn: ConnId, addr: &str, kind: ConnKind) {
        let target = node_of(addr).expect("the client only connects to configured addresses");
        self.conns.insert(conn, target);
        let (reachable, accepting) = match target {
            Target::Node(i) => (!self.nodes[i].client_cut, self.nodes[i].alive),
            Target::Sentinel(i) => (!self.sentinels[i].client_cut, self.sentinels[i].alive),
        };
        if !reachable {
            return; // SYN lost: the client's connect timeout decides.
        }
        if kind == ConnKind::SentinelPubSub {
            if let Target::Sentinel(i) = target {
                self.subscribers.push((i, conn));
            }
        }
        // A paused process still has its socket accepted by the kernel.
        let ev = if accepting {
            Event::Connected { conn }
        } else {
            Event::ConnectFailed { conn }
        };
        self.after(LATENCY_MS, Ev::ToClient(ev));
    }

    fn send(&mut self, conn: ConnId, request: RequestId, cmd: RedisCommand) {
        let ev = match self.conns.get(&conn) {
            Some(Target::Node(node)) if !self.nodes[*node].client_cut => Ev::ToNode {
                node: *node,
                conn,
                request,
                cmd,
            },
            Some(Target::Sentinel(s)) if !self.sentinels[*s].client_cut => Ev::ToSentinel {
                s: *s,
                conn,
                request,
                cmd,
            },
            _ => return,
        };
        self.after(LATENCY_MS, ev);
    }

    fn reply(&mut self, target: Target, conn: ConnId, request: RequestId, reply: Reply) {
        let cut = match target {
            Target::Node(i) => self.nodes[i].client_cut,
            Target::Sentinel(i) => self.sentinels[i].client_cut,
        };
        if !cut {
            let ev = Event::Reply {
                conn,
                request,
                reply,
            };
            self.after(LATENCY_MS, Ev::ToClient(ev));
        }
    }

    /// Every connection to `target` is reset (the process died).
    fn reset_connections(&mut self, target: Target) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, t)| **t == target)
            .map(|(c, _)| *c)
            .collect();
        for conn in conns {
            self.conns.remove(&conn);
            self.subscribers.retain(|(_, c)| *c != conn);
            let cut = match target {
                Target::Node(i) => self.nodes[i].client_cut,
                Target::Sentinel(i) => self.sentinels[i].client_cut,
            };
            if !cut {
                self.after(LATENCY_MS, Ev::ToClient(Event::Disconnected { conn }));
            }
        }
    }

    // --- the servers -------------------------------------------------------------------------

    fn node_request(&mut self, node: usize, conn: ConnId, request: RequestId, cmd: RedisCommand) {
        let n = &mut self.nodes[node];
        if !n.alive || !self.conns.contains_key(&conn) {
            return;
        }
        if n.paused {
            n.inbox.push_back((conn, request, cmd));
            return;
        }
        let reply = self.execute(node, &cmd);
        self.reply(Target::Node(node), conn, request, reply);
    }

    fn execute(&mut self, node: usize, cmd: &RedisCommand) -> Reply {
        let now = self.now_ms;
        let n = &mut self.nodes[node];
        if n.loading_until > now {
            return Reply::Error("LOADING Redis is loading the dataset in memory".into());
        }
        match cmd {
            RedisCommand::Auth { .. } | RedisCommand::Subscribe(_) => Reply::Status("OK".into()),
            RedisCommand::Role => {
                let role = match n.role {
                    NodeRole::Master => "master",
                    NodeRole::Replica(_) => "slave",
                };
                Reply::Array(vec![Reply::Bulk(role.into()), Reply::Int(0)])
            }
            RedisCommand::ScriptLoad(_) => Reply::Bulk(b"setifnewer".to_vec()),
            // Any node serves a read, a replica with what it has.
            RedisCommand::EvalShaRo { read, .. } => match read.keys.first() {
                Some(key) => Reply::Int(n.data.get(&key[0]).map_or(0, |v| *v as i64)),
                None => Reply::Error("ERR bad read".into()),
            },
            RedisCommand::EvalSha { write, .. } => {
                if n.role != NodeRole::Master {
                    return Reply::Error(
                        "READONLY You can't write against a read only replica.".into(),
                    );
                }
                let (Some(key), Some(version)) = (write.keys.first(), write.args.first()) else {
                    return Reply::Error("ERR bad write".into());
                };
                let key = key[0];
                let version = u64::from_le_bytes(version.as_slice().try_into().expect("8 bytes"));
                let slot = n.data.entry(key).or_insert(0);
                *slot = (*slot).max(version);
                if node != self.current {
                    self.stats.stale_writes += 1;
                }
                self.replicate(node, key, version);
                Reply::Int(1)
            }
            other => Reply::Error(format!("ERR the model does not implement {other:?}")),
        }
    }

    fn replicate(&mut self, from: usize, key: u8, version: u64) {
        for to in 0..NODES {
            if self.nodes[to].role != NodeRole::Replica(from) {
                continue;
            }
            let lag = if self.nodes[to].lag_spike_until > self.now_ms {
                self.rng.range(300, 2_000)
            } else {
                self.rng.range(1, 20)
            };
            self.after(
                lag,
                Ev::Replicate {
                    from,
                    to,
                    key,
                    version,
                },
            );
        }
    }

    fn link_up(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.nodes[a], &self.nodes[b]);
        x.alive && y.alive && !x.isolated && !y.isolated
    }

    fn seen_by_sentinels(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.alive && !n.paused && !n.isolated
    }

    fn sentinel_request(&mut self, s: usize, conn: ConnId, request: RequestId, cmd: RedisCommand) {
        if !self.sentinels[s].alive || !self.conns.contains_key(&conn) {
            return;
        }
        let reply = match cmd {
            RedisCommand::Auth { .. } => Reply::Status("OK".into()),
            RedisCommand::Subscribe(_) => Reply::Array(vec![]),
            RedisCommand::SentinelGetMasterAddrByName(_) => {
                let m = self.sentinels[s].belief;
                Reply::Array(vec![
                    Reply::Bulk(format!("n{m}").into()),
                    Reply::Bulk(b"6379".to_vec()),
                ])
            }
            RedisCommand::SentinelReplicas(_) => {
                let m = self.sentinels[s].belief;
                let entry = |n: usize| {
                    let fields = [format!("n{n}"), "6379".into(), "slave".into()];
                    let names = ["ip", "port", "flags"];
                    Reply::Array(
                        names
                            .iter()
                            .zip(fields)
                            .flat_map(|(k, v)| {
                                [Reply::Bulk(k.as_bytes().into()), Reply::Bulk(v.into())]
                            })
                            .collect(),
                    )
                };
                Reply::Array((0..NODES).filter(|&n| n != m).map(entry).collect())
            }
            other => Reply::Error(format!("ERR unknown sentinel command {other:?}")),
        };
        self.reply(Target::Sentinel(s), conn, request, reply);
    }

    /// The sentinels' periodic work: detect a down master, demote returning old masters,
    /// resync interrupted replicas.
    fn tick(&mut self) {
        let cur = self.current;
        if self.seen_by_sentinels(cur) {
            self.down_since = None;
        } else {
            let since = *self.down_since.get_or_insert(self.now_ms);
            let quorum = self.sentinels.iter().filter(|s| s.alive).count() > SENTINELS / 2;
            if self.now_ms >= since + DOWN_AFTER_MS && quorum && !self.election_pending {
                self.election_pending = true;
                let delay = self.rng.range(200, 1_500);
                self.after(delay, Ev::Elect);
            }
        }
        for i in 0..NODES {
            let n = &self.nodes[i];
            if i != cur
                && n.role == NodeRole::Master
                && self.seen_by_sentinels(i)
                && !n.demotion_pending
            {
                self.nodes[i].demotion_pending = true;
                self.after(DEMOTE_AFTER_MS, Ev::Demote(i));
            }
            if self.nodes[i].needs_sync
                && self.nodes[i].role == NodeRole::Replica(cur)
                && self.link_up(i, cur)
                && !self.nodes[cur].paused
                && !self.nodes[i].paused
            {
                self.nodes[i].data = self.nodes[cur].data.clone();
                self.nodes[i].needs_sync = false;
            }
        }
        // A revived sentinel learns the current configuration.
        for s in 0..SENTINELS {
            if self.sentinels[s].alive && self.sentinels[s].belief != cur && !self.election_pending
            {
                let delay = self.rng.range(50, 500);
                self.after(delay, Ev::UpdateBelief { s, master: cur });
            }
        }
        if self.now_ms < END_MS {
            self.after(TICK_MS, Ev::Tick);
        }
    }

    fn elect(&mut self) {
        self.election_pending = false;
        let old = self.current;
        if self.seen_by_sentinels(old)
            || self.sentinels.iter().filter(|s| s.alive).count() <= SENTINELS / 2
        {
            return; // It came back, or the quorum went away meanwhile.
        }
        let candidates: Vec<usize> = (0..NODES)
            .filter(|i| {
                // Sentinel promotes a replica of the failed master, never a stale master.
                self.nodes[*i].role == NodeRole::Replica(old)
                    && self.seen_by_sentinels(*i)
                    && self.nodes[*i].loading_until <= self.now_ms
            })
            .collect();
        if candidates.is_empty() {
            self.down_since = Some(self.now_ms); // try again after down-after
            return;
        }
        let new = candidates[self.rng.below(candidates.len())];
        if self.trace {
            let data: Vec<_> = self.nodes.iter().map(|n| &n.data).collect();
            eprintln!(
                "{:>6} elected n{new} over n{old}; data {data:?}",
                self.now_ms
            );
        }
        self.stats.elections += 1;
        self.current = new;
        self.down_since = None;
        self.nodes[new].role = NodeRole::Master;
        self.nodes[new].needs_sync = false;
        for i in 0..NODES {
            if i != new && i != old && self.seen_by_sentinels(i) {
                self.nodes[i].role = NodeRole::Replica(new);
                self.nodes[i].data = self.nodes[new].data.clone();
                self.nodes[i].needs_sync = false;
            }
        }
        for s in 0..SENTINELS {
            if self.sentinels[s].alive {
                let delay = self.rng.range(0, 300);
                self.after(delay, Ev::UpdateBelief { s, master: new });
            }
        }
    }

    fn demote(&mut self, node: usize) {
        self.nodes[node].demotion_pending = false;
        if node == self.current || !self.seen_by_sentinels(node) {
            return;
        }
        let cur = self.current;
        // Full resync: what it accepted while stale is discarded.
        let data = self.nodes[cur].data.clone();
        let n = &mut self.nodes[node];
        n.role = NodeRole::Replica(cur);
        n.data = data;
    }

    fn update_belief(&mut self, s: usize, master: usize) {
        if !self.sentinels[s].alive || self.sentinels[s].belief == master {
            return;
        }
        self.sentinels[s].belief = master;
        let payload = format!("mymaster 0 0 n{master} 6379");
        let subs: Vec<ConnId> = self
            .subscribers
            .iter()
            .filter(|(i, _)| *i == s)
            .map(|(_, c)| *c)
            .collect();
        if self.sentinels[s].client_cut {
            return;
        }
        for conn in subs {
            let ev = Event::Message {
                conn,
                channel: "+switch-master".into(),
                payload: payload.clone(),
            };
            self.after(LATENCY_MS, Ev::ToClient(ev));
        }
    }

    fn fault(&mut self, fault: Fault) {
        let pick = |n: usize, cur: usize| if n == usize::MAX { cur } else { n };
        let cur = self.current;
        match fault {
            Fault::Kill(n) => {
                let n = pick(n, cur);
                if !self.nodes[n].alive {
                    return;
                }
                self.nodes[n].alive = false;
                self.nodes[n].paused = false;
                self.nodes[n].inbox.clear();
                self.reset_connections(Target::Node(n));
                let back = self.rng.range(5_000, 20_000);
                self.after(back, Ev::Fault(Fault::Restart(n)));
            }
            Fault::Restart(n) => {
                let node = &mut self.nodes[n];
                node.alive = true;
                if n == cur {
                    // Still the master (no failover happened): it reloads its data from disk.
                    node.loading_until = self.now_ms + 1_000;
                } else if node.role == NodeRole::Master {
                    // An old master without persistence comes back empty and writable.
                    node.data.clear();
                } else {
                    node.role = NodeRole::Replica(cur);
                    node.needs_sync = true;
                }
            }
            Fault::Pause(n) => {
                let n = pick(n, cur);
                self.nodes[n].paused = true;
            }
            Fault::Resume(n) => {
                let n = pick(n, cur);
                // Resume whichever node is paused if the master changed meanwhile.
                let n = if self.nodes[n].paused {
                    n
                } else {
                    match (0..NODES).find(|i| self.nodes[*i].paused) {
                        Some(i) => i,
                        None => return,
                    }
                };
                self.nodes[n].paused = false;
                let inbox = std::mem::take(&mut self.nodes[n].inbox);
                for (conn, request, cmd) in inbox {
                    let reply = self.execute(n, &cmd);
                    self.reply(Target::Node(n), conn, request, reply);
                }
            }
            Fault::Isolate(n) => {
                let n = pick(n, cur);
                self.nodes[n].isolated = true;
                for i in 0..NODES {
                    self.nodes[i].needs_sync |= self.nodes[i].role == NodeRole::Replica(n);
                }
            }
            Fault::Rejoin => {
                for i in 0..NODES {
                    if self.nodes[i].isolated {
                        self.nodes[i].isolated = false;
                        self.nodes[i].needs_sync = self.nodes[i].role != NodeRole::Master;
                    }
                }
            }
            Fault::CutClient(n) => self.nodes[n].client_cut = true,
            Fault::HealClient(n) => self.nodes[n].client_cut = false,
            Fault::KillSentinel(s) => {
                self.sentinels[s].alive = false;
                self.reset_connections(Target::Sentinel(s));
            }
            Fault::ReviveSentinel(s) => self.sentinels[s].alive = true,
            Fault::CutSentinel(s) => self.sentinels[s].client_cut = true,
            Fault::HealSentinel(s) => self.sentinels[s].client_cut = false,
            Fault::LagSpike(n, d) => self.nodes[n].lag_spike_until = self.now_ms + d,
        }
    }

    fn submit(&mut self, key: u8) {
        let version = {
            let v = self.versions.entry(key).or_insert(0);
            *v += 1;
            *v
        };
        let write = Write {
            script: ScriptId(0),
            keys: vec![vec![key]],
            args: vec![version.to_le_bytes().to_vec()],
        };
        self.stats.submitted += 1;
        let id = self
            .client
            .submit(write, self.instant(self.now_ms))
            .expect("the journal is large enough for the model's load");
        self.writes.insert(id, (key, version, self.now_ms));
        let read = Write {
            script: ScriptId(0),
            keys: vec![vec![key]],
            args: Vec::new(),
        };
        let read_id = self
            .client
            .submit_read(read, self.instant(self.now_ms))
            .expect("max_reads is large enough for the model's load");
        self.reads.insert(read_id, self.now_ms);
        if self.now_ms == PROBE_AT_MS {
            self.probe = Some(id);
        }
    }

    fn run(&mut self) -> Result<Stats, String> {
        let mut spins = 0u32;
        loop {
            self.drain_client();
            let next_ev = self.queue.peek().map(|Reverse(q)| q.at_ms);
            let timer_ms = self.client.poll_timeout().map(|t| {
                let d = t.saturating_duration_since(self.t0);
                // Round up to the model's millisecond clock.
                d.as_millis() as u64 + u64::from(d.subsec_nanos() % 1_000_000 != 0)
            });
            let take_timer = match (timer_ms, next_ev) {
                (Some(t), Some(e)) => t <= e,
                (Some(_), None) => true,
                _ => false,
            };
            if take_timer {
                let t = timer_ms.unwrap_or(self.now_ms).max(self.now_ms);
                if t > END_MS {
                    break;
                }
                spins = if t == self.now_ms { spins + 1 } else { 0 };
                if spins > 10_000 {
                    return Err(format!("the client's timer spins at {t} ms"));
                }
                self.now_ms = t;
                self.client.handle_timeout(self.instant(t));
                continue;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            if q.at_ms > END_MS {
                break;
            }
            self.now_ms = self.now_ms.max(q.at_ms);
            let now = self.instant(self.now_ms);
            if self.trace && !matches!(q.ev, Ev::Tick) {
                eprintln!("{:>6} {:?}", self.now_ms, q.ev);
            }
            match q.ev {
                Ev::ToClient(ev) => self.client.handle(ev, now),
                Ev::ToNode {
                    node,
                    conn,
                    request,
                    cmd,
                } => self.node_request(node, conn, request, cmd),
                Ev::ToSentinel {
                    s,
                    conn,
                    request,
                    cmd,
                } => self.sentinel_request(s, conn, request, cmd),
                Ev::Replicate {
                    from,
                    to,
                    key,
                    version,
                } => {
                    let n = &self.nodes[to];
                    if n.role == NodeRole::Replica(from) && self.link_up(from, to) && !n.paused {
                        let slot = self.nodes[to].data.entry(key).or_insert(0);
                        *slot = (*slot).max(version);
                    } else {
                        self.nodes[to].needs_sync = true;
                    }
                }
                Ev::Tick => self.tick(),
                Ev::Elect => self.elect(),
                Ev::Demote(n) => self.demote(n),
                Ev::UpdateBelief { s, master } => self.update_belief(s, master),
                Ev::Submit { key } => self.submit(key),
                Ev::Fault(f) => {
                    if self.now_ms < FAULTS_END_MS {
                        self.fault(f);
                    } else {
                        self.heal(f);
                    }
                }
            }
        }
        self.check()
    }

    /// After the fault period, faults only undo themselves.
    fn heal(&mut self, fault: Fault) {
        match fault {
            Fault::Restart(_)
            | Fault::Resume(_)
            | Fault::Rejoin
            | Fault::HealClient(_)
            | Fault::ReviveSentinel(_)
            | Fault::HealSentinel(_) => self.fault(fault),
            _ => {}
        }
    }

    fn check(&mut self) -> Result<Stats, String> {
        let health = self.client.health();
        let hold_ms = 20_000;
        for (id, (key, version, submitted_ms)) in &self.writes {
            let Some((acked, done_ms)) = self.outcomes.get(id) else {
                return Err(format!(
                    "{id:?} (key {key} v{version}) never completed: {health:?}"
                ));
            };
            if done_ms - submitted_ms > hold_ms {
                return Err(format!(
                    "{id:?} completed after {} ms, more than the hold",
                    done_ms - submitted_ms
                ));
            }
            if *acked {
                let stored = self.nodes[self.current].data.get(key).copied().unwrap_or(0);
                if stored < *version {
                    return Err(format!(
                        "acknowledged write lost: {id:?} key {key} v{version} acked at {done_ms} ms, \
                         final master n{} has v{stored}; {health:?}",
                        self.current
                    ));
                }
                self.stats.acked += 1;
            } else {
                self.stats.failed += 1;
            }
        }
        let timeout_ms = 1_000;
        for (id, submitted_ms) in &self.reads {
            let Some((served, done_ms)) = self.read_outcomes.get(id) else {
                return Err(format!("{id:?} never completed: {health:?}"));
            };
            if done_ms - submitted_ms > timeout_ms + 1 {
                return Err(format!(
                    "{id:?} completed after {} ms, more than the request timeout",
                    done_ms - submitted_ms
                ));
            }
            if *served {
                self.stats.reads_served += 1;
            } else {
                self.stats.reads_failed += 1;
            }
        }
        self.stats.replica_reads = health.counters.replica_reads;
        match self.probe.and_then(|id| self.outcomes.get(&id)) {
            Some((true, _)) => {}
            other => {
                return Err(format!(
                    "no recovery after the faults: probe {other:?}; {health:?}"
                ));
            }
        }
        self.stats.replayed = health.counters.replayed;
        self.stats.late_replies = health.counters.late_replies_ignored;
        self.stats.masters_lost = health.counters.masters_lost;
        Ok(self.stats)
    }
}

fn run_seed(seed: u64, config: impl Fn(u64) -> HaConfig) -> Result<Stats, String> {
    let mut sim = Sim::new(seed, config(seed));
    sim.run()
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("HA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("HA_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    (0..n).collect()
}

#[test]
fn no_acknowledged_write_is_lost_and_nothing_hangs() {
    let mut total = Stats::default();
    let seeds = seeds();
    for &seed in &seeds {
        match run_seed(seed, client_config) {
            Ok(s) => {
                total.submitted += s.submitted;
                total.acked += s.acked;
                total.failed += s.failed;
                total.replayed += s.replayed;
                total.late_replies += s.late_replies;
                total.masters_lost += s.masters_lost;
                total.elections += s.elections;
                total.stale_writes += s.stale_writes;
                total.reads_served += s.reads_served;
                total.reads_failed += s.reads_failed;
                total.replica_reads += s.replica_reads;
            }
            Err(e) => panic!("seed {seed}: {e}\nreplay with HA_SIM_SEED={seed}"),
        }
    }
    eprintln!("{} seeds: {total:?}", seeds.len());
    if seeds.len() >= 500 {
        // The schedules reach the situations the invariants are about.
        assert!(total.elections > 100, "{total:?}");
        assert!(total.replayed > 0, "{total:?}");
        assert!(total.late_replies > 0, "{total:?}");
        assert!(
            total.failed > 0,
            "some writes outlive the hold (no quorum): {total:?}"
        );
        assert!(
            total.stale_writes > 0,
            "stale masters accept writes in the model: {total:?}"
        );
        assert!(
            total.replica_reads > 0,
            "replicas serve reads while no master is known: {total:?}"
        );
    }
}

/// The simulation can fail: without the replay window, writes a stale or dead master
/// acknowledged are lost on some schedule.
#[test]
fn the_simulation_finds_lost_writes_without_the_replay_window() {
    let no_replay = |seed| {
        let mut c = client_config(seed);
        c.replay_window = Duration::ZERO;
        c
    };
    let found = (0..1500).find(|seed| {
        run_seed(*seed, no_replay).is_err_and(|e| e.starts_with("acknowledged write lost"))
    });
    assert!(
        found.is_some(),
        "no seed loses a write even without replays"
    );
}
