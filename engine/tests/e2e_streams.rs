//! End-to-end tests of stream connections: requests for a UA go over the connection it
//! registered from whichever shard handles them (a connection lives on the shard that accepted
//! it; the others hand it their messages), a dead flow fails calls at once, idle and slow peers
//! are cut off, and the node's own TLS connections verify the server's certificate (RFC 5922).
//! Real node processes (`--threads 2`) on 127.0.0.1; peers are Rust clients in the test.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use certs::{TestCa, Validity};
use support::sip_stream::{SipStream, answer, header};
use support::{LOOPBACK, Node, TempDir};

/// How long a UDP caller waits for one response.
const RESPONSE_WAIT: Duration = Duration::from_secs(10);

fn start_node(port: u16, extra: &[&str]) -> Node {
    let mut args = vec!["--threads", "2"];
    args.extend_from_slice(extra);
    Node::start_on(port, &args)
}

/// A TCP connection to the node from 127.0.0.1.
fn connect(port: u16) -> SipStream<TcpStream> {
    let tcp = TcpStream::connect((LOOPBACK, port)).expect("connect to the node");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    SipStream::new(tcp)
}

fn local_port(stream: &SipStream<TcpStream>) -> u16 {
    stream.stream.local_addr().unwrap().port()
}

/// A REGISTER for `user` with a contact at `contact` (`host:port;params`).
fn register(user: &str, port: u16, via: &str, contact: &str, call_id: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/{via};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=reg-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{contact}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// `user` registered over a new TCP connection from 127.0.0.1, its Contact the connection's own
/// address: the connection and that contact.
fn register_over_tcp(port: u16, user: &str, call_id: &str) -> (SipStream<TcpStream>, String) {
    let mut ua = connect(port);
    let lp = local_port(&ua);
    let contact = format!("127.0.0.1:{lp};transport=tcp");
    let via = format!("TCP 127.0.0.1:{lp}");
    ua.send(&register(user, port, &via, &contact, call_id));
    let ok = ua.read_final_response();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
    (ua, contact)
}

/// A UDP caller on its own port (so SO_REUSEPORT may hand its requests to any shard).
struct Caller {
    socket: UdpSocket,
    node: SocketAddr,
}

impl Caller {
    fn new(port: u16) -> Caller {
        let socket = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        socket.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
        Caller {
            socket,
            node: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn send(&self, message: &str) {
        self.socket.send_to(message.as_bytes(), self.node).unwrap();
    }

    /// INVITE sip:USER@127.0.0.1 with Call-ID `call_id`.
    fn invite(&self, user: &str, call_id: &str) -> String {
        let invite = format!(
            "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-{call_id}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@127.0.0.1>;tag=caller-{call_id}\r\n\
             To: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:carol@127.0.0.1:{lp}>\r\n\
             Content-Length: 0\r\n\r\n",
            lp = self.port()
        );
        self.send(&invite);
        invite
    }

    /// The ACK of a non-2xx final response to `invite` (§17.1.1.3): same branch, the
    /// response's To.
    fn ack(&self, invite: &str, response: &str) {
        let request_uri = invite.split(' ').nth(1).unwrap();
        let mut ack = format!("ACK {request_uri} SIP/2.0\r\n");
        for name in ["Via", "From", "Call-ID"] {
            ack.push_str(&format!("{name}: {}\r\n", header(invite, name).unwrap()));
        }
        ack.push_str(&format!("To: {}\r\n", header(response, "To").unwrap()));
        ack.push_str("Max-Forwards: 70\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
        self.send(&ack);
    }

    /// The next final response (100 Trying skipped).
    fn final_response(&self) -> String {
        let mut buf = [0u8; 65535];
        loop {
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .expect("no response from the node in time");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !message.starts_with("SIP/2.0 100 ") {
                return message;
            }
        }
    }
}

/// A callee registered over TCP, whose Contact is its connection's own address (nothing
/// listens there, as for a phone behind NAT): requests reach it over that connection or not at
/// all. 16 callers on 16 ports call it; SO_REUSEPORT spreads them over both shards, so the
/// INVITE, the relayed 486 and the node's ACK cross shards for about half of them. Every INVITE
/// arrives on the callee's connection and every caller gets its 486.
#[test]
fn calls_reach_a_tcp_callee_whichever_shard_takes_them() {
    let port = support::free_port();
    let mut node = start_node(port, &[]);
    let (mut bob, contact) = register_over_tcp(port, "bob", "x-reg");

    for call in 0..16 {
        let caller = Caller::new(port);
        let call_id = format!("x-call-{call}");
        let invite = caller.invite("bob", &call_id);
        let forwarded = bob.read_message();
        assert!(
            forwarded.starts_with(&format!("INVITE sip:bob@{contact} SIP/2.0")),
            "call {call}: expected the INVITE on bob's connection, got:\n{forwarded}"
        );
        assert_eq!(header(&forwarded, "Call-ID"), Some(call_id.as_str()));
        bob.send(&answer(&forwarded, "486 Busy Here", "bob"));
        let busy = caller.final_response();
        assert!(
            busy.starts_with("SIP/2.0 486 ") && busy.contains(&call_id),
            "call {call}: the caller got:\n{busy}"
        );
        caller.ack(&invite, &busy);
        let ack = bob.read_message();
        assert!(
            ack.starts_with("ACK ") && ack.contains(&call_id),
            "call {call}: the node's ACK of the 486 did not reach bob:\n{ack}"
        );
    }
    node.process.assert_running();
}

/// Once the callee's connection closes, calls to it fail at once with 480, not after the 32 s
/// of Timer B, from either shard: the node tries a new connection to the contact (RFC 3261
/// §18.1.1), which the callee refuses (nothing listens at its old connection's port, as behind
/// a NAT).
#[test]
fn a_closed_flow_fails_calls_at_once() {
    let port = support::free_port();
    let mut node = start_node(port, &[]);
    let (bob, _) = register_over_tcp(port, "bob", "d-reg");
    drop(bob);
    thread::sleep(Duration::from_millis(300));

    for call in 0..6 {
        let caller = Caller::new(port);
        let call_id = format!("d-call-{call}");
        let invite = caller.invite("bob", &call_id);
        let response = caller.final_response();
        assert!(
            response.starts_with("SIP/2.0 480 ") && response.contains(&call_id),
            "call {call} to a closed flow got:\n{response}"
        );
        caller.ack(&invite, &response);
    }
    node.process.assert_running();
}

/// A TCP connection from `source` (a loopback address other than the node's).
fn connect_from(source: &str, port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    let node = SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(&node.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
}

/// Whether the node closed `stream` within `wait`, reading (and discarding) what it sends.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// With `incomplete-message-timeout=1` and `idle-timeout=3`: from 127.0.0.2, a peer trickling
/// a REGISTER a byte at a time is disconnected although it never stops sending, and a silent
/// one once it idled 3 s; one that sends CRLF keep-alives stays (RFC 5626 §4.4.1: each ping
/// answered by a pong). Meanwhile a client on 127.0.0.1 registers and is answered.
#[test]
fn slow_and_idle_peers_are_cut_off_while_others_are_served() {
    let port = support::free_port();
    let mut node = start_node(
        port,
        &[
            "--set",
            "global/incomplete-message-timeout=1",
            "--set",
            "global/idle-timeout=3",
        ],
    );
    let mut silent = connect_from("127.0.0.2", port);
    let mut keepalive = connect_from("127.0.0.2", port);
    let slow = connect_from("127.0.0.2", port);
    let started = Instant::now();

    // The trickle: a byte every 100 ms until a write fails (the node closed) or 8 s passed.
    let trickle = thread::spawn(move || {
        let mut slow = slow;
        let message = register("mallory", port, "TCP 127.0.0.2:9", "127.0.0.2:9", "slow");
        for byte in message.as_bytes().iter().cycle() {
            if started.elapsed() > Duration::from_secs(8) {
                return false;
            }
            if slow.write_all(&[*byte]).is_err() {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    });

    // Served meanwhile (register_over_tcp checks the 200).
    register_over_tcp(port, "alice", "ok-reg");

    let mut pongs = 0;
    while started.elapsed() < Duration::from_secs(5) {
        keepalive
            .write_all(b"\r\n\r\n")
            .expect("the keep-alive peer was cut off");
        let mut pong = [0u8; 2];
        if keepalive.read_exact(&mut pong).is_ok() && &pong == b"\r\n" {
            pongs += 1;
        }
        thread::sleep(Duration::from_millis(500));
    }
    assert!(pongs >= 8, "only {pongs} pongs to 10 pings");
    assert!(
        trickle.join().unwrap(),
        "the trickling peer was never disconnected"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "the silent peer was still connected after {:?}",
        started.elapsed()
    );
    assert!(
        !closed_within(&mut keepalive, Duration::from_millis(200)),
        "the peer sending keep-alives was disconnected"
    );
    node.process.assert_running();
}

/// What a test TLS server saw of the node's connection.
#[derive(Debug)]
enum ServerSaw {
    /// The handshake completed and this SIP request arrived (answered 486).
    Request(String),
    HandshakeFailed(String),
}

/// A TLS server on 127.0.0.1 presenting `leaf`: serves one connection, answering its first
/// request 486.
fn tls_server(leaf: &certs::Leaf) -> (u16, mpsc::Receiver<ServerSaw>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = leaf.server_config();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else {
            return;
        };
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > deadline {
                        let _ = tx.send(ServerSaw::HandshakeFailed("timed out".into()));
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(ServerSaw::HandshakeFailed(e.to_string()));
                    return;
                }
            }
        }
        let mut sip = SipStream::new(tls);
        if let Some(request) = sip.try_read_message(Duration::from_secs(10)) {
            sip.send(&answer(&request, "486 Busy Here", "tls-uas"));
            let _ = tx.send(ServerSaw::Request(request));
            // Holds the connection for the node's ACK.
            thread::sleep(Duration::from_secs(1));
        }
    });
    (port, rx)
}

/// A UA registered over UDP with a `transport=tls` contact: the node opens a TLS connection to
/// it for each call. It gets there only when the UA's certificate chains to
/// `tls-certificates-ca-file`, is valid now and names the contact's address (RFC 5922 §7.2);
/// otherwise the node refuses the handshake and the caller gets 480 at once. The node also
/// presents its own certificate, for servers that ask (mutual TLS).
#[test]
fn outgoing_tls_verifies_the_server() {
    let ca = TestCa::new();
    let dir = TempDir::new("outgoing-tls");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = support::free_port();
    let ca_arg = format!("global/tls-certificates-ca-file={}", ca_file.display());
    let mut node = start_node(port, &["--set", &ca_arg]);

    let cases = [
        ("good", ca.issue(&["127.0.0.1"], Validity::Now), true),
        (
            "wrong-name",
            ca.issue(&["other.example.org"], Validity::Now),
            false,
        ),
        (
            "expired",
            ca.issue(&["127.0.0.1"], Validity::Expired),
            false,
        ),
        ("self-signed", certs::self_signed(&["127.0.0.1"]), false),
    ];
    let caller = Caller::new(port);
    for (label, leaf, accepted) in cases {
        let (uas_port, saw) = tls_server(&leaf);
        let user = format!("uas-{label}");
        caller.send(&register(
            &user,
            port,
            &format!("UDP 127.0.0.1:{}", caller.port()),
            &format!("127.0.0.1:{uas_port};transport=tls"),
            &format!("reg-{label}"),
        ));
        let ok = caller.final_response();
        assert!(
            ok.starts_with("SIP/2.0 200 "),
            "{label}: REGISTER got:\n{ok}"
        );

        let call_id = format!("tls-call-{label}");
        let invite = caller.invite(&user, &call_id);
        let response = caller.final_response();
        caller.ack(&invite, &response);
        let saw = saw
            .recv_timeout(Duration::from_secs(15))
            .expect("the test server reported nothing");
        if accepted {
            assert!(
                matches!(&saw, ServerSaw::Request(r) if r.starts_with("INVITE ") && r.contains(&call_id)),
                "{label}: the server saw {saw:?}"
            );
            assert!(
                response.starts_with("SIP/2.0 486 "),
                "{label}: caller got:\n{response}"
            );
        } else {
            let ServerSaw::HandshakeFailed(why) = saw else {
                panic!("{label}: the node talked to a server it must refuse: {saw:?}");
            };
            eprintln!("{label}: the handshake failed as it must ({why})");
            assert!(
                response.starts_with("SIP/2.0 480 "),
                "{label}: caller got:\n{response}"
            );
        }
    }
    node.process.assert_running();
}

/// A client that writes requests much faster than it reads the answers (40,000 OPTIONS in one
/// go, and it starts reading only 2 s later) gets every answer: the node stops reading
/// its connection while the answers wait (TCP's flow control then holds the client back)
/// instead of dropping them from a full queue.
#[test]
fn a_client_that_reads_slowly_loses_no_answer() {
    const REQUESTS: usize = 40_000;
    let port = support::free_port();
    let mut node = start_node(port, &[]);
    // A small receive buffer, so that the answers pile up in the node rather than in the kernel.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let node_addr = SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(&node_addr.into()).unwrap();
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut client = SipStream::new(tcp);
    let lp = local_port(&client);
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut burst = String::new();
        for i in 0..REQUESTS {
            burst.push_str(&format!(
                "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
                 Via: SIP/2.0/TCP 127.0.0.1:{lp};branch=z9hG4bK-pipelined-{i}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:pipeline@127.0.0.1>;tag=p\r\n\
                 To: <sip:127.0.0.1>\r\n\
                 Call-ID: pipelined-{i}\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n"
            ));
        }
        writer
            .write_all(burst.as_bytes())
            .expect("write the requests");
    });
    thread::sleep(Duration::from_secs(2));
    let mut answered = 0;
    while answered < REQUESTS {
        let Some(response) = client.try_read_message(Duration::from_secs(10)) else {
            break;
        };
        assert!(response.starts_with("SIP/2.0 200 "), "{response}");
        answered += 1;
    }
    sender.join().unwrap();
    assert_eq!(answered, REQUESTS, "answers lost");
    node.process.assert_running();
}
