//! The Redis thread against real Redis processes (the lab): writes acknowledged and stored, a
//! master SIGKILLed under a steady stream of writes, Redis unreachable and a wrong password;
//! the data subscription (a write reaches its owner shard as a change, a gap or a full queue as
//! a resync, also across a failover) and reads served by a replica while no master is known.
//!
//! Each test plays one or two shards on its own threads: it submits through a [`ShardLink`],
//! waits on the link's wake-up stream (as a glommio shard awaits readability) and drains the
//! completions. Writes are calls of the real register script (`redis_data`).

#[path = "support/redis_lab.rs"]
mod redis_lab;

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redis_lab::{LabOptions, RedisLab};
use sipshard_registrar::ha::{
    Credentials, Discovery, HaConfig, HaError, HaState, Rejected, Reply, ScriptId, Write,
};
use sipshard_registrar::redis_data::{self, CHANGES_CHANNEL, ContactOutcome};
use sipshard_registrar::redis_thread::{CacheChange, Outcome, RedisThread, ShardLink, SubmitError};
use sipshard_registrar::{
    Aor, RegisterRequest, RegistrarConfig, RequestContact, Source, Transport, owner_shard,
    redis_bridge,
};

/// The most a test waits for anything the thread should do promptly.
const PROMPT: Duration = Duration::from_secs(5);

fn aor(user: u64) -> Aor {
    Aor::parse(&format!("sip:u{user}@example.com")).expect("valid AOR")
}

/// A REGISTER of one contact for user `user`, as the register script's write.
fn register_write(user: u64) -> Write {
    let uri = format!("sip:u{user}@192.0.2.1:5060");
    let req = RegisterRequest {
        aor: aor(user),
        call_id: format!("call-{user}").into(),
        cseq: 1,
        contacts: vec![RequestContact {
            echo_value: format!("<{uri}>").into(),
            uri: uri.into(),
            q_millis: None,
            expires_s: Some(3600),
            instance: None,
            reg_id: None,
        }],
        star: false,
        expires_s: None,
        path: Vec::new(),
        path_supported: false,
        outbound_supported: false,
        source: Source {
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().expect("address"),
            local: "192.0.2.9:5060".parse().expect("address"),
            connection: None,
        },
        via_matches_source: true,
        user_agent: None,
    };
    let call = redis_data::register_call(&req, &RegistrarConfig::default(), "node-1")
        .expect("a valid REGISTER");
    Write {
        script: ScriptId(0),
        keys: call.keys,
        args: call.args,
    }
}

/// The lookup script's read of user `user`'s bindings.
fn lookup_read(user: u64) -> Write {
    redis_bridge::to_write(redis_data::lookup_call(&aor(user))).expect("a layout script")
}

/// The lookup found user `user`'s one binding.
fn assert_found(user: u64, outcome: &Outcome) {
    let Outcome::Acked(reply) = outcome else {
        panic!("user {user}: read {outcome:?}");
    };
    let found = redis_data::decode_lookup(reply, Instant::now())
        .unwrap_or_else(|e| panic!("user {user}: {e} in {reply:?}"));
    assert_eq!(found.bindings.len(), 1, "user {user}");
}

/// The register script added the contact.
fn assert_added(user: u64, reply: &Reply) {
    let decoded = redis_data::decode_register(reply, Instant::now())
        .unwrap_or_else(|e| panic!("user {user}: {e} in {reply:?}"));
    assert_eq!(decoded.outcomes, vec![ContactOutcome::Added], "user {user}");
    assert_eq!(decoded.bindings.len(), 1, "user {user}");
}

/// Users (of `users`) whose AOR hash is missing on server `node`.
fn missing_on(lab: &RedisLab, node: usize, users: &[u64]) -> Vec<u64> {
    let mut con = lab.client(node);
    let mut pipe = redis::pipe();
    for &user in users {
        pipe.cmd("HLEN").arg(redis_data::aor_key(&aor(user)));
    }
    let lens: Vec<i64> = pipe
        .query(&mut con)
        .unwrap_or_else(|e| panic!("HLEN on redis-{node}: {e}"));
    users
        .iter()
        .zip(lens)
        .filter(|(_, len)| *len != 1)
        .map(|(&user, _)| user)
        .collect()
}

fn base_config(discovery: Discovery) -> HaConfig {
    let mut config = match discovery {
        Discovery::Direct { server } => HaConfig::direct(server),
        Discovery::Sentinel {
            sentinels,
            master_name,
            ..
        } => HaConfig::sentinel(sentinels, master_name),
    };
    // The layout's scripts in their fixed order: register (ScriptId(0)), lookup.
    config.scripts = redis_bridge::ha_scripts();
    config
}

fn direct(addr: impl ToString, password: Option<&str>) -> HaConfig {
    let mut config = base_config(Discovery::Direct {
        server: addr.to_string().into(),
    });
    config.credentials = Credentials {
        username: None,
        password: password.map(str::to_owned),
    };
    config
}

/// One shard as the tests play it: a link, its wake-up stream, and the outcomes seen.
struct Shard {
    link: ShardLink,
    wakeup: UnixStream,
    outcomes: HashMap<u64, (Outcome, Instant)>,
    /// Cache changes, in the order taken.
    changes: Vec<CacheChange>,
    /// The wake-up stream reached its end: the thread has stopped.
    ended: bool,
}

impl Shard {
    fn new(mut link: ShardLink) -> Shard {
        let wakeup = link.take_wakeup().expect("a wake-up stream");
        assert!(link.take_wakeup().is_none(), "the wake-up is taken once");
        Shard {
            link,
            wakeup,
            outcomes: HashMap::new(),
            changes: Vec::new(),
            ended: false,
        }
    }

    /// Waits up to `wait` for a wake-up, then takes every change and completion queued.
    fn pump(&mut self, wait: Duration) {
        if !self.ended {
            let wait = wait.max(Duration::from_millis(1));
            self.wakeup
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            let mut buf = [0u8; 64];
            match self.wakeup.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("wake-up stream: {e}"),
            }
        }
        while let Some(change) = self.link.try_change() {
            self.changes.push(change);
        }
        while let Some((token, outcome)) = self.link.try_completion() {
            let previous = self.outcomes.insert(token, (outcome, Instant::now()));
            assert!(previous.is_none(), "two outcomes for write {token}");
        }
    }

    /// Pumps until `done` says the changes taken so far are what was expected.
    fn wait_changes(&mut self, what: &str, done: impl Fn(&[CacheChange]) -> bool) {
        let deadline = Instant::now() + PROMPT;
        while !done(&self.changes) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {PROMPT:?}; changes {:?}",
                self.changes
            );
            self.pump(Duration::from_millis(50));
        }
    }

    /// Submits one write and waits for its outcome.
    fn write(&mut self, user: u64) -> Outcome {
        self.link
            .submit(user, register_write(user))
            .expect("submit");
        self.settle(PROMPT);
        self.outcomes[&user].0.clone()
    }

    /// Submits one read (token `token`) and waits for its outcome.
    fn read(&mut self, token: u64, user: u64) -> (Outcome, Duration) {
        let started = Instant::now();
        self.link
            .submit_read(token, lookup_read(user))
            .expect("submit a read");
        while !self.outcomes.contains_key(&token) {
            assert!(started.elapsed() < PROMPT, "read {token}: no outcome");
            self.pump(Duration::from_millis(50));
        }
        (self.outcomes[&token].0.clone(), started.elapsed())
    }

    /// Pumps until every write submitted has its outcome; panics after `timeout`.
    fn settle(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.link.in_flight() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} writes without an outcome after {timeout:?}",
                self.link.in_flight()
            );
            self.pump(Duration::from_millis(50));
        }
    }
}

fn changed(aor: &Aor) -> CacheChange {
    CacheChange::Changed(aor.clone())
}

/// Waits until the thread reports its data subscription confirmed on `master`.
fn wait_subscribed(thread: &RedisThread, master: &str) {
    let ok = redis_lab::wait_until(PROMPT, || {
        let h = thread.health();
        (h.subscribed && h.master.as_deref() == Some(master)).then_some(())
    });
    assert!(
        ok.is_some(),
        "not subscribed on {master}: {:?}",
        thread.health()
    );
}

/// Writes through two shards are acknowledged with the script's reply and are in Redis, and the
/// health snapshot names the master.
#[test]
fn writes_are_acknowledged_and_stored() {
    let lab = RedisLab::start(LabOptions {
        password: Some("driver-Pass-1".into()),
        ..LabOptions::default()
    });
    let (thread, links) =
        RedisThread::start(direct(lab.redis_addr(0), lab.password()), 2, 64).expect("start");
    let per_shard = 150u64;
    let started = Instant::now();
    let shards: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(i, link)| {
            thread::spawn(move || {
                let mut shard = Shard::new(link);
                let users: Vec<u64> = (0..per_shard).map(|n| i as u64 * 1000 + n).collect();
                let mut next = users.iter().copied().peekable();
                // Submit as fast as the per-shard bound allows.
                while next.peek().is_some() || shard.link.in_flight() > 0 {
                    while let Some(&user) = next.peek() {
                        match shard.link.submit(user, register_write(user)) {
                            Ok(()) => {
                                next.next();
                            }
                            Err(SubmitError::Full) => break,
                            Err(SubmitError::Gone) => panic!("the thread is gone"),
                        }
                    }
                    assert!(started.elapsed() < PROMPT, "writes not settled in time");
                    shard.pump(Duration::from_millis(100));
                }
                (users, shard)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut shards: Vec<Shard> = shards
        .into_iter()
        .map(|handle| {
            let (users, shard) = handle.join().expect("shard thread");
            all.push(users);
            shard
        })
        .collect();
    for (users, shard) in all.iter().zip(&shards) {
        assert_eq!(shard.outcomes.len(), users.len());
        for &user in users {
            match &shard.outcomes[&user].0 {
                Outcome::Acked(reply) => assert_added(user, reply),
                other => panic!("user {user}: {other:?}"),
            }
        }
    }
    let all: Vec<u64> = all.concat();
    assert_eq!(missing_on(&lab, 0, &all), Vec::<u64>::new());

    // What a shard waits on: a write, then a byte on the wake-up stream, then its completion.
    let shard = &mut shards[1];
    shard.wakeup.set_nonblocking(true).expect("non-blocking");
    let mut stale = [0u8; 64];
    while shard.wakeup.read(&mut stale).is_ok_and(|n| n > 0) {}
    shard.wakeup.set_nonblocking(false).expect("blocking");
    shard
        .link
        .submit(5000, register_write(5000))
        .expect("submit");
    shard
        .wakeup
        .set_read_timeout(Some(PROMPT))
        .expect("read timeout");
    let waiting = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(shard.wakeup.read(&mut byte).expect("a wake-up"), 1);
    assert!(waiting.elapsed() < Duration::from_secs(1));
    match shard.link.try_completion() {
        Some((5000, Outcome::Acked(reply))) => assert_added(5000, &reply),
        other => panic!("after the wake-up: {other:?}"),
    }
    assert_eq!(shard.link.in_flight(), 0);
    let health = thread.health();
    assert_eq!(health.state, HaState::Ready);
    assert_eq!(
        health.master.as_deref(),
        Some(lab.redis_addr(0).to_string().as_str())
    );
    assert_eq!(health.counters.acked, 2 * per_shard + 1);
    assert_eq!(health.pending_writes, 0);
    let stopping = Instant::now();
    thread.shutdown();
    assert!(stopping.elapsed() < Duration::from_secs(1));
}

/// 3 servers and 3 sentinels (down-after 1 s): a steady stream of writes while the master is
/// SIGKILLed. Every acknowledged write is on the new master, and since the failover ends well
/// within the hold, none failed.
#[test]
fn failover_under_a_stream_of_writes_loses_and_fails_nothing() {
    let mut lab = RedisLab::start(LabOptions::ha());
    let sentinels = (0..3)
        .map(|i| Arc::from(lab.sentinel_addr(i).to_string()))
        .collect();
    let mut config = base_config(Discovery::Sentinel {
        sentinels,
        master_name: lab.options().master_name.clone(),
        quorum: 2,
        credentials: Credentials::default(),
    });
    config.credentials.password = lab.password().map(str::to_owned);
    config.request_timeout = Duration::from_millis(500);
    let hold = Duration::from_secs(20);
    config.failover_hold = hold;
    let (thread, mut links) = RedisThread::start(config, 1, 4096).expect("start");
    let link = links.pop().expect("one link");

    // The stream: one write every 2 ms until told to stop, then wait for every outcome.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut shard = Shard::new(link);
            let mut submitted = HashMap::new();
            let period = Duration::from_millis(2);
            let start = Instant::now();
            let mut user = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + period * u32::try_from(user).expect("small count");
                let now = Instant::now();
                if now >= due {
                    shard
                        .link
                        .submit(user, register_write(user))
                        .unwrap_or_else(|e| panic!("submit {user}: {e}"));
                    submitted.insert(user, now);
                    user += 1;
                } else {
                    shard.pump(due - now);
                }
            }
            shard.settle(hold + PROMPT);
            (submitted, shard.outcomes)
        })
    };

    thread::sleep(Duration::from_secs(1));
    let old = lab.redis_addr(0);
    let killed = Instant::now();
    lab.kill(0);
    let new = lab.wait_for_failover(old, hold);
    let elected = killed.elapsed();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (submitted, outcomes) = writer.join().expect("writer thread");

    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    let mut first_ack_after_kill: Option<Instant> = None;
    for (&user, &at) in &submitted {
        match &outcomes[&user] {
            (Outcome::Acked(reply), done) => {
                assert_added(user, reply);
                acked.push(user);
                worst = worst.max(done.duration_since(at));
                if at > killed {
                    first_ack_after_kill =
                        Some(first_ack_after_kill.map_or(*done, |t| t.min(*done)));
                }
            }
            (other, _) => failed.push((user, other.clone())),
        }
    }
    acked.sort_unstable();
    let recovered = first_ack_after_kill.map(|t| t.duration_since(killed));
    eprintln!(
        "{} writes, {} acknowledged; sentinels elected redis-{new} {elected:?} after the kill; \
         first write submitted after the kill acknowledged {recovered:?} after it; longest \
         wait for an acknowledgement {worst:?}",
        submitted.len(),
        acked.len()
    );
    assert!(elected < hold, "the failover took longer than the hold");
    assert_eq!(
        failed,
        Vec::new(),
        "writes failed although the failover ended in time"
    );
    assert!(
        recovered.is_some(),
        "no write submitted after the kill was acknowledged"
    );
    assert_eq!(missing_on(&lab, new, &acked), Vec::<u64>::new());

    let health = thread.health();
    assert_eq!(health.state, HaState::Ready);
    assert_eq!(
        health.master.as_deref(),
        Some(lab.redis_addr(new).to_string().as_str())
    );
    assert!(health.counters.masters_lost >= 1);
    thread.shutdown();
}

/// A loopback address nothing listens on.
fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr.to_string()
}

/// Submits `n` writes (tokens 0..n) and waits until every one has an outcome.
fn submit_and_settle(shard: &mut Shard, n: u64, timeout: Duration) -> Vec<Outcome> {
    shard.outcomes.clear();
    for user in 0..n {
        shard
            .link
            .submit(user, register_write(user))
            .expect("submit");
    }
    shard.settle(timeout);
    (0..n).map(|user| shard.outcomes[&user].0.clone()).collect()
}

/// Redis unreachable at start (no server, and sentinels that do not exist) and a wrong
/// password: writes fail with the hold's Retry-After within the hold, the health says why, the
/// thread stops at once and its links report it.
#[test]
fn unreachable_redis_and_wrong_password_fail_writes_within_the_hold() {
    let hold = Duration::from_millis(1500);
    let lab = RedisLab::start(LabOptions {
        password: Some("the-right-one".into()),
        ..LabOptions::default()
    });
    let no_sentinels = base_config(Discovery::Sentinel {
        sentinels: vec![dead_addr().into(), dead_addr().into()],
        master_name: "sipshard".into(),
        quorum: 2,
        credentials: Credentials::default(),
    });
    let cases = [
        ("no server", direct(dead_addr(), None)),
        ("no sentinel", no_sentinels),
        ("wrong password", direct(lab.redis_addr(0), Some("wrong"))),
    ];
    for (case, mut config) in cases {
        config.failover_hold = hold;
        config.request_timeout = Duration::from_millis(300);
        config.retry_after_s = 7;
        config.journal_capacity = 8;
        let (thread, mut links) = RedisThread::start(config, 1, 16).expect("start");
        let mut shard = Shard::new(links.pop().expect("one link"));
        let started = Instant::now();
        let outcomes = submit_and_settle(&mut shard, 8, hold + PROMPT);
        let took = started.elapsed();
        assert!(
            outcomes
                .iter()
                .all(|o| *o == Outcome::Failed { retry_after_s: 7 }),
            "{case}: {outcomes:?}"
        );
        assert!(
            took >= hold && took < hold + Duration::from_secs(1),
            "{case}: failed after {took:?}"
        );
        // The journal holds 8: a ninth write while 8 wait is refused at once.
        let outcomes = submit_and_settle(&mut shard, 9, hold + PROMPT);
        assert_eq!(
            outcomes[8],
            Outcome::Rejected(Rejected::JournalFull),
            "{case}"
        );
        let health = thread.health();
        assert_ne!(health.state, HaState::Ready, "{case}");
        match (case, &health.last_error) {
            ("wrong password", Some(HaError::AuthFailed { .. })) => {
                assert!(health.counters.auth_failures > 0)
            }
            ("no server", Some(HaError::ConnectFailed { .. })) => {}
            ("no sentinel", Some(HaError::ConnectFailed { .. } | HaError::NoQuorum { .. })) => {}
            (case, other) => panic!("{case}: last error {other:?}"),
        }

        // Writes held when the thread stops are failed, not forgotten, and the stop is prompt.
        for user in 100..104 {
            shard
                .link
                .submit(user, register_write(user))
                .expect("submit");
        }
        let stopping = Instant::now();
        thread.shutdown();
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "{case}: shutdown took {:?}",
            stopping.elapsed()
        );
        shard.settle(PROMPT);
        for user in 100..104 {
            assert_eq!(
                shard.outcomes[&user].0,
                Outcome::Failed { retry_after_s: 7 },
                "{case}"
            );
        }
        shard.pump(PROMPT);
        assert!(shard.ended, "{case}: the wake-up stream did not end");
        assert_eq!(
            shard.link.submit(200, register_write(200)),
            Err(SubmitError::Gone),
            "{case}"
        );
    }
}

/// A write through one shard reaches the AOR's owner shard, and only it, as a change (the
/// register script publishes it on the changes channel, the thread routes it by
/// `owner_shard`). Every shard gets a resync when the subscription starts, when a payload is
/// not an AOR, and when its change queue is full.
#[test]
fn a_write_reaches_its_owner_shard_as_a_change() {
    let lab = RedisLab::start(LabOptions {
        password: Some("changes-Pass-1".into()),
        ..LabOptions::default()
    });
    let n = 4;
    let capacity = 8;
    let (thread, links) =
        RedisThread::start(direct(lab.redis_addr(0), lab.password()), n, capacity).expect("start");
    let mut shards: Vec<Shard> = links.into_iter().map(Shard::new).collect();
    wait_subscribed(&thread, &lab.redis_addr(0).to_string());
    for shard in &mut shards {
        shard.wait_changes("the first resync", |c| c == [CacheChange::Resync]);
        shard.changes.clear();
    }

    let started = Instant::now();
    let users: Vec<u64> = (0..12).collect();
    for &user in &users {
        match shards[0].write(user) {
            Outcome::Acked(reply) => assert_added(user, &reply),
            other => panic!("user {user}: {other:?}"),
        }
    }
    let owned = |i: usize| -> Vec<CacheChange> {
        users
            .iter()
            .map(|&u| aor(u))
            .filter(|a| owner_shard(a, n) == i)
            .map(|a| changed(&a))
            .collect()
    };
    for (i, shard) in shards.iter_mut().enumerate() {
        let mine = owned(i).len();
        shard.wait_changes("the owned AORs", |c| c.len() >= mine);
    }
    eprintln!(
        "{} writes acknowledged and their changes routed in {:?}",
        users.len(),
        started.elapsed()
    );
    // Nothing else comes.
    thread::sleep(Duration::from_millis(100));
    for (i, shard) in shards.iter_mut().enumerate() {
        shard.pump(Duration::from_millis(1));
        assert_eq!(
            shard.changes,
            owned(i),
            "shard {i}: its AORs, in order, and no other"
        );
        shard.changes.clear();
    }

    // A payload that is not an AOR: every shard resyncs.
    let mut publisher = lab.client(0);
    let _: i64 = redis::cmd("PUBLISH")
        .arg(CHANGES_CHANNEL)
        .arg("tel:+15551234")
        .query(&mut publisher)
        .expect("PUBLISH");
    for shard in &mut shards {
        shard.wait_changes("a resync after a payload that is no AOR", |c| {
            c == [CacheChange::Resync]
        });
        shard.changes.clear();
    }

    // More changes for shard 1 than its queue holds, not taken: a resync covers them.
    let owned: Vec<Aor> = (100..)
        .map(aor)
        .filter(|a| owner_shard(a, n) == 1)
        .take(3 * capacity)
        .collect();
    let mut pipe = redis::pipe();
    for a in &owned {
        pipe.cmd("PUBLISH").arg(CHANGES_CHANNEL).arg(a.as_str());
    }
    let _: Vec<i64> = pipe.query(&mut publisher).expect("PUBLISH");
    let full = redis_lab::wait_until(PROMPT, || {
        (thread.health().counters.changes >= u64::try_from(users.len() + 1 + owned.len()).ok()?)
            .then_some(())
    });
    assert!(
        full.is_some(),
        "changes not received: {:?}",
        thread.health()
    );
    thread::sleep(Duration::from_millis(100));
    let shard = &mut shards[1];
    shard.pump(Duration::from_millis(1));
    assert_eq!(
        shard.changes.first(),
        Some(&CacheChange::Resync),
        "the resync first: {:?}",
        shard.changes
    );
    let queued: Vec<CacheChange> = owned[..capacity].iter().map(changed).collect();
    assert_eq!(shard.changes[1..], queued, "what fitted, kept in order");
    for (i, shard) in shards.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
        shard.pump(Duration::from_millis(1));
        assert!(shard.changes.is_empty(), "shard {i}: {:?}", shard.changes);
    }
    thread.shutdown();
}

/// After a failover the data subscription is on the new master: every shard got a resync for
/// the gap, and a write through the new master reaches its owner shard as a change.
#[test]
fn after_a_failover_the_subscription_is_back_with_a_resync() {
    let mut lab = RedisLab::start(LabOptions::ha());
    let (thread, links) = RedisThread::start(ha_config(&lab), 2, 64).expect("start");
    let mut shards: Vec<Shard> = links.into_iter().map(Shard::new).collect();
    wait_subscribed(&thread, &lab.redis_addr(0).to_string());
    for shard in &mut shards {
        shard.wait_changes("the first resync", |c| c == [CacheChange::Resync]);
        shard.changes.clear();
    }
    let old = lab.redis_addr(0);
    let killed = Instant::now();
    lab.kill(0);
    let new = lab.wait_for_failover(old, Duration::from_secs(20));
    wait_subscribed(&thread, &lab.redis_addr(new).to_string());
    let back = killed.elapsed();
    for shard in &mut shards {
        shard.wait_changes("a resync after the failover", |c| {
            c.contains(&CacheChange::Resync)
        });
        shard.changes.clear();
    }
    let user = 7;
    let owner = owner_shard(&aor(user), shards.len());
    match shards[1 - owner].write(user) {
        Outcome::Acked(reply) => assert_added(user, &reply),
        other => panic!("{other:?}"),
    }
    shards[owner].wait_changes("the change from the new master", |c| !c.is_empty());
    assert_eq!(shards[owner].changes, [changed(&aor(user))]);
    eprintln!("subscribed on redis-{new} {back:?} after the kill");
    let health = thread.health();
    assert!(health.counters.resyncs >= 2, "{health:?}");
    thread.shutdown();
}

/// With the master SIGKILLed and too few sentinels for a failover, a read of an AOR written
/// before is served by a replica (the sentinels listed it), within the request timeout, while
/// writes are held.
#[test]
fn a_read_is_served_by_a_replica_while_no_master_is_known() {
    let mut lab = RedisLab::start(LabOptions::ha());
    let (thread, mut links) = RedisThread::start(ha_config(&lab), 1, 64).expect("start");
    let mut shard = Shard::new(links.pop().expect("one link"));
    let user = 42;
    match shard.write(user) {
        Outcome::Acked(reply) => assert_added(user, &reply),
        other => panic!("{other:?}"),
    }
    let (outcome, _) = shard.read(1000, user);
    assert_found(user, &outcome);
    lab.wait_replicas_in_sync(0, Duration::from_secs(10));
    let known = redis_lab::wait_until(PROMPT, || {
        (thread.health().replicas.len() == 2).then_some(())
    });
    assert!(
        known.is_some(),
        "replicas not learnt: {:?}",
        thread.health()
    );

    lab.kill_sentinel(1);
    lab.kill_sentinel(2);
    lab.kill(0);
    let lost = redis_lab::wait_until(PROMPT, || {
        (thread.health().state != HaState::Ready).then_some(())
    });
    assert!(lost.is_some(), "master not given up: {:?}", thread.health());
    shard
        .link
        .submit(user + 1, register_write(user + 1))
        .expect("submit");
    let (outcome, took) = shard.read(1001, user);
    assert_found(user, &outcome);
    assert!(took < Duration::from_secs(1), "read took {took:?}");
    let health = thread.health();
    assert!(health.counters.replica_reads >= 1, "{health:?}");
    assert_ne!(health.state, HaState::Ready);
    assert!(
        !shard.outcomes.contains_key(&(user + 1)),
        "the write is held, not answered"
    );
    eprintln!("a replica served the read in {took:?} with no master known");
    thread.shutdown();
}

/// Sentinel discovery of the lab's master, with its password and a 500 ms request timeout.
fn ha_config(lab: &RedisLab) -> HaConfig {
    let sentinels = (0..3)
        .map(|i| Arc::from(lab.sentinel_addr(i).to_string()))
        .collect();
    let mut config = base_config(Discovery::Sentinel {
        sentinels,
        master_name: lab.options().master_name.clone(),
        quorum: 2,
        credentials: Credentials::default(),
    });
    config.credentials.password = lab.password().map(str::to_owned);
    config.request_timeout = Duration::from_millis(500);
    config
}
