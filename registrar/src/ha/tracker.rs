//! Master discovery, the decisions without the connections: counting sentinel answers, reading
//! `ROLE` and `INFO replication`, and the candidate list of the no-sentinel mode.
//!
//! Why a quorum of sentinels and not the first answer, as the Redis Sentinel client guidelines
//! (<https://redis.io/docs/reference/sentinel-clients/>) allow: a sentinel cut off from its peers
//! keeps naming the old master, and a master that was paused wakes up answering `ROLE` with
//! `master` and accepting writes for about 10 s before Sentinel demotes it and it discards them.
//! Only what a quorum of sentinels says in one round names the master; `ROLE` then checks that
//! the node named has finished its promotion. The guidelines' other rules are kept: ask again on
//! any error, treat `+switch-master` as a hint to ask, never as the answer.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::Reply;

/// One sentinel's answer to `SENTINEL get-master-addr-by-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Vote {
    Master(Arc<str>),
    /// The sentinel does not know the name (nil), answered an error, or did not answer.
    None,
}

pub(super) fn parse_master_addr(reply: &Reply) -> Vote {
    let Reply::Array(items) = reply else {
        return Vote::None;
    };
    let [host, port] = items.as_slice() else {
        return Vote::None;
    };
    let (Some(host), Some(port)) = (host.text(), port.text()) else {
        return Vote::None;
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Vote::None;
    }
    Vote::Master(join_host_port(host, port))
}

fn join_host_port(host: &str, port: &str) -> Arc<str> {
    if host.contains(':') {
        format!("[{host}]:{port}").into()
    } else {
        format!("{host}:{port}").into()
    }
}

/// What a round of questions to the sentinels concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Answers are still expected and no address has a quorum yet.
    Open,
    Master(Arc<str>),
    /// Every question was answered (or abandoned) and no address reached the quorum.
    NoQuorum {
        answered: usize,
        best: usize,
    },
}

/// One round: every reachable sentinel is asked once; an address named by `quorum` of them wins
/// as soon as it has that many votes (with a majority quorum no other address can reach it).
#[derive(Debug)]
pub(super) struct Round {
    pub(super) id: u64,
    quorum: usize,
    outstanding: usize,
    answered: usize,
    votes: Vec<(Arc<str>, usize)>,
    decided: bool,
}

impl Round {
    pub(super) fn new(id: u64, quorum: usize, asked: usize) -> Round {
        Round {
            id,
            quorum,
            outstanding: asked,
            answered: 0,
            votes: Vec::new(),
            decided: false,
        }
    }

    /// Records one answer (or a question abandoned with its connection).
    pub(super) fn record(&mut self, vote: Vote) -> Verdict {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Vote::Master(addr) = vote {
            self.answered += 1;
            match self.votes.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, n)) => *n += 1,
                None => self.votes.push((addr, 1)),
            }
        }
        self.verdict()
    }

    /// The verdict so far; `Master` is returned once.
    pub(super) fn verdict(&mut self) -> Verdict {
        if self.decided {
            return Verdict::Open;
        }
        if let Some((addr, _)) = self.votes.iter().find(|(_, n)| *n >= self.quorum) {
            self.decided = true;
            return Verdict::Master(addr.clone());
        }
        if self.outstanding == 0 {
            self.decided = true;
            let best = self.votes.iter().map(|(_, n)| *n).max().unwrap_or(0);
            return Verdict::NoQuorum {
                answered: self.answered,
                best,
            };
        }
        Verdict::Open
    }
}

/// The role a node reports (`ROLE`'s first element, or `INFO replication`'s `role:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NodeRole {
    Master,
    Replica,
    Other,
}

pub(super) fn parse_role(reply: &Reply) -> Option<NodeRole> {
    let Reply::Array(items) = reply else {
        return None;
    };
    Some(role_from(items.first()?.text()?))
}

fn role_from(s: &str) -> NodeRole {
    match s {
        "master" => NodeRole::Master,
        "slave" | "replica" => NodeRole::Replica,
        _ => NodeRole::Other,
    }
}

/// What `INFO replication` says that discovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replication {
    pub(super) role: NodeRole,
    /// A replica's master (`master_host`, `master_port`).
    pub(super) master: Option<Arc<str>>,
    /// A master's replicas (`slaveN:ip=..,port=..`).
    pub(super) replicas: Vec<Arc<str>>,
}

pub(super) fn parse_info_replication(text: &str) -> Option<Replication> {
    let mut role = None;
    let (mut master_host, mut master_port) = (None, None);
    let mut replicas = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        match key {
            "role" => role = Some(role_from(value)),
            "master_host" => master_host = Some(value),
            "master_port" => master_port = Some(value),
            _ if key.starts_with("slave") && key[5..].bytes().all(|b| b.is_ascii_digit()) => {
                let field = |name: &str| {
                    value
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                };
                if let (Some(ip), Some(port)) = (field("ip"), field("port")) {
                    if port.parse::<u16>().is_ok() && replicas.len() < MAX_KNOWN {
                        replicas.push(join_host_port(ip, port));
                    }
                }
            }
            _ => {}
        }
    }
    let master = match (master_host, master_port) {
        (Some(h), Some(p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
            Some(join_host_port(h, p))
        }
        _ => None,
    };
    Some(Replication {
        role: role?,
        master,
        replicas,
    })
}

/// The replicas a `SENTINEL replicas <name>` reply lists, left out those the sentinel flags as
/// down or disconnected (an old master that is gone is listed with `s_down`). Each entry is a
/// flat list of field names and values (RESP2; a RESP3 map arrives flattened the same way).
/// `None` for a reply that is not such a list.
pub(super) fn parse_sentinel_replicas(reply: &Reply) -> Option<Vec<Arc<str>>> {
    let Reply::Array(entries) = reply else {
        return None;
    };
    let mut replicas = Vec::new();
    for entry in entries {
        let Reply::Array(fields) = entry else {
            return None;
        };
        let field = |name: &str| {
            fields
                .chunks_exact(2)
                .find(|kv| kv[0].text() == Some(name))
                .and_then(|kv| kv[1].text())
        };
        let (Some(ip), Some(port)) = (field("ip"), field("port")) else {
            continue;
        };
        let down = field("flags").is_some_and(|flags| {
            flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
        });
        if !down && !ip.is_empty() && port.parse::<u16>().is_ok() && replicas.len() < MAX_KNOWN {
            replicas.push(join_host_port(ip, port));
        }
    }
    Some(replicas)
}

/// Whether a `+switch-master` payload (`<name> <old-ip> <old-port> <new-ip> <new-port>`)
/// concerns `master_name`.
pub(super) fn switch_master_concerns(payload: &str, master_name: &str) -> bool {
    payload.split(' ').next() == Some(master_name)
}

/// How many node addresses the no-sentinel mode remembers.
pub(super) const MAX_KNOWN: usize = 16;

/// The nodes the no-sentinel mode tries in turn: the configured server, then what
/// `INFO replication` revealed (the master first: a replica's `master_host` is tried next).
#[derive(Debug)]
pub(super) struct Candidates {
    known: VecDeque<Arc<str>>,
    /// Tries since the last success, to tell when a whole cycle failed.
    tried: usize,
}

impl Candidates {
    pub(super) fn new(server: Arc<str>) -> Candidates {
        Candidates {
            known: VecDeque::from([server]),
            tried: 0,
        }
    }

    /// The next address to try (the list is never empty: it starts with the server).
    pub(super) fn next(&mut self) -> Arc<str> {
        if self.cycle_done() {
            self.tried = 0;
        }
        self.tried += 1;
        self.known.rotate_left(1);
        self.known.back().cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// Whether every known node was tried since the last success.
    pub(super) fn cycle_done(&self) -> bool {
        self.tried >= self.known.len()
    }

    /// Puts `addr` first in line (known or new), dropping the oldest entry if full.
    pub(super) fn prefer(&mut self, addr: Arc<str>) {
        self.known.retain(|a| *a != addr);
        self.known.push_front(addr);
        self.known.truncate(MAX_KNOWN);
    }

    /// Remembers `addr` at the end of the line if new.
    pub(super) fn learn(&mut self, addr: Arc<str>) {
        if !self.known.contains(&addr) && self.known.len() < MAX_KNOWN {
            self.known.push_back(addr);
        }
    }

    pub(super) fn succeeded(&mut self) {
        self.tried = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: &str) -> Reply {
        let (h, p) = a.split_once(':').unwrap();
        Reply::Array(vec![Reply::Bulk(h.into()), Reply::Bulk(p.into())])
    }

    #[test]
    fn master_addr_replies() {
        assert_eq!(
            parse_master_addr(&addr("10.0.0.1:6379")),
            Vote::Master("10.0.0.1:6379".into())
        );
        assert_eq!(
            parse_master_addr(&Reply::Array(vec![
                Reply::Bulk(b"::1".to_vec()),
                Reply::Bulk(b"6379".to_vec())
            ])),
            Vote::Master("[::1]:6379".into())
        );
        assert_eq!(parse_master_addr(&Reply::Nil), Vote::None);
        assert_eq!(
            parse_master_addr(&Reply::Error("IDONTKNOW".into())),
            Vote::None
        );
        assert_eq!(parse_master_addr(&addr("h:notaport")), Vote::None);
        assert_eq!(
            parse_master_addr(&Reply::Array(vec![Reply::Bulk(b"h".to_vec())])),
            Vote::None
        );
    }

    #[test]
    fn quorum_wins_early_and_disagreement_does_not() {
        let a = || Vote::Master("a:1".into());
        let b = || Vote::Master("b:1".into());
        let mut r = Round::new(1, 2, 3);
        assert_eq!(r.record(a()), Verdict::Open);
        assert_eq!(r.record(a()), Verdict::Master("a:1".into()));
        assert_eq!(r.record(b()), Verdict::Open, "decided once");

        let mut r = Round::new(2, 2, 3);
        r.record(a());
        r.record(b());
        assert_eq!(
            r.record(Vote::None),
            Verdict::NoQuorum {
                answered: 2,
                best: 1
            }
        );

        // One reachable sentinel is not a quorum of three.
        let mut r = Round::new(3, 2, 1);
        assert_eq!(
            r.record(a()),
            Verdict::NoQuorum {
                answered: 1,
                best: 1
            }
        );
        // Nobody asked: concluded at once.
        assert_eq!(
            Round::new(4, 2, 0).verdict(),
            Verdict::NoQuorum {
                answered: 0,
                best: 0
            }
        );
    }

    #[test]
    fn role_replies() {
        let role = |r: &str| Reply::Array(vec![Reply::Bulk(r.into()), Reply::Int(0)]);
        assert_eq!(parse_role(&role("master")), Some(NodeRole::Master));
        assert_eq!(parse_role(&role("slave")), Some(NodeRole::Replica));
        assert_eq!(parse_role(&role("sentinel")), Some(NodeRole::Other));
        assert_eq!(parse_role(&Reply::Error("LOADING".into())), None);
        assert_eq!(parse_role(&Reply::Array(vec![])), None);
    }

    #[test]
    fn info_replication_of_master_and_replica() {
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=10.0.0.2,port=6380,state=online,offset=1,lag=0\r\n\
            slave1:ip=10.0.0.3,port=6381,state=online,offset=1,lag=1\r\n\
            master_replid:abc\r\n";
        let r = parse_info_replication(master).unwrap();
        assert_eq!(r.role, NodeRole::Master);
        assert_eq!(
            r.replicas,
            vec![Arc::from("10.0.0.2:6380"), Arc::from("10.0.0.3:6381")]
        );
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n";
        let r = parse_info_replication(replica).unwrap();
        assert_eq!(r.role, NodeRole::Replica);
        assert_eq!(r.master, Some(Arc::from("10.0.0.1:6379")));
        assert_eq!(parse_info_replication("garbage"), None);
        assert!(
            parse_info_replication("slave0:ip=x\r\nrole:master")
                .unwrap()
                .replicas
                .is_empty()
        );
    }

    #[test]
    fn sentinel_replicas_leave_out_the_down_ones() {
        let entry = |ip: &str, port: &str, flags: &str| {
            Reply::Array(
                ["name", "x", "ip", ip, "port", port, "flags", flags]
                    .iter()
                    .map(|s| Reply::Bulk(s.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let reply = Reply::Array(vec![
            entry("10.0.0.2", "6379", "slave"),
            entry("10.0.0.1", "6379", "s_down,slave,disconnected"),
            entry("::1", "6380", "slave"),
            entry("10.0.0.4", "port", "slave"),
            Reply::Array(vec![Reply::Bulk(b"ip".to_vec())]),
        ]);
        assert_eq!(
            parse_sentinel_replicas(&reply),
            Some(vec![Arc::from("10.0.0.2:6379"), Arc::from("[::1]:6380")])
        );
        assert_eq!(parse_sentinel_replicas(&Reply::Array(vec![])), Some(vec![]));
        assert_eq!(parse_sentinel_replicas(&Reply::Error("ERR".into())), None);
        assert_eq!(
            parse_sentinel_replicas(&Reply::Array(vec![Reply::Int(1)])),
            None
        );
    }

    #[test]
    fn switch_master_names() {
        assert!(switch_master_concerns(
            "mymaster 10.0.0.1 6379 10.0.0.2 6379",
            "mymaster"
        ));
        assert!(!switch_master_concerns(
            "other 10.0.0.1 6379 10.0.0.2 6379",
            "mymaster"
        ));
    }

    #[test]
    fn candidates_cycle_and_prefer() {
        let mut c = Candidates::new("s:1".into());
        c.learn("r:2".into());
        c.learn("r:2".into());
        assert_eq!(c.next(), Arc::from("s:1"));
        assert!(!c.cycle_done());
        assert_eq!(c.next(), Arc::from("r:2"));
        assert!(c.cycle_done(), "a whole cycle failed");
        assert_eq!(c.next(), Arc::from("s:1"));
        assert!(!c.cycle_done(), "a new cycle starts");
        c.succeeded();
        c.prefer("m:3".into());
        assert_eq!(c.next(), Arc::from("m:3"));
        for n in 0..40 {
            c.learn(format!("x:{n}").into());
        }
        assert_eq!(c.known.len(), MAX_KNOWN);
    }
}
