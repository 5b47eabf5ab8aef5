//! The registrar's Redis layout and scripts against real Redis processes (the lab): RFC 3261
//! §10.3 ordering on the server, replays, expiry by server time, `*`, eviction, PUBLISH, the
//! read path on a replica, and a failover of the lab itself.

#[path = "support/redis_lab.rs"]
mod redis_lab;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use redis_lab::{LabOptions, RedisLab};
use sipshard_registrar::redis_data::{
    self, CHANGES_CHANNEL, ContactOutcome, LOOKUP_SCRIPT, REGISTER_SCRIPT, RegisterReply, Reply,
    ScriptCall,
};
use sipshard_registrar::{
    Aor, Domains, RegisterRequest, RegistrarConfig, RequestContact, Source, Transport,
};

const AOR: &str = "sip:alice@example.com";

fn config() -> RegistrarConfig {
    RegistrarConfig {
        domains: Domains::list(["example.com"]).unwrap(),
        max_expires_s: 7200,
        min_expires_s: 0,
        default_expires_s: 3600,
        max_contacts_per_aor: 3,
        max_aors_per_shard: 1024,
    }
}

fn contact(uri: &str, expires_s: u32) -> RequestContact {
    RequestContact {
        uri: uri.into(),
        echo_value: format!("<{uri}>").into(),
        q_millis: None,
        expires_s: Some(expires_s),
        instance: None,
        reg_id: None,
    }
}

fn request(call_id: &str, cseq: u32, contacts: Vec<RequestContact>) -> RegisterRequest {
    RegisterRequest {
        aor: Aor::parse(AOR).unwrap(),
        call_id: call_id.into(),
        cseq,
        contacts,
        star: false,
        expires_s: None,
        path: Vec::new(),
        path_supported: false,
        outbound_supported: false,
        source: Source {
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().unwrap(),
            local: "192.0.2.9:5060".parse().unwrap(),
            connection: None,
        },
        via_matches_source: true,
        user_agent: None,
    }
}

fn star(call_id: &str, cseq: u32) -> RegisterRequest {
    RegisterRequest {
        star: true,
        expires_s: Some(0),
        ..request(call_id, cseq, Vec::new())
    }
}

fn to_reply(value: redis::Value) -> Reply {
    match value {
        redis::Value::Nil => Reply::Nil,
        redis::Value::Int(n) => Reply::Int(n),
        redis::Value::BulkString(b) => Reply::Bulk(b),
        redis::Value::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        redis::Value::SimpleString(s) => Reply::Status(s),
        redis::Value::Okay => Reply::Status("OK".into()),
        other => Reply::Error(format!("not RESP2: {other:?}")),
    }
}

/// Sends one command; a server error becomes `Reply::Error`.
fn send(con: &mut redis::Connection, command: Vec<Vec<u8>>) -> Reply {
    let mut cmd = redis::Cmd::new();
    for arg in command {
        cmd.arg(arg);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(value) => to_reply(value),
        // As the server wrote it: the code first (NOSCRIPT, READONLY...).
        Err(e) => Reply::Error(match e.code() {
            Some(code) => format!("{code} {}", e.detail().unwrap_or_default()),
            None => e.to_string(),
        }),
    }
}

/// EVALSHA, then EVAL on NOSCRIPT: what the Redis thread does.
fn call(con: &mut redis::Connection, call: &ScriptCall) -> Reply {
    match send(con, call.evalsha()) {
        Reply::Error(e) if e.contains("NOSCRIPT") => send(con, call.eval()),
        reply => reply,
    }
}

fn register(con: &mut redis::Connection, req: &RegisterRequest) -> RegisterReply {
    let script_call = redis_data::register_call(req, &config(), "node-1").unwrap();
    let reply = call(con, &script_call);
    redis_data::decode_register(&reply, Instant::now())
        .unwrap_or_else(|e| panic!("register {req:?}: {e} in {reply:?}"))
}

/// (uri, Call-ID, CSeq) of every live binding, in lookup order.
fn summary(reply: &RegisterReply) -> Vec<(String, String, u32)> {
    reply
        .bindings
        .iter()
        .map(|b| (b.uri.to_string(), b.call_id.to_string(), b.cseq))
        .collect()
}

fn key() -> Vec<u8> {
    redis_data::aor_key(&Aor::parse(AOR).unwrap())
}

/// The whole hash and its expiry time.
fn snapshot(con: &mut redis::Connection) -> (BTreeMap<String, String>, i64) {
    let hash: BTreeMap<String, String> = redis::cmd("HGETALL").arg(key()).query(con).unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME").arg(key()).query(con).unwrap();
    (hash, at)
}

fn single() -> (RedisLab, redis::Connection) {
    let lab = RedisLab::start(LabOptions::default());
    let con = lab.client(0);
    (lab, con)
}

#[test]
fn embedded_sha1s_are_what_redis_computes() {
    let (_lab, mut con) = single();
    for script in [&REGISTER_SCRIPT, &LOOKUP_SCRIPT] {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.source)
            .query(&mut con)
            .unwrap();
        assert_eq!(sha, script.sha1, "{}", script.name);
    }
}

#[test]
fn cseq_ordering_per_call_id() {
    let (_lab, mut con) = single();
    let c = || vec![contact("sip:alice@192.0.2.1", 600)];
    let first = register(&mut con, &request("cid-1", 5, c()));
    assert_eq!(first.outcomes, [ContactOutcome::Added]);
    let stored = snapshot(&mut con);
    // §10.3 step 7: same Call-ID, CSeq not above the stored one: left alone.
    for cseq in [4, 5] {
        let reply = register(&mut con, &request("cid-1", cseq, c()));
        assert_eq!(reply.outcomes, [ContactOutcome::Stale]);
        assert!(!reply.changed);
        assert_eq!(snapshot(&mut con), stored);
    }
    let newer = register(&mut con, &request("cid-1", 6, c()));
    assert_eq!(newer.outcomes, [ContactOutcome::Refreshed]);
    // Another Call-ID is another client session: it replaces, whatever its CSeq.
    thread::sleep(Duration::from_millis(25));
    let other = register(&mut con, &request("cid-2", 1, c()));
    assert_eq!(other.outcomes, [ContactOutcome::Refreshed]);
    assert_eq!(
        summary(&other),
        [("sip:alice@192.0.2.1".into(), "cid-2".into(), 1)]
    );
    // A refresh keeps the registration time (each reply anchors server times at its own
    // arrival, so compare within a few milliseconds).
    let (registered, updated) = (
        other.bindings[0].registered_at,
        other.bindings[0].updated_at,
    );
    let drift = registered.max(first.bindings[0].registered_at)
        - registered.min(first.bindings[0].registered_at);
    assert!(drift < Duration::from_millis(10), "{drift:?}");
    assert!(updated - registered >= Duration::from_millis(20));
}

#[test]
fn contacts_match_by_instance_and_uri_equivalence() {
    let (_lab, mut con) = single();
    let mut device = contact("sip:alice@192.0.2.1:5060", 600);
    device.instance = Some("<urn:uuid:A>".into());
    register(&mut con, &request("c", 1, vec![device.clone()]));
    // Same instance (case-insensitive), new address and now a reg-id: the same binding,
    // under the new key.
    device.uri = "sip:alice@198.51.100.7:5060".into();
    device.instance = Some("<URN:UUID:a>".into());
    device.reg_id = Some(1);
    let moved = register(&mut con, &request("c", 2, vec![device]));
    assert_eq!(moved.outcomes, [ContactOutcome::Refreshed]);
    assert_eq!(moved.bindings.len(), 1);
    assert_eq!(&*moved.bindings[0].field, "inst:<urn:uuid:a>;reg-id=1");
    let (hash, _) = snapshot(&mut con);
    assert_eq!(
        hash.keys().collect::<Vec<_>>(),
        ["inst:<urn:uuid:a>;reg-id=1"]
    );

    // §19.1.4: host case, escapes and a parameter only one side has do not matter.
    register(
        &mut con,
        &request("c", 3, vec![contact("sip:bob@HOST.example;lr", 600)]),
    );
    let same = register(
        &mut con,
        &request("c", 4, vec![contact("sip:%62ob@host.example", 600)]),
    );
    assert_eq!(same.outcomes, [ContactOutcome::Refreshed]);
    assert_eq!(same.bindings.len(), 2);
    // ... but transport does.
    let other = register(
        &mut con,
        &request(
            "c",
            5,
            vec![contact("sip:bob@host.example;transport=tcp", 600)],
        ),
    );
    assert_eq!(other.outcomes, [ContactOutcome::Added]);
    let removed = register(
        &mut con,
        &request("c", 6, vec![contact("sip:bob@host.example", 0)]),
    );
    assert_eq!(removed.outcomes, [ContactOutcome::Removed]);
    assert_eq!(removed.bindings.len(), 2);
}

#[test]
fn replays_leave_the_same_hash() {
    let (_lab, mut con) = single();
    let writes = [
        request(
            "c1",
            1,
            vec![
                contact("sip:a@192.0.2.1", 600),
                contact("sip:b@192.0.2.1", 900),
            ],
        ),
        request("c2", 1, vec![contact("sip:c@192.0.2.1", 300)]),
        request("c1", 2, vec![contact("sip:a@192.0.2.1", 0)]),
    ];
    for w in &writes {
        register(&mut con, w);
        let after = snapshot(&mut con);
        for _ in 0..5 {
            let replay = register(&mut con, w);
            assert!(!replay.changed, "{w:?}");
            assert_eq!(snapshot(&mut con), after, "replaying {w:?}");
        }
    }
    // A journal replayed in order after a failover ends where it ended the first time.
    let end = snapshot(&mut con);
    assert_eq!(end.0.len(), 2);
    for w in &writes {
        register(&mut con, w);
    }
    assert_eq!(snapshot(&mut con), end);
}

#[test]
fn expiry_follows_server_time() {
    let (_lab, mut con) = single();
    let short = register(
        &mut con,
        &request("c", 1, vec![contact("sip:a@192.0.2.1", 1)]),
    );
    let (_, expire_at) = snapshot(&mut con);
    assert_eq!(
        expire_at,
        short.server_time_ms as i64 + 1000,
        "PEXPIREAT at the expiry"
    );
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut con).unwrap();
    let server_now = secs * 1000 + micros / 1000;
    assert!(server_now.abs_diff(short.server_time_ms) < 1000);

    let both = register(
        &mut con,
        &request("c", 2, vec![contact("sip:b@192.0.2.1", 60)]),
    );
    assert_eq!(both.bindings.len(), 2);
    let (_, expire_at) = snapshot(&mut con);
    assert_eq!(
        expire_at,
        both.server_time_ms as i64 + 60_000,
        "the latest expiry"
    );
    thread::sleep(Duration::from_millis(1100));
    // The key lives on (b), but a's time is up on the server: the read path drops it...
    let lookup = call(
        &mut con,
        &redis_data::lookup_call(&Aor::parse(AOR).unwrap()),
    );
    let live = redis_data::decode_lookup(&lookup, Instant::now()).unwrap();
    assert_eq!(live.bindings.len(), 1);
    assert_eq!(&*live.bindings[0].uri, "sip:b@192.0.2.1");
    // ... and the next write removes it from the hash.
    register(
        &mut con,
        &request("d", 1, vec![contact("sip:c@192.0.2.1", 60)]),
    );
    assert_eq!(snapshot(&mut con).0.len(), 2);

    // A key whose last binding expired is gone (Redis expires it by PEXPIREAT).
    let bob = Aor::parse("sip:bob@example.com").unwrap();
    let mut req = request("c", 1, vec![contact("sip:bob@192.0.2.1", 1)]);
    req.aor = bob.clone();
    register(&mut con, &req);
    thread::sleep(Duration::from_millis(1100));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis_data::aor_key(&bob))
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn star_removes_all_but_bindings_of_newer_requests() {
    let (_lab, mut con) = single();
    register(
        &mut con,
        &request("c1", 1, vec![contact("sip:a@192.0.2.1", 600)]),
    );
    register(
        &mut con,
        &request("c2", 9, vec![contact("sip:b@192.0.2.1", 600)]),
    );
    let all = register(&mut con, &star("c1", 2));
    assert_eq!(all.outcomes, [ContactOutcome::Removed]);
    assert!(all.bindings.is_empty());
    let exists: i64 = redis::cmd("EXISTS").arg(key()).query(&mut con).unwrap();
    assert_eq!(exists, 0, "an empty AOR has no key");
    assert_eq!(
        register(&mut con, &star("c1", 3)).outcomes,
        [ContactOutcome::Absent]
    );

    // §10.3 step 6: a "*" older than a binding's request (same Call-ID) leaves it.
    register(
        &mut con,
        &request("c1", 5, vec![contact("sip:a@192.0.2.1", 600)]),
    );
    register(
        &mut con,
        &request("c3", 1, vec![contact("sip:c@192.0.2.1", 600)]),
    );
    let partial = register(&mut con, &star("c1", 4));
    assert_eq!(partial.outcomes, [ContactOutcome::Stale]);
    assert_eq!(
        summary(&partial),
        [("sip:a@192.0.2.1".into(), "c1".into(), 5)]
    );
}

#[test]
fn least_recently_updated_evicted_past_max_contacts() {
    let (_lab, mut con) = single();
    for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
        register(
            &mut con,
            &request(
                "c",
                i as u32 + 1,
                vec![contact(&format!("sip:{user}@192.0.2.1"), 600)],
            ),
        );
        thread::sleep(Duration::from_millis(3));
    }
    register(
        &mut con,
        &request("c", 4, vec![contact("sip:a@192.0.2.1", 600)]),
    );
    thread::sleep(Duration::from_millis(3));
    let full = register(
        &mut con,
        &request("c", 5, vec![contact("sip:d@192.0.2.1", 600)]),
    );
    assert_eq!(full.evicted, 1);
    let uris: Vec<String> = full.bindings.iter().map(|b| b.uri.to_string()).collect();
    // Lookup order: most recently updated first.
    assert_eq!(
        uris,
        ["sip:d@192.0.2.1", "sip:a@192.0.2.1", "sip:c@192.0.2.1"]
    );
    let (hash, _) = snapshot(&mut con);
    assert_eq!(hash.len(), 3);
}

#[test]
fn changes_are_published() {
    let (lab, mut con) = single();
    let mut subscriber = lab.client(0);
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(CHANGES_CHANNEL).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let req = request("c", 1, vec![contact("sip:a@192.0.2.1", 600)]);
    register(&mut con, &req);
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), CHANGES_CHANNEL);
    assert_eq!(msg.get_payload::<String>().unwrap(), AOR);
    // A replay changes nothing and publishes nothing.
    register(&mut con, &req);
    let err = pubsub.get_message().unwrap_err();
    assert!(err.is_timeout(), "expected no message, got {err}");
}

#[test]
fn lookup_on_a_replica() {
    let lab = RedisLab::start(LabOptions {
        replicas: 1,
        password: Some("pw-lab".into()),
        ..LabOptions::default()
    });
    let mut master = lab.client(0);
    let mut replica = lab.client(1);
    let mut c = contact("sip:a@192.0.2.1", 600);
    c.q_millis = Some(500);
    let written = register(
        &mut master,
        &request("c", 1, vec![c, contact("sip:b@192.0.2.1", 600)]),
    );
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut master)
        .unwrap();
    assert_eq!(acked, 1);
    let lookup = call(
        &mut replica,
        &redis_data::lookup_call(&Aor::parse(AOR).unwrap()),
    );
    let read = redis_data::decode_lookup(&lookup, Instant::now()).unwrap();
    let fields = |bs: &[redis_data::StoredBinding]| -> Vec<(String, Option<u16>)> {
        bs.iter().map(|b| (b.uri.to_string(), b.q_millis)).collect()
    };
    assert_eq!(fields(&read.bindings), fields(&written.bindings));
    assert_eq!(
        fields(&read.bindings),
        [
            ("sip:b@192.0.2.1".into(), None),
            ("sip:a@192.0.2.1".into(), Some(500))
        ]
    );
    // The register script declares that it writes: a replica refuses it before it runs.
    let refused = call(
        &mut replica,
        &redis_data::register_call(&request("c", 2, Vec::new()), &config(), "n").unwrap(),
    );
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("READONLY")),
        "{refused:?}"
    );
}

/// Validates the lab for the HA end-to-end tests: with 3 servers and 3 sentinels (quorum 2),
/// SIGKILL of the master makes the sentinels promote a replica, and the helpers report it.
#[test]
fn lab_failover_after_master_kill() {
    let mut lab = RedisLab::start(LabOptions::ha());
    let old = lab.redis_addr(0);
    assert_eq!(lab.current_master_per_sentinels(), vec![Some(old); 3]);
    let killed = Instant::now();
    lab.kill(0);
    let new = lab.wait_for_failover(old, Duration::from_secs(20));
    eprintln!("failover to redis-{new} after {:?}", killed.elapsed());
    assert_ne!(new, 0);
    assert_eq!(
        lab.current_master_per_sentinels(),
        vec![Some(lab.redis_addr(new)); 3]
    );
    let other = 3 - new;
    lab.wait_replicas_in_sync(new, Duration::from_secs(20));
    assert_eq!(lab.role(other).as_deref(), Some("slave"));
}
