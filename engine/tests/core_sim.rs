//! The shard core driven without sockets or sleeps: datagrams in, outputs out, a fake clock.
//! These are the proxy and registrar flows of RFC 3261 §10 and §16, end to end inside one or
//! two shard cores.

mod core_support;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipshard_engine::core::{CoreSettings, Inbound, Output, ShardCore, ShardMsg};
use sipshard_net::{HeaderName, Message, Method, Transport};

const PROXY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.9:5090";
const ALICE_1: &str = "127.0.0.2:5070";
const ALICE_2: &str = "127.0.0.3:5070";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn settings() -> CoreSettings {
    core_support::core_settings()
}

/// One shard core with a fake clock, collecting what it sends.
struct Sim {
    core: ShardCore,
    now: Instant,
}

/// A datagram the core sent.
#[derive(Debug)]
struct Sent {
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Sent {
    fn msg(&self) -> Message<'_> {
        Message::parse_datagram(&self.bytes).unwrap()
    }

    fn status(&self) -> Option<u16> {
        self.msg().status()
    }

    fn method(&self) -> Option<Method<'_>> {
        self.msg().method()
    }
}

impl Sim {
    fn new() -> Sim {
        Sim {
            core: ShardCore::new(0, 1, settings()),
            now: Instant::now(),
        }
    }

    fn receive(&mut self, from: &str, bytes: &str) -> Vec<Sent> {
        let mut out = Vec::new();
        let inbound = Inbound {
            transport: Transport::Udp,
            local: addr(PROXY),
            remote: addr(from),
            conn: None,
        };
        self.core
            .on_datagram(bytes.as_bytes(), inbound, self.now, &mut out);
        sends(out)
    }

    fn advance(&mut self, by: Duration) -> Vec<Sent> {
        let end = self.now + by;
        let mut sent = Vec::new();
        // Step through the deadlines as a shard's timer loop would.
        while let Some(deadline) = self.core.next_deadline().filter(|d| *d <= end) {
            self.now = deadline.max(self.now);
            let mut out = Vec::new();
            self.core.on_timers(self.now, &mut out);
            sent.extend(sends(out));
        }
        self.now = end;
        sent
    }
}

fn sends(out: Vec<Output>) -> Vec<Sent> {
    out.into_iter()
        .map(|o| match o {
            Output::Send { to, bytes, .. } => Sent {
                to,
                bytes: bytes.to_vec(),
            },
            Output::ToShard { .. } | Output::ToDatabase { .. } => {
                panic!("a single in-memory shard sends nothing to other shards or Redis")
            }
        })
        .collect()
}

fn register(user_addr: &str, call_id: &str, cseq: u32, expires: u32) -> String {
    format!(
        "REGISTER sip:example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP {user_addr};branch=z9hG4bK-reg-{call_id}-{cseq}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.org>;tag=r{call_id}\r\n\
To: <sip:alice@example.org>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:alice@{user_addr}>\r\n\
Expires: {expires}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn invite(branch: &str) -> String {
    format!(
        "INVITE sip:alice@example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.org>;tag=b1\r\n\
To: <sip:alice@example.org>\r\n\
Call-ID: call-{branch}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@{CALLER}>\r\n\
Content-Length: 0\r\n\r\n"
    )
}

/// A response a UAS writes to a request it received: its Vias, From, To (+ tag), Call-ID, CSeq.
fn answer(request: &Sent, status: u16, reason: &str, to_tag: &str) -> String {
    let msg = request.msg();
    let mut lines = vec![format!("SIP/2.0 {status} {reason}")];
    for header in msg.headers() {
        let name = String::from_utf8_lossy(header.name_bytes);
        let value = String::from_utf8_lossy(header.value);
        match header.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                lines.push(format!("{name}: {value}"))
            }
            HeaderName::RecordRoute => lines.push(format!("{name}: {value}")),
            HeaderName::To => lines.push(format!("{name}: {value};tag={to_tag}")),
            _ => {}
        }
    }
    lines.push("Content-Length: 0\r\n\r\n".into());
    lines.join("\r\n")
}

fn only<'a>(sent: &'a [Sent], to: &str) -> Vec<&'a Sent> {
    sent.iter().filter(|s| s.to == addr(to)).collect()
}

#[test]
fn register_then_call_through_the_proxy() {
    let mut sim = Sim::new();
    let sent = sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    assert_eq!(sent.len(), 1);
    let ok = sent[0].msg();
    assert_eq!(ok.status(), Some(200));
    let contact = ok.contacts().next().unwrap().unwrap();
    assert_eq!(contact.expires_s(), Some(3600));
    assert!(ok.other_value("Date").is_some());

    let sent = sim.receive(CALLER, &invite("c1"));
    let trying = only(&sent, CALLER);
    assert_eq!(trying[0].status(), Some(100), "100 Trying at once");
    let forwarded = only(&sent, ALICE_1);
    assert_eq!(forwarded.len(), 1);
    let fwd = forwarded[0].msg();
    assert_eq!(
        fwd.request_uri().unwrap().as_str(),
        format!("sip:alice@{ALICE_1}")
    );
    assert_eq!(fwd.max_forwards().unwrap(), Some(69));
    assert_eq!(fwd.vias().count(), 2);
    assert_eq!(fwd.top_via().unwrap().host.text, "127.0.0.1");
    let rr = fwd
        .name_addrs(HeaderName::RecordRoute)
        .next()
        .unwrap()
        .unwrap();
    assert!(rr.uri.as_sip().unwrap().is_loose_router());

    let ringing = sim.receive(ALICE_1, &answer(forwarded[0], 180, "Ringing", "a1"));
    assert_eq!(ringing.len(), 1);
    assert_eq!(ringing[0].to, addr(CALLER));
    assert_eq!(ringing[0].status(), Some(180));
    assert_eq!(
        ringing[0].msg().vias().count(),
        1,
        "the proxy's Via is removed"
    );

    let ok = sim.receive(ALICE_1, &answer(forwarded[0], 200, "OK", "a1"));
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].status(), Some(200));

    // Long after the INVITE transaction ended (RFC 6026 Timer M), a retransmitted 2xx is still
    // routed back to the caller by its Via, statelessly.
    sim.advance(Duration::from_secs(64));
    let late = sim.receive(ALICE_1, &answer(forwarded[0], 200, "OK", "a1"));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].to, addr(CALLER));
    assert_eq!(late[0].msg().vias().count(), 1);
}

#[test]
fn unknown_users_get_404_and_silent_ones_480() {
    let mut sim = Sim::new();
    let sent = sim.receive(CALLER, &invite("nobody"));
    let final_ = only(&sent, CALLER);
    assert_eq!(final_.last().unwrap().status(), Some(404));

    sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    let sent = sim.receive(CALLER, &invite("silent"));
    let retransmissions_to_alice = only(&sent, ALICE_1).len();
    assert_eq!(retransmissions_to_alice, 1);
    // Timer A retransmits, Timer B ends the branch after 64*T1 = 32 s: the caller gets 480.
    let later = sim.advance(Duration::from_secs(33));
    assert!(only(&later, ALICE_1).len() >= 5, "Timer A retransmissions");
    let upstream: Vec<_> = only(&later, CALLER)
        .iter()
        .filter(|s| s.msg().call_id().unwrap() == "call-silent")
        .filter_map(|s| s.status())
        .filter(|s| *s >= 200)
        .collect();
    // Retransmitted (Timer G) until the caller ACKs, which this caller never does.
    assert!(
        !upstream.is_empty() && upstream.iter().all(|s| *s == 480),
        "{upstream:?}"
    );
}

#[test]
fn forking_cancels_the_other_branch_when_one_answers() {
    let mut sim = Sim::new();
    sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    sim.receive(ALICE_2, &register(ALICE_2, "r2", 1, 3600));
    let sent = sim.receive(CALLER, &invite("fork"));
    let to_1 = only(&sent, ALICE_1);
    let to_2 = only(&sent, ALICE_2);
    assert_eq!((to_1.len(), to_2.len()), (1, 1), "one branch per contact");
    let (inv_1, inv_2) = (to_1[0], to_2[0]);
    assert_ne!(
        inv_1.msg().top_via().unwrap().branch(),
        inv_2.msg().top_via().unwrap().branch()
    );

    sim.receive(ALICE_2, &answer(inv_2, 180, "Ringing", "a2"));
    let answered = sim.receive(ALICE_1, &answer(inv_1, 200, "OK", "a1"));
    let cancel = only(&answered, ALICE_2);
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].method(), Some(Method::Cancel));
    assert_eq!(only(&answered, CALLER)[0].status(), Some(200));

    // The cancelled branch answers 200 to the CANCEL and 487 to the INVITE; the caller, who
    // already has its 200, hears nothing more of it.
    sim.receive(ALICE_2, &answer(cancel[0], 200, "OK", "a2"));
    let terminated = sim.receive(ALICE_2, &answer(inv_2, 487, "Request Terminated", "a2"));
    assert!(only(&terminated, CALLER).is_empty());
    let ack = only(&terminated, ALICE_2);
    assert_eq!(
        ack[0].method(),
        Some(Method::Ack),
        "hop-by-hop ACK for the 487"
    );
}

#[test]
fn the_callers_cancel_reaches_every_ringing_branch() {
    let mut sim = Sim::new();
    sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    let sent = sim.receive(CALLER, &invite("cx"));
    let inv = only(&sent, ALICE_1)[0];
    sim.receive(ALICE_1, &answer(inv, 180, "Ringing", "a1"));
    let cancel = invite("cx")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let sent = sim.receive(CALLER, &cancel);
    assert_eq!(
        only(&sent, CALLER)[0].status(),
        Some(200),
        "200 for the CANCEL"
    );
    let downstream = only(&sent, ALICE_1);
    assert_eq!(downstream[0].method(), Some(Method::Cancel));
    let final_ = sim.receive(ALICE_1, &answer(inv, 487, "Request Terminated", "a1"));
    let up = only(&final_, CALLER);
    assert_eq!(up.last().unwrap().status(), Some(487));
}

#[test]
fn timer_c_cancels_a_branch_that_rings_forever() {
    let mut sim = Sim::new();
    sim.receive(ALICE_1, &register(ALICE_1, "r1", 3600, 3600));
    let sent = sim.receive(CALLER, &invite("forever"));
    let inv = only(&sent, ALICE_1)[0];
    sim.receive(ALICE_1, &answer(inv, 180, "Ringing", "a1"));
    let quiet = sim.advance(Duration::from_secs(170));
    assert!(
        only(&quiet, ALICE_1)
            .iter()
            .all(|s| s.method() != Some(Method::Cancel))
    );
    let fired = sim.advance(Duration::from_secs(20));
    let cancels: Vec<_> = only(&fired, ALICE_1)
        .into_iter()
        .filter(|s| s.method() == Some(Method::Cancel))
        .collect();
    assert!(
        !cancels.is_empty(),
        "Timer C (> 3 min) cancels the ringing branch"
    );
    assert!(
        cancels.iter().all(|c| c.bytes == cancels[0].bytes),
        "one CANCEL, retransmitted by Timer E while unanswered"
    );
}

#[test]
fn registrations_expire_on_time() {
    let mut sim = Sim::new();
    sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 60));
    sim.advance(Duration::from_secs(61));
    let sent = sim.receive(CALLER, &invite("late"));
    assert_eq!(only(&sent, CALLER).last().unwrap().status(), Some(404));
}

#[test]
fn retransmitted_register_is_answered_not_refused() {
    let mut sim = Sim::new();
    let first = sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    let again = sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    assert_eq!(first[0].status(), Some(200));
    assert_eq!(
        again.len(),
        1,
        "the server transaction re-sends its response"
    );
    assert_eq!(again[0].bytes, first[0].bytes);
}

#[test]
fn a_register_owned_by_another_shard_hops_there_and_back() {
    let now = Instant::now();
    let mut cores = [
        ShardCore::new(0, 2, settings()),
        ShardCore::new(1, 2, settings()),
    ];
    let inbound = Inbound {
        transport: Transport::Udp,
        local: addr(PROXY),
        remote: addr(ALICE_1),
        conn: None,
    };
    // Find which shard owns alice, then deliver the REGISTER to the other one.
    let bytes = register(ALICE_1, "r1", 1, 3600);
    let mut out = Vec::new();
    cores[0].on_datagram(bytes.as_bytes(), inbound, now, &mut out);
    let receiving = match out.first() {
        Some(Output::ToShard { .. }) => 0,
        _ => 1,
    };
    let mut out = Vec::new();
    let bytes = register(ALICE_1, "r2", 1, 3600);
    cores[receiving].on_datagram(bytes.as_bytes(), inbound, now, &mut out);
    let Some(Output::ToShard { shard, msg }) = out.pop() else {
        panic!("the REGISTER should go to its owner shard");
    };
    assert_eq!(shard, 1 - receiving);
    assert!(matches!(msg, ShardMsg::Register { .. }));
    let mut back = Vec::new();
    cores[shard].on_shard_message(msg, now, &mut back);
    let Some(Output::ToShard { shard: origin, msg }) = back.pop() else {
        panic!("the owner answers the origin shard");
    };
    assert_eq!(origin, receiving);
    let mut answered = Vec::new();
    cores[origin].on_shard_message(msg, now, &mut answered);
    let sent = sends(answered);
    assert_eq!(sent[0].status(), Some(200));
    assert_eq!(sent[0].to, addr(ALICE_1));
}

#[test]
fn a_response_reaching_the_wrong_shard_is_handed_to_the_one_with_the_transaction() {
    let now = Instant::now();
    let mut cores = [
        ShardCore::new(0, 2, settings()),
        ShardCore::new(1, 2, settings()),
    ];
    let inbound = |remote: &str| Inbound {
        transport: Transport::Udp,
        local: addr(PROXY),
        remote: addr(remote),
        conn: None,
    };
    // Register alice on whichever shard owns her, so both shards can look her up.
    let mut out = Vec::new();
    let reg = register(ALICE_1, "r1", 1, 3600);
    cores[0].on_datagram(reg.as_bytes(), inbound(ALICE_1), now, &mut out);
    if let Some(Output::ToShard { shard, msg }) = out.pop() {
        let mut back = Vec::new();
        cores[shard].on_shard_message(msg, now, &mut back);
    }
    // The INVITE arrives on the owner shard of alice, so the lookup is local there.
    let owner = (0..2)
        .find(|&i| {
            let mut out = Vec::new();
            let probe = invite(&format!("probe{i}"));
            cores[i].on_datagram(probe.as_bytes(), inbound(CALLER), now, &mut out);
            out.iter().all(|o| matches!(o, Output::Send { .. }))
        })
        .expect("one shard owns alice");
    let mut out = Vec::new();
    cores[owner].on_datagram(invite("x").as_bytes(), inbound(CALLER), now, &mut out);
    let forwarded = sends(out)
        .into_iter()
        .find(|s| s.to == addr(ALICE_1))
        .expect("INVITE forwarded");

    // The 180 lands on the other shard (SO_REUSEPORT hashes by address).
    let other = 1 - owner;
    let mut out = Vec::new();
    let ringing = answer(&forwarded, 180, "Ringing", "a1");
    cores[other].on_datagram(ringing.as_bytes(), inbound(ALICE_1), now, &mut out);
    let Some(Output::ToShard { shard, msg }) = out.pop() else {
        panic!("the response should go to the shard that owns the transaction");
    };
    assert_eq!(shard, owner);
    let mut up = Vec::new();
    cores[owner].on_shard_message(msg, now, &mut up);
    let up = sends(up);
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].to, up[0].status()), (addr(CALLER), Some(180)));
}

#[test]
fn a_request_whose_answer_from_another_shard_is_lost_gets_503() {
    let now = Instant::now();
    let mut cores = [
        ShardCore::new(0, 2, settings()),
        ShardCore::new(1, 2, settings()),
    ];
    let inbound = Inbound {
        transport: Transport::Udp,
        local: addr(PROXY),
        remote: addr(ALICE_1),
        conn: None,
    };
    let bytes = register(ALICE_1, "r1", 1, 3600);
    let non_owner = (0..2)
        .find(|&i| {
            let mut out = Vec::new();
            cores[i].on_datagram(bytes.as_bytes(), inbound, now, &mut out);
            matches!(out.first(), Some(Output::ToShard { .. }))
        })
        .expect("one shard does not own alice");
    // The message to the owner is lost (its channel was full, say): nothing is sent yet.
    let deadline = cores[non_owner]
        .next_deadline()
        .expect("a deadline for the wait");
    assert!(deadline <= now + Duration::from_secs(5));
    let mut out = Vec::new();
    cores[non_owner].on_timers(deadline, &mut out);
    let sent = sends(out);
    assert_eq!(sent[0].status(), Some(503));
    assert!(sent[0].msg().other_value("Retry-After").is_some());
}

#[test]
fn a_register_requiring_an_unknown_extension_gets_420() {
    let mut sim = Sim::new();
    let request = register(ALICE_1, "r1", 1, 3600).replace(
        "Expires: 3600\r\n",
        "Expires: 3600\r\nRequire: path, foo\r\n",
    );
    let sent = sim.receive(ALICE_1, &request);
    assert_eq!(sent[0].status(), Some(420));
    assert_eq!(sent[0].msg().other_value("Unsupported"), Some(&b"foo"[..]));
    // Require: path alone is fine.
    let request = register(ALICE_1, "r2", 1, 3600)
        .replace("Expires: 3600\r\n", "Expires: 3600\r\nRequire: path\r\n");
    assert_eq!(sim.receive(ALICE_1, &request)[0].status(), Some(200));
}

#[test]
fn a_call_that_changes_transport_is_record_routed_twice() {
    let mut sim = Sim::new();
    sim.receive(ALICE_1, &register(ALICE_1, "r1", 1, 3600));
    // The caller comes over TCP; alice registered over UDP.
    let mut out = Vec::new();
    let tcp = Inbound {
        transport: Transport::Tcp,
        local: addr(PROXY),
        remote: addr(CALLER),
        conn: Some(7),
    };
    let invite = invite("tcp").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.core
        .on_datagram(invite.as_bytes(), tcp, sim.now, &mut out);
    let forwarded = sends(out)
        .into_iter()
        .find(|s| s.to == addr(ALICE_1))
        .expect("forwarded over UDP");
    let rr: Vec<String> = forwarded
        .msg()
        .name_addrs(HeaderName::RecordRoute)
        .map(|r| r.unwrap().uri.as_str().to_owned())
        .collect();
    assert_eq!(
        rr,
        [
            "sip:127.0.0.1:5060;lr",
            "sip:127.0.0.1:5060;transport=tcp;lr"
        ],
        "the callee-facing entry on top (RFC 5658)"
    );

    // The callee's BYE carries both entries as Route: the proxy pops both and forwards it.
    let bye = format!(
        "BYE sip:bob@{CALLER};transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP {ALICE_1};branch=z9hG4bK-bye\r\nMax-Forwards: 70\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>\r\n\
From: <sip:alice@example.org>;tag=a1\r\nTo: <sip:bob@example.org>;tag=b1\r\n\
Call-ID: call-tcp\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = sim.receive(ALICE_1, &bye);
    let fwd = sent
        .iter()
        .find(|s| s.method() == Some(Method::Bye))
        .expect("BYE forwarded");
    assert_eq!(fwd.to, addr(CALLER));
    assert!(fwd.msg().value(HeaderName::Route).is_none());
}
