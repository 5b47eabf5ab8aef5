//! The shard core in Redis mode, without sockets or Redis: a REGISTER becomes a script call for
//! the Redis thread, and the 200 OK goes out only with the database's answer. The fake database
//! here does what `register.lua` does for a fresh AOR (stores each contact's payload with the
//! fields the script adds); the real script runs in the registrar's and the node's Redis tests.

mod core_support;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipshard_engine::core::{
    CacheChange, CoreSettings, DatabaseResult, Inbound, Output, RegistrarDb, ShardCore,
};
use sipshard_net::{HeaderName, Message, Transport};
use sipshard_registrar::redis_data::{LOOKUP_SCRIPT, REGISTER_SCRIPT, Reply, ScriptCall};

const PROXY: &str = "127.0.0.1:5060";
const ALICE: &str = "127.0.0.2:5070";
const WAIT_LIMIT: Duration = Duration::from_secs(25);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn settings() -> CoreSettings {
    CoreSettings {
        registrar_db: RegistrarDb::Redis {
            node: "127.0.0.1:5060".into(),
            wait_limit: WAIT_LIMIT,
        },
        ..core_support::core_settings()
    }
}

/// What the core asked for after one input.
#[derive(Default)]
struct Outputs {
    sent: Vec<Vec<u8>>,
    sent_to: Vec<SocketAddr>,
    database: Vec<(u64, ScriptCall)>,
}

impl Outputs {
    /// The status codes of the responses sent (requests left out).
    fn statuses(&self) -> Vec<u16> {
        self.sent
            .iter()
            .filter_map(|b| Message::parse_datagram(b).unwrap().status())
            .collect()
    }
}

fn split(out: Vec<Output>) -> Outputs {
    let mut outputs = Outputs::default();
    for o in out {
        match o {
            Output::Send { bytes, to, .. } => {
                outputs.sent.push(bytes.to_vec());
                outputs.sent_to.push(to);
            }
            Output::ToDatabase { token, call } => outputs.database.push((token, call)),
            Output::ToShard { .. } => panic!("one shard sends nothing to other shards"),
        }
    }
    outputs
}

struct Sim {
    core: ShardCore,
    now: Instant,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            core: ShardCore::new(0, 1, settings()),
            now: Instant::now(),
        }
    }

    fn receive(&mut self, bytes: &str) -> Outputs {
        let inbound = Inbound {
            transport: Transport::Udp,
            local: addr(PROXY),
            remote: addr(ALICE),
            conn: None,
        };
        let mut out = Vec::new();
        self.core
            .on_datagram(bytes.as_bytes(), inbound, self.now, &mut out);
        split(out)
    }

    fn database(&mut self, token: u64, result: DatabaseResult) -> Outputs {
        let mut out = Vec::new();
        self.core
            .on_database_result(token, result, self.now, &mut out);
        split(out)
    }

    fn advance(&mut self, by: Duration) -> Outputs {
        let end = self.now + by;
        let mut out = Vec::new();
        while let Some(deadline) = self.core.next_deadline().filter(|d| *d <= end) {
            self.now = deadline.max(self.now);
            self.core.on_timers(self.now, &mut out);
        }
        self.now = end;
        split(out)
    }
}

fn register(call_id: &str, cseq: u32, contact: Option<&str>) -> String {
    let contact = contact.map_or(String::new(), |c| format!("Contact: <{c}>\r\n"));
    format!(
        "REGISTER sip:example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP {ALICE};branch=z9hG4bK-{call_id}-{cseq}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.org>;tag=t{call_id}\r\n\
To: <sip:alice@example.org>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
{contact}Expires: 600\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// The fake database's clock, in server milliseconds.
const SERVER_MS: u64 = 1_800_000_000_000;

/// What `register.lua` answers for a REGISTER of new contacts on an empty AOR: each contact
/// added, stored with the fields the script writes.
fn script_reply(call: &ScriptCall) -> Reply {
    assert_eq!(call.script.sha1, REGISTER_SCRIPT.sha1);
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let (call_id, cseq) = (text(&call.args[2]), text(&call.args[3]));
    let mut outcomes = Vec::new();
    let mut stored = Vec::new();
    for (ord, contact) in call.args[6..].chunks(3).enumerate() {
        let granted_s: u64 = text(&contact[1]).parse().unwrap();
        let payload = text(&contact[2]);
        let body = payload.strip_suffix('}').unwrap();
        let value = format!(
            "{body},\"v\":1,\"cid\":\"{call_id}\",\"cseq\":{cseq},\"reg\":{SERVER_MS},\
             \"upd\":{SERVER_MS},\"exp\":{},\"ord\":{ord}}}",
            SERVER_MS + granted_s * 1000
        );
        outcomes.push(Reply::Bulk(b"added".to_vec()));
        stored.push(Reply::Bulk(contact[0].clone()));
        stored.push(Reply::Bulk(value.into_bytes()));
    }
    Reply::Array(vec![
        Reply::Int(SERVER_MS as i64),
        Reply::Int(1),
        Reply::Array(outcomes),
        Reply::Int(0),
        Reply::Array(stored),
    ])
}

fn header(bytes: &[u8], name: HeaderName) -> Option<String> {
    let msg = Message::parse_datagram(bytes).unwrap();
    msg.value(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn other_header(bytes: &[u8], name: &str) -> Option<String> {
    let msg = Message::parse_datagram(bytes).unwrap();
    msg.other_value(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn the_200_waits_for_the_database_and_lists_what_it_holds() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("a1", 5, Some("sip:alice@127.0.0.2:5070")));
    assert!(out.sent.is_empty(), "nothing is answered before the write");
    let [(token, call)] = <[_; 1]>::try_from(out.database).unwrap();
    assert_eq!(call.script.sha1, REGISTER_SCRIPT.sha1);

    // A retransmission is absorbed by the transaction: no second write.
    let again = sim.receive(&register("a1", 5, Some("sip:alice@127.0.0.2:5070")));
    assert!(again.sent.is_empty() && again.database.is_empty());

    sim.now += Duration::from_millis(3);
    let done = sim.database(token, DatabaseResult::Reply(script_reply(&call)));
    assert_eq!(done.statuses(), [200]);
    let contact = header(&done.sent[0], HeaderName::Contact).unwrap();
    // Times are anchored at the server time the reply carries: a full 600 s from now.
    assert_eq!(contact, "<sip:alice@127.0.0.2:5070>;expires=600");

    // The owner's cache now holds the binding: an older CSeq of the same Call-ID is refused
    // at once, without a write (§10.3 step 7).
    let old = sim.receive(&register("a1", 3, Some("sip:alice@127.0.0.2:5070")));
    assert_eq!(old.statuses(), [400]);
    assert!(old.database.is_empty());
}

#[test]
fn a_fetch_reads_the_database() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("f1", 1, None));
    assert!(out.sent.is_empty());
    let [(token, call)] = <[_; 1]>::try_from(out.database).unwrap();
    assert_eq!(call.script.sha1, LOOKUP_SCRIPT.sha1);
    let stored = format!(
        "{{\"uri\":\"sip:alice@127.0.0.2:5070\",\"echo\":\"<sip:alice@127.0.0.2:5070>\",\
         \"src\":{{\"t\":\"udp\",\"r\":\"{ALICE}\",\"l\":\"{PROXY}\",\"n\":\"other-node\"}},\
         \"vms\":true,\"m\":{{\"b\":\"sip:alice@127.0.0.2:5070\",\"p\":\"\"}},\"v\":1,\
         \"cid\":\"x\",\"cseq\":4,\"reg\":{SERVER_MS},\"upd\":{SERVER_MS},\"exp\":{},\"ord\":0}}",
        SERVER_MS + 120_000
    );
    let reply = Reply::Array(vec![
        Reply::Int(SERVER_MS as i64),
        Reply::Array(vec![
            Reply::Bulk(b"uri:sip:alice@127.0.0.2:5070".to_vec()),
            Reply::Bulk(stored.into_bytes()),
        ]),
    ]);
    let done = sim.database(token, DatabaseResult::Reply(reply));
    assert_eq!(done.statuses(), [200]);
    assert_eq!(
        header(&done.sent[0], HeaderName::Contact).unwrap(),
        "<sip:alice@127.0.0.2:5070>;expires=120"
    );
}

#[test]
fn no_master_in_time_is_a_503_with_retry_after() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("b1", 1, Some("sip:alice@127.0.0.2:5070")));
    let (token, _) = out.database.into_iter().next().unwrap();
    let done = sim.database(token, DatabaseResult::Unavailable { retry_after_s: 7 });
    assert_eq!(done.statuses(), [503]);
    assert_eq!(
        other_header(&done.sent[0], "Retry-After").as_deref(),
        Some("7")
    );
    // A late answer for the same token changes nothing.
    let late = sim.database(token, DatabaseResult::Unavailable { retry_after_s: 7 });
    assert!(late.sent.is_empty());
    assert_eq!(sim.core.counters().database_unavailable, 1);
}

#[test]
fn a_database_that_never_answers_gets_a_503_at_the_wait_limit() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("c1", 1, Some("sip:alice@127.0.0.2:5070")));
    let (token, call) = out.database.into_iter().next().unwrap();
    assert!(
        sim.advance(WAIT_LIMIT - Duration::from_secs(1))
            .sent
            .is_empty()
    );
    assert_eq!(sim.advance(Duration::from_secs(2)).statuses(), [503]);
    // The reply that finally comes finds nothing waiting.
    let late = sim.database(token, DatabaseResult::Reply(script_reply(&call)));
    assert!(late.sent.is_empty());
}

#[test]
fn an_unreadable_reply_is_a_503_not_a_200() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("d1", 1, Some("sip:alice@127.0.0.2:5070")));
    let (token, _) = out.database.into_iter().next().unwrap();
    let reply = Reply::Error("ERR something went wrong".into());
    assert_eq!(
        sim.database(token, DatabaseResult::Reply(reply)).statuses(),
        [503]
    );
}

fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:alice@example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.9:5090;branch=z9hG4bK-inv-{call_id}\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.org>;tag=b{call_id}\r\n\
To: <sip:alice@example.org>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@127.0.0.9:5090>\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// What `lookup.lua` answers for an AOR that another node registered: one UDP contact.
fn lookup_reply(contact_host_port: &str, node: &str) -> Reply {
    let stored = format!(
        "{{\"uri\":\"sip:alice@{contact_host_port}\",\"echo\":\"<sip:alice@{contact_host_port}>\",\
         \"src\":{{\"t\":\"udp\",\"r\":\"{contact_host_port}\",\"l\":\"{PROXY}\",\"c\":\"7\",\"n\":\"{node}\"}},\
         \"vms\":true,\"m\":{{\"b\":\"sip:alice@{contact_host_port}\",\"p\":\"\"}},\"v\":1,\
         \"cid\":\"x\",\"cseq\":4,\"reg\":{SERVER_MS},\"upd\":{SERVER_MS},\"exp\":{},\"ord\":0}}",
        SERVER_MS + 120_000
    );
    Reply::Array(vec![
        Reply::Int(SERVER_MS as i64),
        Reply::Array(vec![
            Reply::Bulk(format!("uri:sip:alice@{contact_host_port}").into_bytes()),
            Reply::Bulk(stored.into_bytes()),
        ]),
    ])
}

fn invite_sent_to(out: &Outputs) -> Vec<SocketAddr> {
    out.sent_to
        .iter()
        .zip(&out.sent)
        .filter(|(_, b)| {
            Message::parse_datagram(b).unwrap().method() == Some(sipshard_net::Method::Invite)
        })
        .map(|(to, _)| *to)
        .collect()
}

#[test]
fn a_callee_the_cache_does_not_hold_is_read_from_redis() {
    let mut sim = Sim::new();
    let out = sim.receive(&invite("i1"));
    assert_eq!(out.statuses(), [100], "Trying at once, then the lookup");
    let [(token, call)] = <[_; 1]>::try_from(out.database).unwrap();
    assert_eq!(call.script.sha1, LOOKUP_SCRIPT.sha1);
    let done = sim.database(
        token,
        DatabaseResult::Reply(lookup_reply("127.0.0.4:5080", "other-node")),
    );
    assert_eq!(invite_sent_to(&done), [addr("127.0.0.4:5080")]);

    // Now cached: the next INVITE is forwarded without a read.
    let again = sim.receive(&invite("i2"));
    assert!(again.database.is_empty());
    assert_eq!(invite_sent_to(&again), [addr("127.0.0.4:5080")]);
}

#[test]
fn a_callee_that_cannot_be_read_gets_a_503_not_a_404() {
    let mut sim = Sim::new();
    let out = sim.receive(&invite("i3"));
    let (token, _) = out.database.into_iter().next().unwrap();
    let done = sim.database(token, DatabaseResult::Unavailable { retry_after_s: 4 });
    assert_eq!(done.statuses(), [503]);
    assert_eq!(
        other_header(&done.sent[0], "Retry-After").as_deref(),
        Some("4")
    );
}

#[test]
fn a_callee_registered_here_is_routed_from_the_cache() {
    let mut sim = Sim::new();
    let out = sim.receive(&register("r1", 1, Some("sip:alice@127.0.0.2:5070")));
    let (token, call) = out.database.into_iter().next().unwrap();
    assert_eq!(
        sim.database(token, DatabaseResult::Reply(script_reply(&call)))
            .statuses(),
        [200]
    );
    let call_out = sim.receive(&invite("i4"));
    assert!(call_out.database.is_empty(), "no read for a cached AOR");
    assert_eq!(invite_sent_to(&call_out), [addr(ALICE)]);
}

#[test]
fn a_change_notification_makes_the_next_lookup_read_redis_again() {
    let mut sim = Sim::new();
    let out = sim.receive(&invite("c1"));
    let (token, _) = out.database.into_iter().next().unwrap();
    sim.database(
        token,
        DatabaseResult::Reply(lookup_reply("127.0.0.4:5080", "other-node")),
    );
    // Another node re-registered alice: the cached copy goes.
    let alice = sipshard_registrar::Aor::parse("sip:alice@example.org").unwrap();
    sim.core.on_cache_change(CacheChange::Changed(alice));
    let out = sim.receive(&invite("c2"));
    let [(token, call)] = <[_; 1]>::try_from(out.database).unwrap();
    assert_eq!(call.script.sha1, LOOKUP_SCRIPT.sha1);
    let done = sim.database(
        token,
        DatabaseResult::Reply(lookup_reply("127.0.0.5:5080", "other-node")),
    );
    assert_eq!(invite_sent_to(&done), [addr("127.0.0.5:5080")]);

    // A resync drops everything.
    sim.core.on_cache_change(CacheChange::Resync);
    assert_eq!(sim.receive(&invite("c3")).database.len(), 1);
}

#[test]
fn an_answer_overtaken_by_a_change_is_used_but_not_cached() {
    let mut sim = Sim::new();
    let out = sim.receive(&invite("o1"));
    let (token, _) = out.database.into_iter().next().unwrap();
    // The change arrives while the read is out: what the read returns may be older.
    sim.core.on_cache_change(CacheChange::Resync);
    let done = sim.database(
        token,
        DatabaseResult::Reply(lookup_reply("127.0.0.4:5080", "other-node")),
    );
    assert_eq!(invite_sent_to(&done), [addr("127.0.0.4:5080")]);
    assert_eq!(
        sim.receive(&invite("o2")).database.len(),
        1,
        "not cached: read again"
    );

    // The same for a REGISTER's write.
    let out = sim.receive(&register("o3", 1, Some("sip:alice@127.0.0.2:5070")));
    let (token, call) = out.database.into_iter().next().unwrap();
    sim.core.on_cache_change(CacheChange::Resync);
    assert_eq!(
        sim.database(token, DatabaseResult::Reply(script_reply(&call)))
            .statuses(),
        [200]
    );
    assert_eq!(sim.receive(&invite("o4")).database.len(), 1);
}
