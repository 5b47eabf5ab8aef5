//! The rules of the HA client, one by one, against a scripted fake cluster and a fake clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const S: [&str; 3] = ["s0:26379", "s1:26379", "s2:26379"];
const A: &str = "a:6379";
const B: &str = "b:6379";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sentinel_config() -> HaConfig {
    let mut c = HaConfig::sentinel(S.iter().map(|s| Arc::from(*s)).collect(), "mymaster");
    c.scripts = vec![Script {
        sha1: "sha".into(),
        source: "return 1".into(),
    }];
    c
}

fn write(n: u8) -> Write {
    Write {
        script: ScriptId(0),
        keys: vec![vec![n]],
        args: vec![],
    }
}

/// A scripted cluster: what each sentinel names, each server's role, who is down or stalled.
struct World {
    names: HashMap<&'static str, Option<&'static str>>,
    roles: HashMap<&'static str, &'static str>,
    /// Connections to these fail.
    down: HashSet<&'static str>,
    /// These accept connections and never answer.
    stalled: HashSet<&'static str>,
    /// An error reply every write gets on this server.
    write_error: HashMap<&'static str, &'static str>,
    password: Option<&'static str>,
    sentinel_password: Option<&'static str>,
    wait_acks: i64,
    info: HashMap<&'static str, String>,
    /// What `SENTINEL replicas` lists.
    replicas: Vec<&'static str>,
    /// Servers whose script cache is empty: `-NOSCRIPT` until a `SCRIPT LOAD`.
    flushed: HashSet<&'static str>,
}

struct H {
    c: HaClient,
    now: Instant,
    w: World,
    conns: HashMap<ConnId, (Arc<str>, ConnKind)>,
    outstanding: HashMap<ConnId, VecDeque<(RequestId, RedisCommand)>>,
    /// Requests on connections the client closed, for late-reply tests.
    orphans: Vec<(ConnId, RequestId, RedisCommand)>,
    /// (server, key) of every write a server executed.
    executed: Vec<(Arc<str>, u8)>,
    auths: Vec<(Arc<str>, Option<String>, String)>,
    done: Vec<Completion>,
    /// (server, key) of every read a server answered.
    reads_on: Vec<(Arc<str>, u8)>,
    /// Connections whose `SUBSCRIBE` was answered and that are still open.
    subscribed: HashSet<ConnId>,
    changes: Vec<Change>,
}

impl H {
    fn new(config: HaConfig) -> H {
        let now = Instant::now();
        let w = World {
            names: S.iter().map(|s| (*s, Some(A))).collect(),
            roles: HashMap::from([(A, "master"), (B, "slave")]),
            down: HashSet::new(),
            stalled: HashSet::new(),
            write_error: HashMap::new(),
            password: None,
            sentinel_password: None,
            wait_acks: 0,
            info: HashMap::new(),
            replicas: vec![B],
            flushed: HashSet::new(),
        };
        H {
            c: HaClient::new(config, now).unwrap(),
            now,
            w,
            conns: HashMap::new(),
            outstanding: HashMap::new(),
            orphans: Vec::new(),
            executed: Vec::new(),
            auths: Vec::new(),
            done: Vec::new(),
            reads_on: Vec::new(),
            subscribed: HashSet::new(),
            changes: Vec::new(),
        }
    }

    fn static_addr(addr: &str) -> &'static str {
        S.iter()
            .chain([A, B].iter())
            .chain(["r1:1", "r2:1", "seed:1"].iter())
            .find(|s| **s == addr)
            .copied()
            .unwrap_or("unknown")
    }

    fn answer(&mut self, addr: &str, cmd: &RedisCommand) -> Option<Reply> {
        let a = H::static_addr(addr);
        if self.w.stalled.contains(a) {
            return None;
        }
        let role = self.w.roles.get(a).copied().unwrap_or("master");
        Some(match cmd {
            RedisCommand::Auth { username, password } => {
                self.auths
                    .push((addr.into(), username.clone(), password.clone()));
                let expected = if S.contains(&a) {
                    self.w.sentinel_password
                } else {
                    self.w.password
                };
                if expected == Some(password.as_str()) {
                    Reply::Status("OK".into())
                } else {
                    Reply::Error("WRONGPASS invalid username-password pair".into())
                }
            }
            RedisCommand::SentinelGetMasterAddrByName(_) => match self.w.names.get(a).copied() {
                Some(Some(m)) => {
                    let (h, p) = m.split_once(':')?;
                    Reply::Array(vec![Reply::Bulk(h.into()), Reply::Bulk(p.into())])
                }
                _ => Reply::Nil,
            },
            RedisCommand::SentinelReplicas(_) => Reply::Array(
                self.w
                    .replicas
                    .iter()
                    .map(|r| {
                        let (h, p) = r.split_once(':').unwrap_or((r, ""));
                        let fields = ["ip", h, "port", p, "flags", "slave"];
                        Reply::Array(fields.iter().map(|f| Reply::Bulk((*f).into())).collect())
                    })
                    .collect(),
            ),
            RedisCommand::Subscribe(_) => Reply::Array(vec![]),
            RedisCommand::Role => Reply::Array(vec![Reply::Bulk(role.into()), Reply::Int(0)]),
            RedisCommand::InfoReplication => {
                Reply::Bulk(self.w.info.get(a).cloned().unwrap_or_default().into_bytes())
            }
            RedisCommand::ScriptLoad(_) => {
                self.w.flushed.remove(a);
                Reply::Bulk(b"sha".to_vec())
            }
            RedisCommand::EvalShaRo { read, .. } => {
                if self.w.flushed.contains(a) {
                    Reply::Error("NOSCRIPT No matching script.".into())
                } else {
                    self.reads_on.push((addr.into(), read.keys[0][0]));
                    Reply::Int(i64::from(read.keys[0][0]))
                }
            }
            RedisCommand::EvalSha { write, .. } => {
                if self.w.flushed.contains(a) {
                    Reply::Error("NOSCRIPT No matching script.".into())
                } else if let Some(e) = self.w.write_error.get(a) {
                    Reply::Error((*e).into())
                } else if role != "master" {
                    Reply::Error("READONLY You can't write against a read only replica.".into())
                } else {
                    self.executed.push((addr.into(), write.keys[0][0]));
                    Reply::Int(1)
                }
            }
            RedisCommand::Wait { .. } => Reply::Int(self.w.wait_acks),
        })
    }

    /// Runs commands and answers until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(cmd) = self.c.poll_command() {
                moved = true;
                match cmd {
                    Command::Connect { conn, addr, kind } => {
                        let down = self.w.down.contains(H::static_addr(&addr));
                        self.conns.insert(conn, (addr, kind));
                        let ev = if down {
                            Event::ConnectFailed { conn }
                        } else {
                            Event::Connected { conn }
                        };
                        self.c.handle(ev, self.now);
                    }
                    Command::Send { conn, request, cmd } => {
                        self.outstanding
                            .entry(conn)
                            .or_default()
                            .push_back((request, cmd));
                    }
                    Command::Close { conn } => {
                        self.subscribed.remove(&conn);
                        for (r, cmd) in self.outstanding.remove(&conn).unwrap_or_default() {
                            self.orphans.push((conn, r, cmd));
                        }
                    }
                }
            }
            let mut ids: Vec<ConnId> = self.outstanding.keys().copied().collect();
            ids.sort();
            for conn in ids {
                let addr = self.conns[&conn].0.clone();
                let Some((request, cmd)) =
                    self.outstanding.get(&conn).and_then(|q| q.front().cloned())
                else {
                    continue;
                };
                let Some(reply) = self.answer(&addr, &cmd) else {
                    continue;
                };
                if let Some(q) = self.outstanding.get_mut(&conn) {
                    q.pop_front();
                }
                if matches!(cmd, RedisCommand::Subscribe(_)) {
                    self.subscribed.insert(conn);
                }
                moved = true;
                self.c.handle(
                    Event::Reply {
                        conn,
                        request,
                        reply,
                    },
                    self.now,
                );
            }
            while let Some(d) = self.c.poll_completion() {
                self.done.push(d);
            }
            while let Some(c) = self.c.poll_change() {
                self.changes.push(c);
            }
            if !moved {
                return;
            }
        }
        panic!("the client never settles");
    }

    /// Advances the clock by `d`, firing every timer on time.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            self.settle();
            match self.c.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.c.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    self.settle();
                    return;
                }
            }
        }
        panic!("timers fire in a busy loop");
    }

    fn submit(&mut self, n: u8) -> WriteId {
        let id = self.c.submit(write(n), self.now).unwrap();
        self.settle();
        id
    }

    /// `addr` dies: connections to it fail, and so does every connection already open.
    fn kill(&mut self, addr: &'static str) {
        self.w.down.insert(addr);
        let mut open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(c, (a, _))| &**a == addr && !self.closed(**c))
            .map(|(c, _)| *c)
            .collect();
        open.sort();
        for conn in open {
            self.outstanding.remove(&conn);
            self.subscribed.remove(&conn);
            self.c.handle(Event::Disconnected { conn }, self.now);
        }
        self.settle();
    }

    fn closed(&self, conn: ConnId) -> bool {
        self.orphans.iter().any(|(c, _, _)| *c == conn) || self.c.conns.get(conn).is_none()
    }

    /// The open data subscriptions, as (connection, server).
    fn data_subs(&self) -> Vec<(ConnId, Arc<str>)> {
        let mut subs: Vec<(ConnId, Arc<str>)> = self
            .subscribed
            .iter()
            .filter(|c| self.conns[*c].1 == ConnKind::ServerPubSub)
            .map(|c| (*c, self.conns[c].0.clone()))
            .collect();
        subs.sort();
        subs
    }

    /// The master publishes `payload` on the changes channel.
    fn publish(&mut self, payload: &str) {
        for (conn, _) in self.data_subs() {
            let ev = Event::Message {
                conn,
                channel: crate::redis_data::CHANGES_CHANNEL.into(),
                payload: payload.into(),
            };
            self.c.handle(ev, self.now);
        }
        self.settle();
    }

    fn read(&mut self, n: u8) -> ReadId {
        let id = self.c.submit_read(write(n), self.now).unwrap();
        self.settle();
        id
    }

    fn read_done(&self, id: ReadId) -> Option<&Reply> {
        self.done.iter().find_map(|d| match d {
            Completion::ReadDone { read, reply } if *read == id => Some(reply),
            _ => None,
        })
    }

    fn acked(&self, id: WriteId) -> bool {
        self.done
            .iter()
            .any(|d| matches!(d, Completion::Acked { write, .. } if *write == id))
    }

    fn master(&self) -> Option<Arc<str>> {
        self.c.health().master
    }

    fn executed_on(&self, addr: &str, key: u8) -> usize {
        self.executed
            .iter()
            .filter(|(a, k)| &**a == addr && *k == key)
            .count()
    }

    fn sent_count(&self, pred: impl Fn(&RedisCommand) -> bool) -> usize {
        self.outstanding
            .values()
            .flatten()
            .filter(|(_, c)| pred(c))
            .count()
    }
}

#[test]
fn config_is_validated() {
    let mut c = sentinel_config();
    assert_eq!(c.discovery, {
        let Discovery::Sentinel { quorum, .. } = &c.discovery else {
            panic!()
        };
        assert_eq!(*quorum, 2, "majority by default");
        c.discovery.clone()
    });
    if let Discovery::Sentinel { quorum, .. } = &mut c.discovery {
        *quorum = 4;
    }
    assert_eq!(
        HaClient::new(c, Instant::now()).err(),
        Some(HaConfigError::BadQuorum {
            quorum: 4,
            sentinels: 3
        })
    );
    let mut c = sentinel_config();
    c.journal_capacity = 0;
    assert_eq!(
        HaClient::new(c, Instant::now()).err(),
        Some(HaConfigError::ZeroCapacity)
    );
    let c = HaConfig::sentinel(vec![], "m");
    assert_eq!(
        HaClient::new(c, Instant::now()).err(),
        Some(HaConfigError::NoSentinel)
    );
}

#[test]
fn quorum_then_role_then_pipelined_writes_acked_in_order() {
    let mut h = H::new(sentinel_config());
    h.w.stalled.insert(A);
    h.settle();
    assert_eq!(
        h.c.health().state,
        HaState::Verifying,
        "A named by a quorum, ROLE pending"
    );
    let ids: Vec<WriteId> = (0..3).map(|n| h.submit(n)).collect();
    assert_eq!(
        h.sent_count(|c| matches!(c, RedisCommand::EvalSha { .. })),
        0,
        "no write before ROLE"
    );
    h.w.stalled.clear();
    h.settle();
    assert_eq!(h.master().as_deref(), Some(A));
    let order: Vec<WriteId> = h
        .done
        .iter()
        .map(|d| match d {
            Completion::Acked { write, reply } => {
                assert_eq!(*reply, Reply::Int(1));
                *write
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, ids);
    assert_eq!(h.c.health().counters.acked, 3);
}

#[test]
fn writes_are_pipelined() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.stalled.insert(A);
    for n in 0..5 {
        h.submit(n);
    }
    assert_eq!(
        h.sent_count(|c| matches!(c, RedisCommand::EvalSha { .. })),
        5
    );
    let mut c = sentinel_config();
    c.max_pipeline = 2;
    let mut h = H::new(c);
    h.settle();
    h.w.stalled.insert(A);
    for n in 0..5 {
        h.submit(n);
    }
    assert_eq!(
        h.sent_count(|c| matches!(c, RedisCommand::EvalSha { .. })),
        2,
        "bounded pipeline"
    );
    h.w.stalled.clear();
    h.settle();
    assert_eq!(h.done.len(), 5);
}

#[test]
fn no_quorum_means_no_master_and_a_clear_error() {
    let mut h = H::new(sentinel_config());
    h.w.names.insert(S[0], Some(A));
    h.w.names.insert(S[1], Some(B));
    h.w.names.insert(S[2], None);
    h.w.roles.insert(B, "master");
    h.advance(ms(500));
    let health = h.c.health();
    assert_eq!(health.state, HaState::Resolving);
    assert_eq!(
        health.last_error,
        Some(HaError::NoQuorum {
            answered: 2,
            agreeing: 1,
            needed: 2
        })
    );
    assert!(
        health.counters.no_quorum_rounds >= 2,
        "asked again every resolve_retry"
    );
    // Two sentinels dead: the one left is not a quorum, whatever it says.
    let mut h = H::new(sentinel_config());
    h.w.down.extend([S[1], S[2]]);
    h.advance(ms(500));
    assert_eq!(h.master(), None);
    h.w.down.clear();
    h.advance(ms(1100));
    assert_eq!(
        h.master().as_deref(),
        Some(A),
        "sentinels back: found again"
    );
}

#[test]
fn role_alone_is_not_enough_and_replica_is_not_used() {
    let mut h = H::new(sentinel_config());
    h.w.roles.insert(A, "slave");
    let id = h.submit(1);
    h.advance(ms(300));
    assert_eq!(h.master(), None);
    assert_eq!(
        h.c.health().last_error,
        Some(HaError::NotMaster { addr: A.into() })
    );
    assert!(h.executed.is_empty());
    h.w.roles.insert(A, "master");
    h.advance(ms(2000));
    assert!(
        h.acked(id),
        "the held write goes through once A is a master"
    );
}

#[test]
fn timeout_gives_the_connection_up_replays_elsewhere_and_ignores_late_replies() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.stalled.insert(A);
    let id = h.submit(7);
    h.advance(ms(1000));
    assert!(h.c.health().counters.request_timeouts >= 1);
    assert_ne!(h.c.health().state, HaState::Ready);
    // The sentinels elect B; the stale A wakes up and answers what sat in its socket.
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.w.roles.insert(A, "master");
    h.w.stalled.clear();
    let orphans = std::mem::take(&mut h.orphans);
    for (conn, request, cmd) in orphans {
        let reply = h.answer(A, &cmd).unwrap();
        h.c.handle(
            Event::Reply {
                conn,
                request,
                reply,
            },
            h.now,
        );
    }
    assert!(h.c.health().counters.late_replies_ignored >= 1);
    assert!(
        !h.acked(id),
        "a reply from a connection given up acknowledges nothing"
    );
    h.advance(ms(1000));
    assert_eq!(h.master().as_deref(), Some(B));
    assert!(h.acked(id));
    assert_eq!(h.executed_on(B, 7), 1, "replayed on the new master");
}

#[test]
fn topology_errors_send_the_client_back_to_the_sentinels() {
    for error in [
        "READONLY replica",
        "LOADING loading",
        "NOREPLICAS not enough",
    ] {
        let mut h = H::new(sentinel_config());
        h.settle();
        h.w.write_error.insert(A, error);
        let id = h.submit(3);
        assert_eq!(h.c.health().counters.masters_lost, 1, "{error}");
        assert!(!h.acked(id), "{error}");
        h.w.write_error.clear();
        h.advance(ms(1000));
        assert!(
            h.acked(id),
            "{error}: retried once the master is verified again"
        );
        assert!(h.c.health().counters.masters_verified >= 2);
    }
    // A script error is the script's answer, not a failover.
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.write_error.insert(A, "ERR user script failed");
    let id = h.submit(3);
    assert!(h.done.contains(&Completion::Acked {
        write: id,
        reply: Reply::Error("ERR user script failed".into())
    }));
    assert_eq!(h.c.health().counters.masters_lost, 0);
}

#[test]
fn writes_are_held_then_fail_with_retry_after() {
    let mut h = H::new(sentinel_config());
    h.w.down.insert(A);
    let id = h.submit(1);
    h.advance(ms(19_900));
    assert!(h.done.is_empty(), "held for failover_hold");
    assert_eq!(h.c.health().pending_writes, 1);
    h.advance(ms(200));
    assert_eq!(
        h.done,
        vec![Completion::Failed {
            write: id,
            retry_after_s: 5
        }]
    );
    assert_eq!(h.c.health().pending_writes, 0);
}

#[test]
fn held_writes_are_replayed_in_order_on_the_new_master() {
    let mut h = H::new(sentinel_config());
    h.w.down.insert(A);
    let ids: Vec<WriteId> = (0..4).map(|n| h.submit(n)).collect();
    h.advance(ms(3000));
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.advance(ms(1000));
    let keys: Vec<u8> = h.executed.iter().map(|(_, k)| *k).collect();
    assert_eq!(keys, [0, 1, 2, 3]);
    assert!(ids.iter().all(|id| h.acked(*id)));
}

#[test]
fn acked_writes_within_the_replay_window_are_replayed_on_the_new_master() {
    let mut h = H::new(sentinel_config());
    h.settle();
    let old = h.submit(1);
    h.advance(ms(6000));
    let recent = h.submit(2);
    h.advance(ms(1000));
    assert!(h.acked(old) && h.acked(recent));
    // A dies; B is elected.
    h.w.down.insert(A);
    h.w.stalled.insert(A);
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.advance(ms(1500));
    assert_eq!(h.master().as_deref(), Some(B));
    assert_eq!(
        h.executed_on(B, 2),
        1,
        "acked 2.5 s before the loss: replayed"
    );
    assert_eq!(
        h.executed_on(B, 1),
        0,
        "acked 8 s before: outside the window"
    );
    assert_eq!(h.done.len(), 2, "a replay completes nothing");
    assert_eq!(h.c.health().counters.replayed, 1);
    assert_eq!(h.c.health().replays_pending, 0);
}

#[test]
fn a_full_journal_rejects_at_once() {
    let mut c = sentinel_config();
    c.journal_capacity = 2;
    let mut h = H::new(c);
    h.w.down.insert(A);
    h.submit(0);
    h.submit(1);
    assert_eq!(h.c.submit(write(2), h.now), Err(Rejected::JournalFull));
    assert_eq!(
        h.c.submit(
            Write {
                script: ScriptId(9),
                ..write(2)
            },
            h.now
        ),
        Err(Rejected::UnknownScript(ScriptId(9)))
    );
    assert_eq!(h.c.health().counters.rejected, 1);
}

#[test]
fn sentinels_are_rechecked_while_writing_and_a_stale_master_is_dropped() {
    let mut h = H::new(sentinel_config());
    h.settle();
    let rounds =
        |h: &H| h.sent_count(|c| matches!(c, RedisCommand::SentinelGetMasterAddrByName(_)));
    assert_eq!(rounds(&h), 0);
    // A paused-and-woken master still says "master"; the sentinels elected B meanwhile.
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.advance(ms(999));
    assert_eq!(h.master().as_deref(), Some(A));
    h.advance(ms(2));
    assert_eq!(
        h.master().as_deref(),
        Some(B),
        "dropped within check_interval"
    );
    assert_eq!(
        h.c.health().counters.masters_lost,
        1,
        "{:?}",
        h.c.health().last_error
    );
    let id = h.submit(4);
    assert!(h.acked(id));
    assert_eq!(h.executed_on(A, 4), 0);
}

#[test]
fn switch_master_is_a_hint_to_ask_not_an_answer() {
    let mut h = H::new(sentinel_config());
    h.settle();
    let (pubsub, _) = h
        .conns
        .iter()
        .find(|(_, (_, k))| *k == ConnKind::SentinelPubSub)
        .map(|(c, v)| (*c, v.clone()))
        .unwrap();
    let msg = |payload: &str| Event::Message {
        conn: pubsub,
        channel: "+switch-master".into(),
        payload: payload.into(),
    };
    // The message names B, but the sentinels (asked at once) still say A: stay on A.
    h.c.handle(msg("mymaster 1.1.1.1 6379 b 6379"), h.now);
    h.settle();
    assert_eq!(h.c.health().counters.switch_master_hints, 1);
    assert_eq!(h.master().as_deref(), Some(A));
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.c.handle(msg("mymaster a 6379 b 6379"), h.now);
    h.settle();
    assert_eq!(
        h.master().as_deref(),
        Some(B),
        "switched without waiting for check_interval"
    );
    h.c.handle(msg("othermaster a 6379 b 6379"), h.now);
    assert_eq!(h.c.health().counters.switch_master_hints, 2);
}

#[test]
fn a_master_no_quorum_confirms_is_given_up_after_the_lease() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.stalled.extend([S[0], S[1]]);
    h.advance(ms(2900));
    assert_eq!(h.master().as_deref(), Some(A));
    h.advance(ms(200));
    assert_eq!(h.master(), None);
    let health = h.c.health();
    assert_eq!(health.counters.masters_lost, 1);
    assert!(
        matches!(
            health.last_error,
            Some(HaError::NoQuorum { answered: 1, .. })
        ),
        "{health:?}"
    );
    let id = h.submit(1);
    assert!(!h.acked(id), "held while the master is unconfirmed");
    h.w.stalled.clear();
    h.advance(ms(2000));
    assert!(h.acked(id));
}

#[test]
fn wait_gates_the_acknowledgement() {
    let mut c = sentinel_config();
    c.wait_replicas = 1;
    let mut h = H::new(c);
    h.settle();
    h.w.wait_acks = 1;
    let id = h.submit(1);
    assert!(h.acked(id));
    h.w.wait_acks = 0;
    let id = h.submit(2);
    assert!(!h.acked(id), "WAIT counted no replica");
    assert!(matches!(
        h.c.health().last_error,
        Some(HaError::WaitShort {
            acked: 0,
            needed: 1,
            ..
        })
    ));
    h.w.wait_acks = 1;
    h.advance(ms(1000));
    assert!(h.acked(id));
    assert_eq!(h.executed_on(A, 2), 2, "written again after the short WAIT");
}

#[test]
fn auth_on_every_connection_and_a_wrong_password_is_an_error_state() {
    let mut c = sentinel_config();
    c.credentials = Credentials {
        username: Some("sipshard".into()),
        password: Some("secret".into()),
    };
    if let Discovery::Sentinel { credentials, .. } = &mut c.discovery {
        credentials.password = Some("sentinel-secret".into());
    }
    let mut h = H::new(c.clone());
    h.w.password = Some("secret");
    h.w.sentinel_password = Some("sentinel-secret");
    let id = h.submit(1);
    assert!(h.acked(id));
    let to_a = h
        .auths
        .iter()
        .filter(|(a, _, _)| &**a == A)
        .collect::<Vec<_>>();
    assert_eq!(
        to_a.len(),
        2,
        "the master's connection and its data subscriber"
    );
    assert!(to_a.iter().all(|a| a.1.as_deref() == Some("sipshard")));
    let to_sentinels = h
        .auths
        .iter()
        .filter(|(a, _, p)| S.contains(&&**a) && p == "sentinel-secret");
    assert_eq!(to_sentinels.count(), 4, "3 sentinels and the subscriber");

    let mut h = H::new(c);
    h.w.password = Some("other");
    h.w.sentinel_password = Some("sentinel-secret");
    let id = h.submit(1);
    h.advance(ms(3000));
    assert!(!h.acked(id));
    let health = h.c.health();
    assert!(
        matches!(health.last_error, Some(HaError::AuthFailed { .. })),
        "{health:?}"
    );
    let failures = health.counters.auth_failures;
    assert!(
        (3..=10).contains(&failures),
        "retried with back-off, not in a storm: {failures}"
    );
    h.w.password = Some("secret");
    h.advance(ms(1500));
    assert!(h.acked(id), "recovers once the password is right");
}

#[test]
fn sentinel_reconnects_back_off() {
    let mut h = H::new(sentinel_config());
    h.w.down.insert(S[0]);
    h.advance(ms(10_000));
    let attempts = h
        .conns
        .values()
        .filter(|(a, k)| &**a == S[0] && *k == ConnKind::Sentinel)
        .count();
    // 50 ms doubling to 1 s with jitter in the upper half: about 14 in 10 s, not 10 s / 50 ms.
    assert!((8..=25).contains(&attempts), "{attempts}");
    assert_eq!(h.master().as_deref(), Some(A), "two sentinels are a quorum");
}

#[test]
fn out_of_order_reply_closes_the_connection() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.stalled.insert(A);
    h.submit(1);
    h.submit(2);
    let conn = *h.outstanding.iter().find(|(_, q)| q.len() == 2).unwrap().0;
    let second = h.outstanding[&conn][1].0;
    h.c.handle(
        Event::Reply {
            conn,
            request: second,
            reply: Reply::Int(1),
        },
        h.now,
    );
    assert!(matches!(
        h.c.health().last_error,
        Some(HaError::OutOfOrderReply { .. })
    ));
    assert!(h.done.is_empty());
}

fn direct_config() -> HaConfig {
    let mut c = HaConfig::direct("seed:1");
    c.scripts = sentinel_config().scripts;
    c
}

#[test]
fn direct_mode_follows_info_replication_and_fails_over_to_a_known_replica() {
    let mut h = H::new(direct_config());
    h.w.info.insert(
        "seed:1",
        "role:slave\r\nmaster_host:r1\r\nmaster_port:1\r\n".into(),
    );
    h.w.info.insert(
        "r1:1",
        "role:master\r\nslave0:ip=seed,port=1,state=online\r\nslave1:ip=r2,port=1,state=online\r\n"
            .into(),
    );
    h.w.info.insert(
        "r2:1",
        "role:slave\r\nmaster_host:r1\r\nmaster_port:1\r\n".into(),
    );
    let id = h.submit(1);
    assert_eq!(h.master().as_deref(), Some("r1:1"));
    assert!(h.acked(id));
    h.advance(ms(3500));
    assert!(
        h.c.health().counters.masters_lost == 0,
        "INFO every check_interval keeps the lease"
    );
    // r1 dies; r2 is promoted by hand.
    h.w.down.insert("r1:1");
    h.w.stalled.insert("r1:1");
    h.w.info.insert("r2:1", "role:master\r\n".into());
    let id = h.submit(2);
    h.advance(ms(3000));
    assert_eq!(h.master().as_deref(), Some("r2:1"));
    assert!(h.acked(id));
    assert_eq!(h.executed_on("r2:1", 1), 1, "the recent ack was replayed");
}

#[test]
fn the_data_subscription_follows_the_master_and_resyncs_after_every_gap() {
    let mut h = H::new(sentinel_config());
    h.settle();
    assert_eq!(h.master().as_deref(), Some(A));
    assert!(h.c.health().subscribed);
    let subs = h.data_subs();
    assert_eq!(subs.len(), 1);
    assert_eq!(&*subs[0].1, A, "subscribed on the master");
    assert_eq!(
        h.changes,
        [Change::Resync],
        "the first subscription follows a gap too"
    );
    h.publish("sip:alice@example.com");
    assert_eq!(
        h.changes[1..],
        [Change::Published("sip:alice@example.com".into())]
    );
    let (sub, _) = subs[0];
    let other = Event::Message {
        conn: sub,
        channel: "another".into(),
        payload: "x".into(),
    };
    h.c.handle(other, h.now);
    h.settle();
    assert_eq!(h.changes.len(), 2, "another channel is not a change");

    // The subscriber's connection breaks: the master stays, the subscription comes back, and
    // what was published meanwhile is covered by a resync.
    h.changes.clear();
    h.c.handle(Event::Disconnected { conn: sub }, h.now);
    h.settle();
    assert!(!h.c.health().subscribed);
    assert!(
        h.changes.is_empty(),
        "no resync before the subscription is back"
    );
    h.advance(ms(100));
    assert!(h.c.health().subscribed);
    assert_eq!(h.changes, [Change::Resync]);
    assert_eq!(h.c.health().counters.masters_lost, 0);
    let late = Event::Message {
        conn: sub,
        channel: crate::redis_data::CHANGES_CHANNEL.into(),
        payload: "sip:late@example.com".into(),
    };
    h.c.handle(late, h.now);
    h.settle();
    assert_eq!(
        h.changes,
        [Change::Resync],
        "a closed subscription is ignored"
    );

    // A fails over to B: the subscription moves to B, with a resync.
    h.changes.clear();
    h.kill(A);
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.advance(ms(1500));
    assert_eq!(h.master().as_deref(), Some(B));
    let subs = h.data_subs();
    assert_eq!(subs.len(), 1);
    assert_eq!(&*subs[0].1, B);
    assert_eq!(h.changes, [Change::Resync]);
    assert_eq!(h.c.health().counters.resyncs, 3);

    // No channel configured: no subscription.
    let mut config = sentinel_config();
    config.changes_channel = None;
    let mut h = H::new(config);
    h.settle();
    assert_eq!(h.master().as_deref(), Some(A));
    assert!(h.conns.values().all(|(_, k)| *k != ConnKind::ServerPubSub));
    assert!(h.changes.is_empty());
}

#[test]
fn changes_that_overflow_collapse_into_a_resync() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.changes.clear();
    let (sub, _) = h.data_subs()[0];
    // Without draining: the client's queue is bounded.
    for n in 0..=reads::MAX_CHANGES {
        let ev = Event::Message {
            conn: sub,
            channel: crate::redis_data::CHANGES_CHANNEL.into(),
            payload: format!("sip:u{n}@example.com"),
        };
        h.c.handle(ev, h.now);
    }
    assert_eq!(h.c.poll_change(), Some(Change::Resync));
    assert_eq!(h.c.poll_change(), None);
}

#[test]
fn reads_go_to_the_master_else_to_a_replica_and_are_never_journaled() {
    let mut h = H::new(sentinel_config());
    h.settle();
    let r = h.read(7);
    assert_eq!(h.read_done(r), Some(&Reply::Int(7)));
    assert_eq!(h.reads_on, [(Arc::from(A), 7)], "the master serves reads");
    assert_eq!(h.c.health().journal_len, 0, "a read is not journaled");
    assert_eq!(h.c.health().replicas, [Arc::from(B)], "SENTINEL replicas");

    // A dies and the sentinels have not elected anyone yet: a replica serves the read, while a
    // write waits for a master.
    h.kill(A);
    assert_ne!(h.c.health().state, HaState::Ready);
    let w = h.submit(1);
    let r = h.read(8);
    assert_eq!(h.read_done(r), Some(&Reply::Int(8)));
    assert_eq!(h.reads_on.last(), Some(&(Arc::from(B), 8)));
    assert_eq!(h.c.health().counters.replica_reads, 1);
    assert!(!h.acked(w));

    // B is elected: reads go to it as the master, and the replica connection is closed.
    for s in S {
        h.w.names.insert(s, Some(B));
    }
    h.w.roles.insert(B, "master");
    h.advance(ms(1500));
    assert_eq!(h.master().as_deref(), Some(B));
    assert!(h.acked(w));
    let r = h.read(9);
    assert_eq!(h.read_done(r), Some(&Reply::Int(9)));
    let servers: HashSet<ConnId> = h
        .conns
        .iter()
        .filter(|(c, (a, k))| &**a == B && *k == ConnKind::Server && !h.closed(**c))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(servers.len(), 1, "one connection to B: the master's");
}

#[test]
fn a_read_no_node_serves_fails_within_the_request_timeout() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.replicas = vec![];
    h.advance(ms(1000)); // the sentinels now list no replica
    h.kill(A);
    let w = h.submit(1);
    let r = h.read(1);
    h.advance(ms(999));
    assert!(h.done.is_empty());
    h.advance(ms(2));
    assert_eq!(
        h.done,
        [Completion::ReadFailed {
            read: r,
            retry_after_s: 5
        }]
    );
    assert!(!h.acked(w), "the write is still held");
    assert_eq!(h.c.health().pending_writes, 1);

    // A replica that is down: the read is tried on each known one in turn, then fails.
    let mut h = H::new(sentinel_config());
    h.w.replicas = vec!["r1:1", "r2:1"];
    h.advance(ms(1000));
    h.kill(A);
    h.w.down.insert("r1:1");
    let r = h.read(4);
    h.advance(ms(200));
    assert_eq!(h.read_done(r), Some(&Reply::Int(4)));
    assert_eq!(h.reads_on.last(), Some(&(Arc::from("r2:1"), 4)));

    // Bounded: past max_reads, refused at once.
    let mut config = sentinel_config();
    config.max_reads = 1;
    let mut h = H::new(config);
    h.w.down.insert(A);
    h.w.replicas = vec![];
    h.read(1);
    assert_eq!(
        h.c.submit_read(write(2), h.now),
        Err(Rejected::TooManyReads)
    );
}

#[test]
fn noscript_loads_the_scripts_again_and_resends_in_order() {
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.flushed.insert(A);
    let ids: Vec<WriteId> = (0..3)
        .map(|n| h.c.submit(write(n), h.now).unwrap())
        .collect();
    h.settle();
    assert!(ids.iter().all(|id| h.acked(*id)));
    let keys: Vec<u8> = h.executed.iter().map(|(_, k)| *k).collect();
    assert_eq!(keys, [0, 1, 2], "resent in order, each once");
    let counters = h.c.health().counters;
    assert_eq!(counters.script_reloads, 1);
    assert_eq!(counters.masters_lost, 0, "not a topology error");

    // A read (on a replica, whose cache never had the script) loads it and is resent once.
    h.kill(A);
    h.w.flushed.insert(B);
    let r = h.read(5);
    assert_eq!(h.read_done(r), Some(&Reply::Int(5)));

    // A master that keeps refusing is given up after MAX_SCRIPT_RELOADS.
    let mut h = H::new(sentinel_config());
    h.settle();
    h.w.write_error.insert(A, "NOSCRIPT No matching script.");
    h.submit(1);
    let counters = h.c.health().counters;
    assert_eq!(counters.script_reloads, u64::from(MAX_SCRIPT_RELOADS));
    assert_eq!(counters.masters_lost, 1);
}
