//! One node of a cluster (`[cluster]`) driven without sockets: the Path it adds to the bindings
//! of its stream clients (RFC 3327, with an RFC 5626 §5.2-style flow token), requests from
//! other nodes routed by that Path delivered over the client's own connection, Record-Route
//! with the internal address toward nodes and the flow token toward the client, in-dialog
//! requests in both directions, forged tokens (403), and bindings whose Path names another
//! node. The node is 127.0.0.2; 127.0.0.3 and 127.0.0.4 are the other nodes; clients are on
//! 127.0.0.1 and 127.0.0.9.

mod core_support;
use std::net::SocketAddr;
use std::time::Instant;

use sipshard_engine::cluster::{ClusterSettings, FlowKey};
use sipshard_engine::core::{CoreSettings, Inbound, Output, ShardCore};
use sipshard_engine::routing::LocalIdentity;
use sipshard_net::{HeaderName, Message, Transport};

const NODE: &str = "127.0.0.2:5060";
const NODE2: &str = "127.0.0.3:41000";
const NODE3: &str = "127.0.0.4:42000";
const ALICE: &str = "127.0.0.1:40000";
const BOB: &str = "127.0.0.9:5090";
/// The connection ids the shell gave the connections of Alice, node 2 and node 3.
const ALICE_CONN: u64 = 7;
const NODE2_CONN: u64 = 9;
const NODE3_CONN: u64 = 11;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn settings() -> CoreSettings {
    CoreSettings {
        identity: LocalIdentity {
            hosts: vec!["127.0.0.2".into()],
            ..core_support::core_settings().identity
        },
        advertised_host: "127.0.0.2".into(),
        ports: vec![(Transport::Udp, 5060), (Transport::Tcp, 5060)],
        cluster: Some(ClusterSettings {
            internal_host: "127.0.0.2".into(),
            internal_port: 5060,
            internal_transport: Transport::Tcp,
            nodes: ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
                .iter()
                .map(|ip| ip.parse().unwrap())
                .collect(),
            flows: FlowKey::new(b"test key"),
        }),
        ..core_support::core_settings()
    }
}

#[derive(Debug)]
struct Sent {
    transport: Transport,
    to: SocketAddr,
    conn: Option<u64>,
    bytes: Vec<u8>,
}

impl Sent {
    fn msg(&self) -> Message<'_> {
        Message::parse_datagram(&self.bytes).unwrap()
    }

    fn values(&self, name: HeaderName) -> Vec<String> {
        self.msg()
            .name_addrs(name)
            .map(|v| format!("<{}>", v.unwrap().uri.as_str()))
            .collect()
    }
}

struct Node {
    core: ShardCore,
    now: Instant,
}

impl Node {
    fn new() -> Node {
        Node {
            core: ShardCore::new(0, 1, settings()),
            now: Instant::now(),
        }
    }

    /// A message from `from` over TCP connection `conn`, or over UDP without one.
    fn receive(&mut self, from: &str, conn: Option<u64>, text: &str) -> Vec<Sent> {
        let inbound = Inbound {
            transport: if conn.is_some() {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            local: addr(NODE),
            remote: addr(from),
            conn,
        };
        let mut out = Vec::new();
        if conn.is_some() {
            self.core
                .on_stream_message(text.as_bytes(), inbound, self.now, &mut out);
        } else {
            self.core
                .on_datagram(text.as_bytes(), inbound, self.now, &mut out);
        }
        out.into_iter()
            .map(|o| match o {
                Output::Send {
                    transport,
                    to,
                    conn,
                    bytes,
                    ..
                } => Sent {
                    transport,
                    to,
                    conn,
                    bytes: bytes.to_vec(),
                },
                other => panic!("one in-memory shard: {other:?}"),
            })
            .collect()
    }

    /// The one request among what was sent (100 Trying and the like left out).
    fn request(&mut self, from: &str, conn: Option<u64>, text: &str) -> Sent {
        let mut sent: Vec<Sent> = self
            .receive(from, conn, text)
            .into_iter()
            .filter(|s| s.msg().is_request())
            .collect();
        assert_eq!(sent.len(), 1, "one request forwarded: {sent:?}");
        sent.remove(0)
    }

    fn final_status(&mut self, from: &str, conn: Option<u64>, text: &str) -> (u16, Sent) {
        let sent = self
            .receive(from, conn, text)
            .into_iter()
            .find(|s| s.msg().status().is_some_and(|c| c >= 200))
            .expect("a final response");
        (sent.msg().status().unwrap(), sent)
    }
}

fn register(user: &str, contact: &str, via: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:example.org SIP/2.0\r\nVia: {via};branch=z9hG4bK-reg-{user}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.org>;tag=r\r\nTo: <sip:{user}@example.org>\r\n\
Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nSupported: path\r\n{extra}\
Contact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Alice registers over her TCP connection: the 200 OK shows this node's Path with her flow
/// token, which this returns.
fn alice_registers(node: &mut Node) -> String {
    let (status, ok) = node.final_status(
        ALICE,
        Some(ALICE_CONN),
        &register(
            "alice",
            "sip:alice@127.0.0.1:40000;transport=tcp",
            "SIP/2.0/TCP 127.0.0.1:40000",
            "",
        ),
    );
    assert_eq!(status, 200);
    let path = ok.values(HeaderName::Path);
    assert_eq!(path.len(), 1, "{path:?}");
    let token = path[0]
        .strip_prefix("<sip:")
        .and_then(|p| p.strip_suffix("@127.0.0.2:5060;transport=tcp;lr>"))
        .unwrap_or_else(|| panic!("the internal URI with a token: {path:?}"))
        .to_owned();
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    token
}

/// What node 2 sends us for Bob's call to Alice: her contact as Request-URI, her Path as Route,
/// node 2's double Record-Route (UDP toward Bob, TCP toward us).
fn invite_from_node2(route: &str) -> String {
    format!(
        "INVITE sip:alice@127.0.0.1:40000;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.3:5060;branch=z9hG4bK-n2-inv;rport\r\n\
Via: SIP/2.0/UDP {BOB};branch=z9hG4bK-bob-inv\r\nMax-Forwards: 69\r\nRoute: {route}\r\n\
Record-Route: <sip:127.0.0.3:5060;transport=tcp;lr>\r\nRecord-Route: <sip:127.0.0.3:5060;lr>\r\n\
From: <sip:bob@example.org>;tag=b\r\nTo: <sip:alice@example.org>\r\nCall-ID: call-1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:bob@{BOB}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Bob's INVITE to `user`, sent to this node over UDP.
fn invite_from_bob(user: &str) -> String {
    format!(
        "INVITE sip:{user}@example.org SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bK-{user}\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.org>;tag=b\r\nTo: <sip:{user}@example.org>\r\n\
Call-ID: call-{user}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{BOB}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn in_dialog(method: &str, ruri: &str, via: &str, route: &str, cseq: u32) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: {via};branch=z9hG4bK-{method}-{cseq}\r\n\
Max-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:bob@example.org>;tag=b\r\n\
To: <sip:alice@example.org>;tag=a\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_call_from_another_node_reaches_the_client_over_its_connection() {
    let mut node = Node::new();
    let token = alice_registers(&mut node);
    let path = format!("<sip:{token}@127.0.0.2:5060;transport=tcp;lr>");

    let invite = node.request(NODE2, Some(NODE2_CONN), &invite_from_node2(&path));
    assert_eq!(
        (invite.transport, invite.to, invite.conn),
        (Transport::Tcp, addr(ALICE), Some(ALICE_CONN)),
        "over Alice's own connection"
    );
    assert!(invite.values(HeaderName::Route).is_empty());
    assert_eq!(
        invite.msg().request_uri().unwrap().as_str(),
        "sip:alice@127.0.0.1:40000;transport=tcp"
    );
    // Facing Alice: this node's name and her flow; facing node 2: the internal URI.
    assert_eq!(
        invite.values(HeaderName::RecordRoute)[..3],
        [
            path.clone(),
            "<sip:127.0.0.2:5060;transport=tcp;lr>".to_owned(),
            "<sip:127.0.0.3:5060;transport=tcp;lr>".to_owned(),
        ]
    );

    // Bob's in-dialog requests come through node 2 with the route set reversed (§12.1.2).
    let from_bob_side = format!("<sip:127.0.0.2:5060;transport=tcp;lr>, {path}");
    for (method, cseq) in [("INFO", 2), ("BYE", 3)] {
        let sent = node.request(
            NODE2,
            Some(NODE2_CONN),
            &in_dialog(
                method,
                "sip:alice@127.0.0.1:40000;transport=tcp",
                "SIP/2.0/TCP 127.0.0.3:5060",
                &from_bob_side,
                cseq,
            ),
        );
        assert_eq!((sent.to, sent.conn), (addr(ALICE), Some(ALICE_CONN)));
        assert!(sent.values(HeaderName::Route).is_empty());
    }
    // The ACK of a 2xx is no transaction, yet goes the same way.
    let ack = in_dialog(
        "ACK",
        "sip:alice@127.0.0.1:40000;transport=tcp",
        "SIP/2.0/TCP 127.0.0.3:5060",
        &from_bob_side,
        1,
    );
    let sent = node.receive(NODE2, Some(NODE2_CONN), &ack);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to, sent[0].conn), (addr(ALICE), Some(ALICE_CONN)));

    // Alice's requests go on along the route set, to node 2's internal address.
    let from_alice = format!(
        "{path}, <sip:127.0.0.2:5060;transport=tcp;lr>, <sip:127.0.0.3:5060;transport=tcp;lr>, \
         <sip:127.0.0.3:5060;lr>"
    );
    let bye = in_dialog(
        "BYE",
        &format!("sip:bob@{BOB}"),
        "SIP/2.0/TCP 127.0.0.1:40000",
        &from_alice,
        4,
    );
    let sent = node.request(ALICE, Some(ALICE_CONN), &bye);
    assert_eq!(
        (sent.transport, sent.to, sent.conn),
        (Transport::Tcp, addr("127.0.0.3:5060"), None)
    );
    assert_eq!(sent.values(HeaderName::Route).len(), 2);
}

#[test]
fn a_token_of_the_connection_a_request_came_over_is_not_where_it_goes() {
    let mut node = Node::new();
    let token = alice_registers(&mut node);
    // A dialog through this node alone: Alice's BYE carries her own token in the only Route;
    // it goes to Bob's contact, not back to her.
    let route = format!("<sip:{token}@127.0.0.2:5060;transport=tcp;lr>");
    let bye = in_dialog(
        "BYE",
        &format!("sip:bob@{BOB}"),
        "SIP/2.0/TCP 127.0.0.1:40000",
        &route,
        2,
    );
    let sent = node.request(ALICE, Some(ALICE_CONN), &bye);
    assert_eq!(
        (sent.transport, sent.to, sent.conn),
        (Transport::Udp, addr(BOB), None)
    );
}

#[test]
fn a_forged_or_altered_flow_token_is_refused() {
    let mut node = Node::new();
    let token = alice_registers(&mut node);
    // Another connection id under the old tag.
    let mut altered = token.clone().into_bytes();
    altered[14] = if altered[14] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in [altered.as_str(), "alice", "00"] {
        let route = format!("<sip:{bad}@127.0.0.2:5060;transport=tcp;lr>");
        let (status, _) = node.final_status(NODE2, Some(NODE2_CONN), &invite_from_node2(&route));
        assert_eq!(status, 403, "RFC 5626 §5.3: token {bad}");
    }
}

#[test]
fn udp_clients_and_nodes_get_no_path_of_this_node() {
    let mut node = Node::new();
    let (status, ok) = node.final_status(
        "127.0.0.1:5070",
        None,
        &register(
            "dave",
            "sip:dave@127.0.0.1:5070",
            "SIP/2.0/UDP 127.0.0.1:5070",
            "",
        ),
    );
    assert_eq!(status, 200);
    assert!(
        ok.values(HeaderName::Path).is_empty(),
        "UDP: any node reaches it"
    );
    // A REGISTER relayed by node 3 for a client of its own keeps node 3's Path only.
    let node3_path = "<sip:abcd@127.0.0.4:5060;transport=tcp;lr>";
    let (status, ok) = node.final_status(
        NODE3,
        Some(NODE3_CONN),
        &register(
            "carol",
            "sip:carol@127.0.0.1:45000;transport=tcp",
            "SIP/2.0/TCP 127.0.0.4:5060",
            &format!("Path: {node3_path}\r\n"),
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(ok.values(HeaderName::Path), [node3_path]);

    // A call to Carol goes to node 3, her Path as its Route (RFC 3327 §5.3).
    let sent = node.request(BOB, None, &invite_from_bob("carol"));
    assert_eq!(
        (sent.transport, sent.to, sent.conn),
        (Transport::Tcp, addr("127.0.0.4:5060"), None)
    );
    assert_eq!(sent.values(HeaderName::Route), [node3_path]);
    assert_eq!(
        sent.msg().request_uri().unwrap().as_str(),
        "sip:carol@127.0.0.1:45000;transport=tcp"
    );
    // Toward node 3 the internal URI, toward Bob the node's name over UDP.
    assert_eq!(
        sent.values(HeaderName::RecordRoute),
        [
            "<sip:127.0.0.2:5060;transport=tcp;lr>",
            "<sip:127.0.0.2:5060;lr>"
        ]
    );
}

#[test]
fn a_path_naming_a_host_goes_to_the_proxy_the_register_came_from() {
    let mut node = Node::new();
    let edge = "127.0.0.50:5060";
    let path = "<sip:edge.example.net;lr>";
    let (status, _) = node.final_status(
        edge,
        None,
        &register(
            "erin",
            "sip:erin@192.0.2.33:5060",
            "SIP/2.0/UDP 127.0.0.50:5060",
            &format!("Path: {path}\r\n"),
        ),
    );
    assert_eq!(status, 200);
    let sent = node.request(BOB, None, &invite_from_bob("erin"));
    assert_eq!((sent.transport, sent.to), (Transport::Udp, addr(edge)));
    assert_eq!(sent.values(HeaderName::Route), [path]);
}

#[test]
fn a_call_through_the_node_holding_the_connection_goes_over_it() {
    let mut node = Node::new();
    let token = alice_registers(&mut node);
    let sent = node.request(BOB, None, &invite_from_bob("alice"));
    assert_eq!(
        (sent.transport, sent.to, sent.conn),
        (Transport::Tcp, addr(ALICE), Some(ALICE_CONN))
    );
    assert!(
        sent.values(HeaderName::Route).is_empty(),
        "its own Path entry is not pushed"
    );
    assert_eq!(
        sent.values(HeaderName::RecordRoute),
        [
            format!("<sip:{token}@127.0.0.2:5060;transport=tcp;lr>"),
            "<sip:127.0.0.2:5060;lr>".to_owned()
        ]
    );
}
