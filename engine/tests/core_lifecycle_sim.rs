//! The shard core's side of operations, without sockets: what draining refuses and lets through,
//! what counts as a request in progress (what the graceful stop waits for), the counters the
//! metrics are made of, and the operator's view of a binding.

mod core_support;

use std::net::SocketAddr;
use std::time::Instant;

use sipshard_engine::core::{Inbound, Output, ShardCore};
use sipshard_engine::metrics;
use sipshard_net::{Message, Method, Transport};
use sipshard_registrar::Aor;

const PROXY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.9:5090";
const ALICE: &str = "127.0.0.2:5070";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// Feeds one datagram from `from`; returns what the core sent, as text.
fn receive(core: &mut ShardCore, from: &str, bytes: &str, now: Instant) -> Vec<String> {
    let inbound = Inbound {
        transport: Transport::Udp,
        local: addr(PROXY),
        remote: addr(from),
        conn: None,
    };
    let mut out = Vec::new();
    core.on_datagram(bytes.as_bytes(), inbound, now, &mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send { bytes, .. } => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        })
        .collect()
}

fn request(method: &str, uri: &str, to_tag: Option<&str>, branch: &str) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.org>;tag=c1\r\nTo: <{uri}>{tag}\r\n\
         Call-ID: {branch}@example.org\r\nCSeq: 1 {method}\r\nContact: <sip:carol@{CALLER}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn register_alice(core: &mut ShardCore, now: Instant) {
    let register = format!(
        "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKreg1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\nTo: <sip:alice@example.org>\r\n\
         Call-ID: reg1@example.org\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{ALICE}>\r\n\
         Expires: 600\r\nUser-Agent: test-phone\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = receive(core, ALICE, &register, now);
    assert!(sent[0].starts_with("SIP/2.0 200 "), "{sent:?}");
}

/// The response a UA writes to a request it received: its Vias, From, To with a tag, Call-ID
/// and CSeq.
fn answer(request: &str, status: &str) -> String {
    let msg = Message::parse_datagram(request.as_bytes()).expect("a request");
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in msg
        .as_bytes()
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
    {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => response.push_str(&format!("{line}\r\n")),
            "to" => response.push_str(&format!("{line};tag=alice\r\n")),
            _ => {}
        }
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    response
}

#[test]
fn draining_refuses_new_requests_and_lets_dialogs_and_calls_in_progress_finish() {
    let now = Instant::now();
    let mut core = ShardCore::new(0, 1, core_support::core_settings());
    register_alice(&mut core, now);

    // A call rings at alice before the stop: it is in progress.
    let invite = request("INVITE", "sip:alice@example.org", None, "inv1");
    let sent = receive(&mut core, CALLER, &invite, now);
    let forwarded = sent
        .iter()
        .find(|s| s.starts_with("INVITE "))
        .unwrap_or_else(|| panic!("not forwarded: {sent:?}"))
        .clone();
    assert_eq!(core.in_progress(), 1);
    receive(&mut core, ALICE, &answer(&forwarded, "180 Ringing"), now);
    assert_eq!(
        core.in_progress(),
        1,
        "a provisional response does not end it"
    );

    core.set_draining(7);

    // A new out-of-dialog request: 503 with the Retry-After given.
    let options = request("OPTIONS", "sip:127.0.0.1", None, "opt1");
    let sent = receive(&mut core, CALLER, &options, now);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].starts_with("SIP/2.0 503 "), "{sent:?}");
    assert!(sent[0].contains("\r\nRetry-After: 7\r\n"), "{sent:?}");
    // Within a dialog (a To tag): still served.
    let in_dialog = request("OPTIONS", "sip:127.0.0.1", Some("t1"), "opt2");
    let sent = receive(&mut core, CALLER, &in_dialog, now);
    assert!(sent[0].starts_with("SIP/2.0 200 "), "{sent:?}");

    // alice answers: the 200 is relayed, and nothing is in progress any more.
    let sent = receive(&mut core, ALICE, &answer(&forwarded, "200 OK"), now);
    assert!(
        sent.iter().any(|s| s.starts_with("SIP/2.0 200 ")),
        "the 200 was not relayed: {sent:?}"
    );
    assert_eq!(core.in_progress(), 0);

    let c = core.counters();
    assert_eq!(c.draining_refused, 1);
    assert_eq!(c.service_unavailable_sent, 1);
    let method = |m| c.requests_by_method[metrics::method_index(Some(m))];
    assert_eq!(method(Method::Invite), 1);
    assert_eq!(method(Method::Options), 2);
    assert_eq!(method(Method::Register), 1);
    // 180 and 200 from alice.
    assert_eq!(c.responses_received_by_class[0], 1);
    assert_eq!(c.responses_received_by_class[1], 1);
    // Sent: 100 Trying and the relayed 180 (1xx); REGISTER, in-dialog OPTIONS and the relayed
    // INVITE 200 (2xx); the draining 503 (5xx).
    assert_eq!(c.responses_sent_by_class[0], 2, "{c:?}");
    assert_eq!(c.responses_sent_by_class[1], 3, "{c:?}");
    assert_eq!(c.responses_sent_by_class[4], 1, "{c:?}");
}

#[test]
fn a_retransmission_is_counted_as_one() {
    let now = Instant::now();
    let mut core = ShardCore::new(0, 1, core_support::core_settings());
    let options = request("OPTIONS", "sip:127.0.0.1", None, "opt1");
    receive(&mut core, CALLER, &options, now);
    receive(&mut core, CALLER, &options, now);
    let c = core.counters();
    assert_eq!(c.retransmissions, 1);
    assert_eq!(
        c.requests_by_method[metrics::method_index(Some(Method::Options))],
        2
    );
    let (server, _) = core.transactions_open();
    assert_eq!(server, 1);
}

#[test]
fn operators_see_an_aors_live_bindings() {
    let now = Instant::now();
    let mut core = ShardCore::new(0, 1, core_support::core_settings());
    let alice = Aor::parse("sip:alice@example.org").expect("an AOR");
    assert!(core.bindings_of(&alice, now).is_none());
    register_alice(&mut core, now);
    let bindings = core.bindings_of(&alice, now).expect("held");
    assert_eq!(bindings.len(), 1);
    assert_eq!(&*bindings[0].uri, format!("sip:alice@{ALICE}").as_str());
    assert_eq!(bindings[0].user_agent.as_deref(), Some("test-phone"));
    assert_eq!(core.bindings_held(), (1, 1));
    // In memory mode there is no Redis to read.
    let mut out = Vec::new();
    assert_eq!(core.read_bindings(&alice, now, &mut out), None);
    assert!(out.is_empty());
}

#[test]
fn an_operators_redis_read_is_answered_even_when_redis_is_not() {
    use sipshard_engine::core::{CoreSettings, DatabaseResult, RegistrarDb};
    use std::time::Duration;
    let settings = CoreSettings {
        registrar_db: RegistrarDb::Redis {
            node: "node-a".into(),
            wait_limit: Duration::from_secs(2),
        },
        ..core_support::core_settings()
    };
    let now = Instant::now();
    let mut core = ShardCore::new(0, 1, settings);
    let alice = Aor::parse("sip:alice@example.org").expect("an AOR");
    let mut out = Vec::new();
    let first = core.read_bindings(&alice, now, &mut out).expect("a read");
    assert!(
        matches!(out.as_slice(), [Output::ToDatabase { token, call }] if *token == first && call.script.read_only),
        "{out:?}"
    );
    let second = core
        .read_bindings(&alice, now, &mut Vec::new())
        .expect("a read");
    assert_eq!(core.in_progress(), 2, "operator reads are database waits");
    // Redis refuses the first at once; the second is never answered: its wait limit ends it.
    let unavailable = DatabaseResult::Unavailable { retry_after_s: 5 };
    core.on_database_result(first, unavailable, now, &mut Vec::new());
    let reads = core.take_operator_reads();
    assert!(
        matches!(reads.as_slice(), [(t, Err(_))] if *t == first),
        "{reads:?}"
    );
    core.on_timers(now + Duration::from_secs(3), &mut Vec::new());
    let reads = core.take_operator_reads();
    assert!(
        matches!(reads.as_slice(), [(t, Err(_))] if *t == second),
        "{reads:?}"
    );
    assert_eq!(core.in_progress(), 0);
    assert!(core.take_operator_reads().is_empty());
}
