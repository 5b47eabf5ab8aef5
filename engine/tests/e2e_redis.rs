//! The node with the Redis registrar (`db-implementation=redis`) against real `redis-server` and
//! `redis-sentinel` processes on 127.0.0.1 (the lab of `registrar/tests/support/redis_lab.rs`),
//! under a steady stream of REGISTERs from a small per-user client that keeps, for every user,
//! the final status it got. Scenarios of issue 5:
//! - one server with a password: 200 only once the binding is in Redis, a fetch reads it, a
//!   restarted node still finds it, a wrong password gives 503 at the hold and the node lives on;
//! - 3 servers, 3 sentinels: the master SIGKILLed under load (every 200 found afterwards by a
//!   fetch and on the new master; the 503s counted; the unavailability window printed); the
//!   master SIGSTOPped past down-after and SIGCONTed after the election (nothing acknowledged is
//!   lost with the stale master's writes); the old master started again, empty and writable
//!   until Sentinel demotes it (the node writes nothing there); two sentinels killed (no
//!   quorum: held, then 503) and started again (service resumes);
//! - Redis down when the node starts: 503 at the hold, then recovery once Redis is up;
//! - the master restarted from its dump: REGISTERs held, then answered; what it lost since the
//!   dump written again from the replay window;
//! - `redis-wait-replicas=1`: 200 only once a replica has the write; without one, 503.
//!
//! The scenarios are heavy (up to eight processes each, a 2-core machine), so they hold one
//! lock and run one at a time whatever `--test-threads` says:
//! `cargo test -p sipshard-engine --test e2e_redis -- --test-threads 1 --nocapture` prints the
//! figures (503 count, unavailability window) on stderr. About 85 s in all.

#[path = "../../registrar/tests/support/redis_lab.rs"]
mod redis_lab;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use redis_lab::{LabOptions, RedisLab};
use support::Node;

/// RFC 3261 T1 and T2: Timer E starts at T1 and doubles up to T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Timer F: a non-INVITE transaction with no final response is over after 64·T1.
const TIMER_F: Duration = Duration::from_secs(32);
/// Contacts are registered for an hour: nothing expires during a test.
const EXPIRES_S: u32 = 3600;

/// One scenario at a time: each starts up to three servers, three sentinels and the node.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The node in Redis mode
// ---------------------------------------------------------------------------------------------

/// The node on `port` (two shards) with `db-implementation=redis` and `redis` settings
/// (`key=value`, in `[module::Registrar]`).
fn start_node(port: u16, redis: &[String]) -> Node {
    let mut sets: Vec<String> = vec!["module::Registrar/db-implementation=redis".into()];
    sets.extend(redis.iter().map(|kv| format!("module::Registrar/{kv}")));
    let mut args: Vec<&str> = vec!["--threads", "2"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    Node::start_on(port, &args)
}

/// The `redis-*` settings that point the node at the lab's sentinels.
fn sentinel_settings(lab: &RedisLab, hold: &str) -> Vec<String> {
    let sentinels: Vec<String> = (0..lab.options().sentinels)
        .map(|i| lab.sentinel_addr(i).to_string())
        .collect();
    vec![
        format!("redis-sentinel-addresses={}", sentinels.join(" ")),
        format!("redis-sentinel-master-name={}", lab.options().master_name),
        format!("redis-auth-password={}", lab.password().unwrap_or("")),
        format!("redis-failover-hold={hold}"),
    ]
}

/// The `redis-*` settings that point the node at one server (no sentinel).
fn direct_settings(addr: SocketAddr, password: &str, hold: &str) -> Vec<String> {
    vec![
        format!("redis-server-domain={}", addr.ip()),
        format!("redis-server-port={}", addr.port()),
        format!("redis-auth-password={password}"),
        format!("redis-failover-hold={hold}"),
    ]
}

/// The AOR of user `i` and its hash in Redis (layout version 1, ARCHITECTURE.md).
fn aor(user: usize) -> String {
    format!("sip:user{user}@127.0.0.1")
}

fn redis_key(user: usize) -> String {
    format!("sipshard:reg:{{{}}}", aor(user))
}

// ---------------------------------------------------------------------------------------------
// A per-user REGISTER client
// ---------------------------------------------------------------------------------------------

/// What one user's REGISTER transaction ended with.
#[derive(Debug, Clone)]
struct Record {
    user: usize,
    /// First transmission.
    sent_at: Instant,
    transmissions: u32,
    /// The final status; `None` when Timer F fired first.
    status: Option<u16>,
    answered_at: Option<Instant>,
    /// The Contact header values of the final response.
    contacts: Vec<String>,
    retry_after: Option<u32>,
}

impl Record {
    /// Whether the final response lists `contact` (a URI) among its bindings.
    fn lists(&self, contact: &str) -> bool {
        self.contacts.iter().any(|c| c.contains(contact))
    }

    fn latency(&self) -> Option<Duration> {
        self.answered_at.map(|t| t - self.sent_at)
    }
}

/// A run's records, one per user, in the order they were sent.
#[derive(Debug, Clone)]
struct Report {
    records: Vec<Record>,
}

impl Report {
    fn with_status(&self, status: u16) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.status == Some(status))
            .collect()
    }

    fn ok_users(&self) -> Vec<usize> {
        self.with_status(200).iter().map(|r| r.user).collect()
    }

    /// `status: count` of every final status (`timeout` for none).
    fn summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.records {
            let key = r.status.map_or("timeout".into(), |s| s.to_string());
            *counts.entry(key).or_default() += 1;
        }
        let retransmitted = self.records.iter().filter(|r| r.transmissions > 1).count();
        let max_latency = self.records.iter().filter_map(Record::latency).max();
        format!(
            "{} REGISTERs: {counts:?}, {retransmitted} retransmitted, slowest answer {max_latency:?}",
            self.records.len()
        )
    }

    /// The records other than 200, for panic messages (the first few).
    fn failures(&self) -> String {
        let mut text = String::new();
        for r in self
            .records
            .iter()
            .filter(|r| r.status != Some(200))
            .take(20)
        {
            let _ = writeln!(
                text,
                "user{}: {:?} after {:?} ({} transmissions, Retry-After {:?})",
                r.user,
                r.status,
                r.latency(),
                r.transmissions,
                r.retry_after
            );
        }
        text
    }
}

/// What a REGISTER carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// One Contact, `<sip:userN@127.0.0.1:PORT;run=RUN>`, for an hour.
    Bind,
    /// No Contact: the response lists the bindings.
    Fetch,
}

/// Phones for user0..userN behind one UDP socket on 127.0.0.1: REGISTERs at a steady rate,
/// each retransmitted per Timer E until a final response or Timer F. One Call-ID per user (and
/// phone set), CSeq counting up, so the registrar's §10.3 ordering sees one client per user.
struct Phones {
    socket: UdpSocket,
    local: SocketAddr,
    /// Distinguishes the Call-IDs and contacts of phone sets within a test binary.
    run: String,
    cseq: HashMap<usize, u32>,
    next_branch: u64,
}

/// One transaction in flight.
struct Pending {
    index: usize,
    bytes: Vec<u8>,
    next_send: Instant,
    interval: Duration,
}

impl Phones {
    fn new(run: &str) -> Phones {
        let socket = UdpSocket::bind((support::LOOPBACK, 0))
            .unwrap_or_else(|e| panic!("cannot bind a UDP socket on 127.0.0.1: {e}"));
        let local = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("UDP socket without a local address: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
        Phones {
            socket,
            local,
            run: run.into(),
            cseq: HashMap::new(),
            next_branch: 0,
        }
    }

    /// The contact user `i` registers.
    fn contact(&self, user: usize) -> String {
        format!("sip:user{user}@{};run={}", self.local, self.run)
    }

    /// Sends one REGISTER per user of `users`, `rate` per second, and returns every user's
    /// outcome once each transaction is over (final response or Timer F).
    fn register(
        &mut self,
        target: SocketAddr,
        users: Range<usize>,
        rate: u32,
        kind: Kind,
    ) -> Report {
        let start = Instant::now();
        let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let users: Vec<usize> = users.collect();
        let mut records: Vec<Option<Record>> = vec![None; users.len()];
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut next = 0;
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            // New transactions, on schedule.
            while next < users.len() && now >= start + gap * next as u32 {
                let user = users[next];
                let (branch, bytes) = self.request(target, user, kind);
                self.send(&bytes, target);
                records[next] = Some(Record {
                    user,
                    sent_at: now,
                    transmissions: 1,
                    status: None,
                    answered_at: None,
                    contacts: Vec::new(),
                    retry_after: None,
                });
                pending.insert(
                    branch,
                    Pending {
                        index: next,
                        bytes,
                        next_send: now + T1,
                        interval: T1,
                    },
                );
                next += 1;
            }
            // Timer E retransmissions, Timer F.
            pending.retain(|_, p| {
                let record = records[p.index].as_mut().expect("sent");
                if now >= record.sent_at + TIMER_F {
                    return false;
                }
                if now >= p.next_send {
                    let _ = self.socket.send_to(&p.bytes, target);
                    record.transmissions += 1;
                    p.interval = (p.interval * 2).min(T2);
                    p.next_send = now + p.interval;
                }
                true
            });
            if next == users.len() && pending.is_empty() {
                break;
            }
            // Responses (the read timeout paces the loop).
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let Some(response) = Response::parse(&buf[..n]) else {
                            continue;
                        };
                        if response.status < 200 {
                            continue;
                        }
                        if let Some(p) = pending.remove(&response.branch) {
                            let record = records[p.index].as_mut().expect("sent");
                            record.status = Some(response.status);
                            record.answered_at = Some(Instant::now());
                            record.contacts = response.contacts;
                            record.retry_after = response.retry_after;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break;
                    }
                    // ICMP port unreachable from an earlier send, e.g. while the node restarts.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => panic!("receiving on {}: {e}", self.local),
                }
            }
        }
        Report {
            records: records.into_iter().map(|r| r.expect("sent")).collect(),
        }
    }

    /// One user's REGISTER (a fetch when `kind` is Fetch) and its branch.
    fn request(&mut self, target: SocketAddr, user: usize, kind: Kind) -> (String, Vec<u8>) {
        let cseq = self.cseq.entry(user).or_insert(0);
        *cseq += 1;
        let cseq = *cseq;
        self.next_branch += 1;
        let branch = format!("z9hG4bK-{}-{}", self.run, self.next_branch);
        let aor = aor(user);
        let contact = match kind {
            Kind::Bind => format!(
                "Contact: <{}>\r\nExpires: {EXPIRES_S}\r\n",
                self.contact(user)
            ),
            Kind::Fetch => String::new(),
        };
        let text = format!(
            "REGISTER sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={run}-{user}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {run}-{user}@127.0.0.1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             {contact}\
             User-Agent: sipshard-e2e-redis\r\n\
             Content-Length: 0\r\n\r\n",
            local = self.local,
            run = self.run,
        );
        (branch, text.into_bytes())
    }

    fn send(&self, bytes: &[u8], target: SocketAddr) {
        match self.socket.send_to(bytes, target) {
            Ok(_) => {}
            // A refused earlier datagram surfaces here; the retransmission covers it.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("sending to {target}: {e}"),
        }
    }

    /// One REGISTER for `user`, waited for.
    fn register_one(&mut self, target: SocketAddr, user: usize, kind: Kind) -> Record {
        let report = self.register(target, user..user + 1, 1, kind);
        report.records[0].clone()
    }

    /// Sends OPTIONS to the node and waits (2 s) for its final status.
    fn options(&mut self, target: SocketAddr) -> Option<u16> {
        self.next_branch += 1;
        let branch = format!("z9hG4bK-{}-{}", self.run, self.next_branch);
        let text = format!(
            "OPTIONS sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:prober@127.0.0.1>;tag={run}\r\n\
             To: <sip:{target}>\r\n\
             Call-ID: {branch}@127.0.0.1\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            local = self.local,
            run = self.run,
        );
        self.send(text.as_bytes(), target);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                if let Some(r) = Response::parse(&buf[..n]) {
                    if r.branch == branch && r.status >= 200 {
                        return Some(r.status);
                    }
                }
            }
        }
        None
    }
}

/// The parts of a response the client needs.
struct Response {
    status: u16,
    branch: String,
    contacts: Vec<String>,
    retry_after: Option<u32>,
}

impl Response {
    fn parse(bytes: &[u8]) -> Option<Response> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, _) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()?
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()?;
        let mut branch = None;
        let mut contacts = Vec::new();
        let mut retry_after = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "via" | "v" if branch.is_none() => {
                    let first = value.split(',').next().unwrap_or("");
                    branch = first
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("branch="))
                        .map(str::to_string);
                }
                "contact" | "m" => contacts.extend(value.split(',').map(|c| c.trim().to_string())),
                "retry-after" => {
                    retry_after = value.split([' ', ';', '(']).next()?.parse().ok();
                }
                _ => {}
            }
        }
        Some(Response {
            status,
            branch: branch?,
            contacts,
            retry_after,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The fields and values of user `i`'s hash on server `node`.
fn hgetall(lab: &RedisLab, node: usize, user: usize) -> HashMap<String, String> {
    let mut con = lab.client(node);
    redis::cmd("HGETALL")
        .arg(redis_key(user))
        .query(&mut con)
        .unwrap_or_else(|e| panic!("HGETALL {} on redis-{node}: {e}", redis_key(user)))
}

/// Users of `users` whose contact from `phones` is missing from their hash on server `node`.
fn missing_in_redis(lab: &RedisLab, node: usize, phones: &Phones, users: &[usize]) -> Vec<usize> {
    let mut con = lab.client(node);
    let mut missing = Vec::new();
    for chunk in users.chunks(200) {
        let mut pipe = redis::pipe();
        for &user in chunk {
            pipe.cmd("HGETALL").arg(redis_key(user));
        }
        let hashes: Vec<HashMap<String, String>> = pipe
            .query(&mut con)
            .unwrap_or_else(|e| panic!("HGETALL pipeline on redis-{node}: {e}"));
        for (&user, hash) in chunk.iter().zip(&hashes) {
            let contact = phones.contact(user);
            if !hash.values().any(|v| v.contains(&contact)) {
                missing.push(user);
            }
        }
    }
    missing
}

/// Fetches every user of `users` (a fetch REGISTER, from a fresh phone set so that it needs
/// nothing the binding phones set up) and returns those whose binding from `phones` the
/// response does not list, with the fetch report.
fn missing_in_fetch(target: SocketAddr, phones: &Phones, users: &[usize]) -> (Vec<usize>, Report) {
    let mut fetcher = Phones::new(&format!("{}-fetch", phones.run));
    let mut missing = Vec::new();
    let mut records = Vec::new();
    // Contiguous ranges keep the client simple; the users of a run are mostly contiguous.
    for range in ranges(users) {
        let report = fetcher.register(target, range, 1000, Kind::Fetch);
        for r in report.records {
            if r.status != Some(200) || !r.lists(&phones.contact(r.user)) {
                missing.push(r.user);
            }
            records.push(r);
        }
    }
    (missing, Report { records })
}

/// Sorted users as contiguous ranges.
fn ranges(users: &[usize]) -> Vec<Range<usize>> {
    let mut sorted = users.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<Range<usize>> = Vec::new();
    for u in sorted {
        match out.last_mut() {
            Some(r) if r.end == u => r.end += 1,
            _ => out.push(u..u + 1),
        }
    }
    out
}

/// The time from `at` to the first 200 of a REGISTER sent at or after `at`.
fn unavailability(report: &Report, at: Instant) -> Option<Duration> {
    report
        .records
        .iter()
        .filter(|r| r.sent_at >= at && r.status == Some(200))
        .filter_map(|r| r.answered_at)
        .min()
        .map(|t| t - at)
}

/// Runs `f` on a thread (the load, while the test drives the lab) and hands back its result,
/// re-raising its panic.
fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Asserts that every REGISTER of `report` got 200 and listed its own contact.
#[track_caller]
fn assert_all_ok(report: &Report, phones: &Phones, what: &str, node: &Node, lab: &RedisLab) {
    let bad: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.status != Some(200) || !r.lists(&phones.contact(r.user)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} REGISTERs did not get a 200 listing their contact: {}\n{}\n\
         first: {:?}\n{node:?}\n{}",
        bad.len(),
        report.records.len(),
        report.summary(),
        report.failures(),
        bad.first(),
        lab.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// One redis-server with a password, no sentinel: a REGISTER is answered 200 with its binding
/// stored in Redis; a fetch lists it; after a node restart (empty cache) a fetch still lists
/// it (read from Redis); with a wrong password REGISTERs get 503 at the hold and the node
/// keeps answering.
#[test]
fn one_server_register_fetch_restart_and_wrong_password() {
    let _serial = serial();
    let began = Instant::now();
    let lab = RedisLab::start(LabOptions {
        password: Some("basic-Complicated-Pass-7".into()),
        ..LabOptions::default()
    });
    let password = lab.password().expect("a password").to_string();
    let port = support::free_port();
    let target = loopback(port);
    let settings = direct_settings(lab.redis_addr(0), &password, "2s");
    let mut node = start_node(port, &settings);
    let mut phones = Phones::new("basic");
    let contact = phones.contact(0);

    let bound = phones.register_one(target, 0, Kind::Bind);
    assert!(
        bound.status == Some(200) && bound.lists(&contact),
        "REGISTER: {bound:?}\n{node:?}\n{}",
        lab.logs()
    );
    let hash = hgetall(&lab, 0, 0);
    assert!(
        hash.len() == 1 && hash.values().all(|v| v.contains(&contact)),
        "HGETALL {} after the 200: {hash:?}",
        redis_key(0)
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis_key(0))
        .query(&mut lab.client(0))
        .expect("PTTL");
    assert!(
        ttl > 3_500_000 && ttl <= i64::from(EXPIRES_S) * 1000,
        "the key expires with its binding (an hour): PTTL {ttl}"
    );
    let fetched = phones.register_one(target, 0, Kind::Fetch);
    assert!(
        fetched.status == Some(200) && fetched.lists(&contact),
        "fetch: {fetched:?}\n{node:?}"
    );

    // A new node process has nothing cached: the fetch reads Redis.
    drop(node);
    node = start_node(port, &settings);
    let mut fresh = Phones::new("basic-after-restart");
    let fetched = fresh.register_one(target, 0, Kind::Fetch);
    assert!(
        fetched.status == Some(200) && fetched.lists(&contact) && fetched.contacts.len() == 1,
        "fetch after a node restart: {fetched:?}\n{node:?}\n{}",
        lab.logs()
    );
    node.process.assert_running();

    // A wrong password: no master can be used, writes wait for the hold (2 s), then 503.
    drop(node);
    let wrong = direct_settings(lab.redis_addr(0), "not-the-password", "2s");
    node = start_node(port, &wrong);
    let refused = phones.register_one(target, 1, Kind::Bind);
    let latency = refused.latency().unwrap_or_default();
    assert!(
        refused.status == Some(503)
            && refused.retry_after.is_some()
            && latency <= Duration::from_secs(5),
        "REGISTER with a wrong Redis password: expected 503 with Retry-After within the hold \
         (2 s) plus a margin: {refused:?}\n{node:?}"
    );
    assert!(
        hgetall(&lab, 0, 1).is_empty(),
        "user1 was refused, yet Redis holds a binding"
    );
    assert_eq!(
        phones.options(target),
        Some(200),
        "OPTIONS after the 503\n{node:?}"
    );
    node.process.assert_running();
    let log = node.process.stderr();
    assert!(
        log.contains("authentication refused") && log.contains("WRONGPASS"),
        "the node should say why Redis is unusable\n{node:?}"
    );
    eprintln!(
        "one server: 200 stored and fetched, fetched after a node restart; wrong password: 503 \
         after {latency:?} (Retry-After {:?}); {:?} in all",
        refused.retry_after,
        began.elapsed()
    );
}

/// The master once the cluster has settled: every running sentinel names the same server, it
/// says `ROLE master`, and every other running server replicates it in sync. Usually the one
/// `wait_for_failover` returned, but on a loaded machine the sentinels (1 s down-after) may
/// fail over a second time from a just-promoted master; the checks must look at the last one.
fn settled_master(lab: &RedisLab) -> usize {
    let mut last = Vec::new();
    let master = redis_lab::wait_until(Duration::from_secs(30), || {
        last = lab.current_master_per_sentinels();
        let named: Vec<SocketAddr> = last.iter().flatten().copied().collect();
        let first = *named.first()?;
        if named.len() != last.len() || named.iter().any(|&a| a != first) {
            return None;
        }
        let node = lab.node_at(first)?;
        (lab.role(node).as_deref() == Some("master")).then_some(node)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sentinels do not agree on a master within 30 s: {last:?}\n{}",
            lab.logs()
        )
    });
    lab.wait_replicas_in_sync(master, Duration::from_secs(20));
    master
}

/// Users and rate of the failover scenarios' load: 150 REGISTERs/s for 10 s, one per user.
const LOAD_USERS: usize = 1500;
const LOAD_RATE: u32 = 150;

/// An HA lab (3 servers, 3 sentinels, quorum 2, 1 s down-after) and the node following its
/// sentinels with `hold`; a first REGISTER (user `LOAD_USERS`) proves the node has a master.
fn ha_lab_and_node(hold: &str, run: &str) -> (RedisLab, Node, SocketAddr, Phones) {
    let lab = RedisLab::start(LabOptions::ha());
    let port = support::free_port();
    let target = loopback(port);
    let node = start_node(port, &sentinel_settings(&lab, hold));
    let mut phones = Phones::new(run);
    let first = phones.register_one(target, LOAD_USERS, Kind::Bind);
    assert!(
        first.status == Some(200),
        "first REGISTER through the sentinels' master: {first:?}\n{node:?}\n{}",
        lab.logs()
    );
    (lab, node, target, phones)
}

/// The load on its own thread: user0..user`LOAD_USERS` at `LOAD_RATE`/s.
fn start_load(mut phones: Phones, target: SocketAddr) -> thread::JoinHandle<(Phones, Report)> {
    thread::spawn(move || {
        let report = phones.register(target, 0..LOAD_USERS, LOAD_RATE, Kind::Bind);
        (phones, report)
    })
}

/// After a failover to server `master`: every user that got 200 is in Redis there and listed
/// by a fetch REGISTER.
fn assert_nothing_acknowledged_lost(
    lab: &RedisLab,
    master: usize,
    node: &Node,
    target: SocketAddr,
    phones: &Phones,
    report: &Report,
) {
    let ok = report.ok_users();
    let missing = missing_in_redis(lab, master, phones, &ok);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations are not on the new master redis-{master} \
         (first: user{}; acknowledged {:?})\n{node:?}\n{}",
        missing.len(),
        ok.len(),
        missing[0],
        report.records.iter().find(|r| r.user == missing[0]),
        lab.logs()
    );
    let (missing, fetches) = missing_in_fetch(target, phones, &ok);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations are not listed by a fetch (first: user{}: {:?}); \
         fetches: {}\n{node:?}",
        missing.len(),
        ok.len(),
        missing[0],
        fetches.records.iter().find(|r| r.user == missing[0]),
        fetches.summary()
    );
}

/// SIGKILL of the master under 150 REGISTERs/s (hold 20 s): the sentinels elect a replica in a
/// few seconds, the node holds the writes meanwhile and replays them there; every user that
/// got 200 is on the new master and fetched; no 503; the unavailability window is printed.
#[test]
fn master_sigkilled_under_load_loses_nothing_acknowledged() {
    let _serial = serial();
    let began = Instant::now();
    let (mut lab, mut node, target, phones) = ha_lab_and_node("20s", "kill");
    let old = lab.redis_addr(0);
    let load = start_load(phones, target);
    // Three seconds of load on the first master, then its death.
    thread::sleep(Duration::from_secs(3));
    let killed_at = Instant::now();
    lab.kill(0);
    let elected_node = lab.wait_for_failover(old, Duration::from_secs(20));
    let elected = killed_at.elapsed();
    let (phones, report) = join(load);
    node.process.assert_running();
    let master = settled_master(&lab);
    let window = unavailability(&report, killed_at);
    let unavailable = report.with_status(503).len();
    eprintln!(
        "SIGKILL of the master: sentinels agreed on redis-{elected_node} after {elected:?} \
         (final master redis-{master}); first 200 of a REGISTER sent after the kill {window:?} \
         after it; {unavailable} × 503; {}",
        report.summary()
    );
    assert_all_ok(&report, &phones, "SIGKILL of the master", &node, &lab);
    assert_nothing_acknowledged_lost(&lab, master, &node, target, &phones, &report);
    eprintln!("SIGKILL scenario: {:?} in all", began.elapsed());
}

/// SIGSTOP of the master past down-after under load; after the election it is SIGCONTed, wakes
/// up still calling itself master and is demoted about 10 s later, discarding what it took
/// meanwhile. Nothing acknowledged may be lost: every 200 is on the final master (and on the
/// old one, now its replica) and fetched.
#[test]
fn master_sigstopped_then_resumed_loses_nothing_acknowledged() {
    let _serial = serial();
    let began = Instant::now();
    let (mut lab, mut node, target, phones) = ha_lab_and_node("20s", "pause");
    let old = lab.redis_addr(0);
    let load = start_load(phones, target);
    thread::sleep(Duration::from_secs(2));
    let paused_at = Instant::now();
    lab.pause(0);
    let elected_node = lab.wait_for_failover(old, Duration::from_secs(20));
    let elected = paused_at.elapsed();
    lab.resume(0);
    let resumed_at = Instant::now();
    // The load goes on while the old master is awake and still says it is master.
    let demoted = redis_lab::wait_until(Duration::from_secs(30), || {
        (lab.role(0).as_deref() == Some("slave")).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "redis-0 was not demoted within 30 s of SIGCONT\n{}",
            lab.logs()
        )
    });
    let (phones, report) = join(load);
    node.process.assert_running();
    let master = settled_master(&lab);
    let window = unavailability(&report, paused_at);
    eprintln!(
        "SIGSTOP of the master: sentinels agreed on redis-{elected_node} after {elected:?} \
         (final master redis-{master}); old master demoted {:?} after SIGCONT; first 200 of a REGISTER sent after the pause {window:?} \
         after it; {} × 503; {}",
        demoted - resumed_at,
        report.with_status(503).len(),
        report.summary()
    );
    assert_all_ok(&report, &phones, "SIGSTOP of the master", &node, &lab);
    assert_nothing_acknowledged_lost(&lab, master, &node, target, &phones, &report);
    let missing = missing_in_redis(&lab, 0, &phones, &report.ok_users());
    assert!(
        missing.is_empty(),
        "{} acknowledged registrations missing on the demoted redis-0 after its resync",
        missing.len()
    );
    eprintln!("SIGSTOP scenario: {:?} in all", began.elapsed());
}

/// A redis-sentinel started by the test on a port the lab's sentinel had (the lab cannot start
/// again a sentinel it killed), monitoring the lab's master with the lab's settings. Killed and
/// reaped on drop.
struct Sentinel {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: support::TempDir,
}

impl Sentinel {
    /// Starts it and waits (10 s) until it names `master`.
    fn start(lab: &RedisLab, port: u16, master: SocketAddr) -> Sentinel {
        let dir = support::TempDir::new("sentinel");
        let o = lab.options();
        let name = &o.master_name;
        let mut conf = format!(
            "bind 127.0.0.1\nport {port}\ndaemonize no\ndir {}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {name} {} {} {}\n\
             sentinel down-after-milliseconds {name} {}\n\
             sentinel failover-timeout {name} {}\n\
             sentinel parallel-syncs {name} 1\n",
            dir.path().display(),
            master.ip(),
            master.port(),
            o.quorum,
            o.down_after_ms,
            o.failover_timeout_ms,
        );
        if let Some(password) = lab.password() {
            conf.push_str(&format!("sentinel auth-pass {name} {password}\n"));
        }
        let conf_path = dir.join("sentinel.conf");
        std::fs::write(&conf_path, conf)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf_path.display()));
        let log = dir.join("sentinel.log");
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("a second handle on the log");
        let child = std::process::Command::new("redis-sentinel")
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-sentinel: {e}"));
        let sentinel = Sentinel {
            child,
            log,
            _dir: dir,
        };
        let named = redis_lab::wait_until(Duration::from_secs(10), || {
            let mut con = redis_lab::connect(port, None).ok()?;
            let (ip, p): (String, u16) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(name)
                .query(&mut con)
                .ok()?;
            (format!("{ip}:{p}").parse::<SocketAddr>().ok()? == master).then_some(())
        });
        if named.is_none() {
            panic!(
                "the restarted sentinel on {port} does not name {master} within 10 s:\n{}",
                std::fs::read_to_string(&sentinel.log).unwrap_or_default()
            );
        }
        sentinel
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers user `first`, `first + 1`, … one at a time (each waits up to the hold) until one
/// gets 200; returns how long it took from `since`, or panics after `timeout`.
fn wait_for_recovery(
    phones: &mut Phones,
    target: SocketAddr,
    first: usize,
    since: Instant,
    timeout: Duration,
    node: &Node,
) -> (Duration, usize) {
    let mut user = first;
    let mut last = None;
    while since.elapsed() < timeout {
        let r = phones.register_one(target, user, Kind::Bind);
        user += 1;
        if r.status == Some(200) {
            return (r.answered_at.unwrap_or_else(Instant::now) - since, user);
        }
        last = Some(r);
    }
    panic!("no 200 within {timeout:?} of the recovery; last: {last:?}\n{node:?}")
}

/// Two of the three sentinels killed, the master alive: no quorum names a master, so once the
/// node's master lease runs out writes are held for the hold (2 s) and answered 503 with
/// Retry-After; no failover happens; the node keeps answering. Sentinels started again on the
/// same ports restore the quorum, and REGISTERs succeed again.
#[test]
fn no_sentinel_quorum_holds_then_refuses_and_recovers() {
    let _serial = serial();
    let began = Instant::now();
    let (mut lab, mut node, target, mut phones) = ha_lab_and_node("2s", "quorum");
    let master = lab.redis_addr(0);
    let ports = [lab.sentinel_addr(1).port(), lab.sentinel_addr(2).port()];
    lab.kill_sentinel(1);
    lab.kill_sentinel(2);
    let killed_at = Instant::now();
    // 8 s of REGISTERs, 10/s: past the master lease (3 s) and the hold (2 s).
    let report = phones.register(target, 0..80, 10, Kind::Bind);
    node.process.assert_running();
    let refused = report.with_status(503);
    let first_503 = refused.first().map(|r| r.sent_at - killed_at);
    let held: Vec<Duration> = refused.iter().filter_map(|r| r.latency()).collect();
    eprintln!(
        "no sentinel quorum: {}; first REGISTER answered 503 was sent {first_503:?} after the \
         kill; 503s answered after {:?} to {:?}",
        report.summary(),
        held.iter().min(),
        held.iter().max()
    );
    let other: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| !matches!(r.status, Some(200 | 503)))
        .collect();
    assert!(
        other.is_empty(),
        "every REGISTER gets 200 or 503: {other:?}\n{node:?}"
    );
    assert!(
        refused.iter().all(|r| r.retry_after.is_some()),
        "503 without Retry-After: {:?}",
        refused.iter().find(|r| r.retry_after.is_none())
    );
    // Writes sent 6 s after the kill (lease 3 s, check interval 1 s, a margin) are refused.
    let late: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.sent_at >= killed_at + Duration::from_secs(6))
        .collect();
    assert!(
        !late.is_empty() && late.iter().all(|r| r.status == Some(503)),
        "REGISTERs 6 s after the quorum was lost should be 503: {}\n{}\n{node:?}",
        report.summary(),
        report.failures()
    );
    // Held, not refused at once: each 503 came at the hold (2 s), give or take a timer tick.
    assert!(
        held.iter()
            .all(|&d| d >= Duration::from_millis(1800) && d <= Duration::from_secs(4)),
        "503s should come at the 2 s hold: {held:?}"
    );
    let stored: Vec<usize> = refused
        .iter()
        .map(|r| r.user)
        .filter(|&u| !hgetall(&lab, 0, u).is_empty())
        .collect();
    assert!(
        stored.is_empty(),
        "users answered 503 whose binding is in Redis all the same: {stored:?}"
    );
    assert_eq!(
        lab.role(0).as_deref(),
        Some("master"),
        "no failover without a quorum"
    );
    assert_eq!(
        phones.options(target),
        Some(200),
        "OPTIONS without a quorum\n{node:?}"
    );

    // The two sentinels back on their ports: the quorum names the master again.
    let restarted_at = Instant::now();
    let _sentinels: Vec<Sentinel> = ports
        .iter()
        .map(|&port| Sentinel::start(&lab, port, master))
        .collect();
    let (recovery, next) = wait_for_recovery(
        &mut phones,
        target,
        100,
        restarted_at,
        Duration::from_secs(20),
        &node,
    );
    let after = phones.register(target, next..next + 20, 20, Kind::Bind);
    assert_all_ok(&after, &phones, "after the sentinels' restart", &node, &lab);
    node.process.assert_running();
    eprintln!(
        "no sentinel quorum: first 200 {recovery:?} after the sentinels were started again; \
         {:?} in all",
        began.elapsed()
    );
}

/// Redis down when the node starts (its only server killed first): REGISTERs get 503 with
/// Retry-After at the hold (2 s) and the node answers OPTIONS; once the server is started
/// again on its port, REGISTERs succeed and are stored.
#[test]
fn redis_down_at_start_refuses_then_recovers() {
    let _serial = serial();
    let began = Instant::now();
    let mut lab = RedisLab::start(LabOptions {
        password: Some("down-Complicated-Pass-9".into()),
        ..LabOptions::default()
    });
    let server = lab.redis_addr(0);
    let password = lab.password().expect("a password").to_string();
    lab.kill(0);
    let port = support::free_port();
    let target = loopback(port);
    let mut node = start_node(port, &direct_settings(server, &password, "2s"));
    let mut phones = Phones::new("down");
    let report = phones.register(target, 0..5, 5, Kind::Bind);
    let latency: Vec<Duration> = report.records.iter().filter_map(Record::latency).collect();
    assert!(
        report
            .records
            .iter()
            .all(|r| r.status == Some(503) && r.retry_after.is_some())
            && latency.iter().all(|&d| d <= Duration::from_secs(4)),
        "REGISTERs with Redis down: 503 with Retry-After within the 2 s hold and a margin: \
         {report:?}\n{node:?}"
    );
    assert_eq!(
        phones.options(target),
        Some(200),
        "OPTIONS with Redis down\n{node:?}"
    );
    node.process.assert_running();

    lab.restart(0);
    let restarted_at = Instant::now();
    let (recovery, next) = wait_for_recovery(
        &mut phones,
        target,
        10,
        restarted_at,
        Duration::from_secs(20),
        &node,
    );
    let after = phones.register(target, next..next + 20, 20, Kind::Bind);
    assert_all_ok(&after, &phones, "after Redis started", &node, &lab);
    let missing = missing_in_redis(&lab, 0, &phones, &after.ok_users());
    assert!(
        missing.is_empty(),
        "acknowledged but not in Redis: {missing:?}"
    );
    node.process.assert_running();
    eprintln!(
        "Redis down at start: 503 after {:?}..{:?}; first 200 {recovery:?} after Redis started; \
         {:?} in all",
        latency.iter().min(),
        latency.iter().max(),
        began.elapsed()
    );
}

/// The old master SIGKILLed, a replica elected, then the old master started again: with no
/// persistence it comes back empty and writable, and Sentinel makes it a replica only about
/// 10 s later. REGISTERs at 150/s through that window: all 200, every one on the final master
/// and (after its resync) on the old one — the node never wrote to the returning server.
#[test]
fn old_master_restarted_empty_gets_no_writes() {
    let _serial = serial();
    let began = Instant::now();
    let (mut lab, mut node, target, phones) = ha_lab_and_node("20s", "rejoin");
    let old = lab.redis_addr(0);
    lab.kill(0);
    lab.wait_for_failover(old, Duration::from_secs(20));
    lab.restart(0);
    let restarted_at = Instant::now();
    let load = start_load(phones, target);
    let demoted = redis_lab::wait_until(Duration::from_secs(30), || {
        (lab.role(0).as_deref() == Some("slave")).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "redis-0 was not made a replica within 30 s of its restart\n{}",
            lab.logs()
        )
    });
    let (phones, report) = join(load);
    node.process.assert_running();
    let master = settled_master(&lab);
    eprintln!(
        "old master restarted: a replica {:?} after its restart (final master redis-{master}); {}",
        demoted - restarted_at,
        report.summary()
    );
    assert_all_ok(&report, &phones, "old master restarted", &node, &lab);
    assert_nothing_acknowledged_lost(&lab, master, &node, target, &phones, &report);
    let missing = missing_in_redis(&lab, 0, &phones, &report.ok_users());
    assert!(
        missing.is_empty(),
        "{} acknowledged registrations missing on redis-0 after it rejoined as a replica",
        missing.len()
    );
    eprintln!(
        "restarted old master scenario: {:?} in all",
        began.elapsed()
    );
}

/// A redis-server of its own (the lab's run without persistence), started from a dump in `dir`.
struct DumpServer {
    child: std::process::Child,
}

impl DumpServer {
    fn start(dir: &std::path::Path, port: u16, password: &str, extra: &[&str]) -> DumpServer {
        let port = port.to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port, "--bind", support::LOOPBACK])
            .arg("--dir")
            .arg(dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--requirepass", password, "--masterauth", password])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (Debian redis-server): {e}"));
        DumpServer { child }
    }
}

impl Drop for DumpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The master killed and started again from its last dump, which it loads slowly
/// (`key-load-delay`, about 6 s). REGISTERs sent meanwhile are held, not refused, and answered;
/// the bindings acknowledged after the dump, which the restarted server lost, are written again
/// from the journal's replay window. (Redis 7.0 serves commands while it loads at start-up, so
/// the `-LOADING` answer itself is covered by the HA client's unit tests, not here.)
#[test]
fn master_restarted_from_its_dump_gets_back_what_it_lost() {
    let _serial = serial();
    let dir = support::TempDir::new("redis-loading");
    let port = support::free_port();
    let password = "loading-Complicated-Pass-7";
    let client = || redis_lab::connect(port, Some(password));
    let mut server = DumpServer::start(dir.path(), port, password, &[]);
    let mut c = redis_lab::wait_until(Duration::from_secs(10), || client().ok())
        .expect("redis-server answers within 10 s");
    // Filler keys in the dump: at 300 µs a key the restarted server loads for about 6 s.
    let mut fill = redis::pipe();
    for i in 0..20_000 {
        fill.cmd("SET").arg(format!("filler:{i}")).arg(i).ignore();
    }
    fill.query::<()>(&mut c).expect("fill");
    redis::cmd("SAVE").query::<()>(&mut c).expect("SAVE");

    let node_port = support::free_port();
    let target = loopback(node_port);
    let node = start_node(node_port, &direct_settings(loopback(port), password, "30s"));
    let mut phones = Phones::new("loading");
    let before = phones.register(target, 0..20, 20, Kind::Bind);
    assert_eq!(
        before.ok_users().len(),
        20,
        "before the restart: {before:?}\n{node:?}"
    );

    drop(server);
    server = DumpServer::start(dir.path(), port, password, &["--key-load-delay", "300"]);
    let restarted_at = Instant::now();
    let during = phones.register(target, 20..40, 10, Kind::Bind);
    let refused = during.with_status(503).len();
    assert_eq!(
        refused, 0,
        "REGISTERs while the master loads are held, not refused: {during:?}\n{node:?}"
    );
    assert_eq!(during.ok_users().len(), 20, "{during:?}\n{node:?}");

    let mut c = redis_lab::wait_until(Duration::from_secs(30), || {
        let mut c = client().ok()?;
        let read: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg("filler:0").query(&mut c);
        read.ok().map(|_| c)
    })
    .expect("the restarted server answers");
    let missing: Vec<usize> = (0..40)
        .filter(|&user| {
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(redis_key(user))
                .query(&mut c)
                .unwrap_or_default();
            fields.is_empty()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged bindings missing after the restart: {missing:?}\n{node:?}"
    );
    eprintln!(
        "master restarted from its dump: 20 REGISTERs during the restart, all 200, the last {:?} \
         after it; the 20 bindings written after the dump written again",
        during
            .records
            .iter()
            .filter_map(|r| r.answered_at)
            .max()
            .map(|t| t.saturating_duration_since(restarted_at))
    );
    drop(server);
}

/// `redis-wait-replicas=1`: a 200 means a replica has the write too (`WAIT 1`). With the only
/// replica gone, the master still takes the write but `WAIT` counts none, so the REGISTER is
/// held and answered 503 at the hold, never 200; with the replica back, 200 again.
#[test]
fn wait_replicas_gates_the_200_on_a_replica() {
    let _serial = serial();
    let mut lab = RedisLab::start(LabOptions {
        replicas: 1,
        password: Some("wait-Complicated-Pass-3".into()),
        ..LabOptions::default()
    });
    let password = lab.password().expect("a password").to_string();
    let port = support::free_port();
    let target = loopback(port);
    let mut settings = direct_settings(lab.redis_addr(0), &password, "3s");
    settings.push("redis-wait-replicas=1".into());
    let node = start_node(port, &settings);
    let mut phones = Phones::new("wait");

    let first = phones.register(target, 0..5, 5, Kind::Bind);
    assert_eq!(
        first.ok_users().len(),
        5,
        "with the replica: {first:?}\n{node:?}"
    );
    let mut replica = redis_lab::connect(lab.redis_addr(1).port(), Some(&password))
        .expect("connect to the replica");
    for user in 0..5 {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(redis_key(user))
            .query(&mut replica)
            .expect("HGETALL on the replica");
        assert!(
            !fields.is_empty(),
            "user {user} acknowledged but not on the replica"
        );
    }

    lab.kill(1);
    let alone = phones.register(target, 5..8, 3, Kind::Bind);
    assert!(
        alone
            .records
            .iter()
            .all(|r| r.status == Some(503) && r.retry_after.is_some()),
        "without a replica: held, then 503 with Retry-After: {alone:?}\n{node:?}"
    );

    lab.restart(1);
    let (recovery, _) = wait_for_recovery(
        &mut phones,
        target,
        8,
        Instant::now(),
        Duration::from_secs(30),
        &node,
    );
    eprintln!(
        "redis-wait-replicas=1: 503 without the replica; 200 again {recovery:?} after it came back"
    );
}
