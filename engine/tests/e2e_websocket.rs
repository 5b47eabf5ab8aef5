//! End-to-end tests of SIP over WebSocket (RFC 7118): a browser-like client (the WebSocket
//! client role of `sipshard_net::websocket`, over a real TCP or TLS connection) registers with
//! a `.invalid` contact, as JsSIP and SIP.js do, and receives a call placed over UDP over its
//! WebSocket connection; fragmented messages and pings; bad upgrades get the right HTTP error and
//! bad frames the right close code. The node on 127.0.0.1, `--threads 2`.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sipshard_net::websocket::{self, Event, FrameDecoder, Opcode, Role};
use support::sip_stream::{answer, header};
use support::{LOOPBACK, Node, TempDir};

/// How long the client waits for one message.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A node listening on UDP `sip:127.0.0.1:PORT` and WebSocket `WS_PORT` (`ws` or `wss`).
fn start_node(transport: &str, extra: &[String]) -> (Node, u16, u16) {
    let port = support::free_port();
    let ws_port = support::free_port();
    let transports = format!(
        "global/transports=sip:{LOOPBACK}:{port};transport=udp sip:{LOOPBACK}:{ws_port};transport={transport}"
    );
    let mut args: Vec<&str> = vec![
        "--set",
        &transports,
        "--set",
        "module::Registrar/reg-domains=127.0.0.1 localhost",
        "--threads",
        "2",
    ];
    args.extend(extra.iter().map(String::as_str));
    (Node::start(&args), port, ws_port)
}

/// A WebSocket client speaking SIP.
struct WsClient<S> {
    stream: S,
    decoder: FrameDecoder,
    /// Bytes read and not decoded yet.
    pending: Vec<u8>,
    masks: u32,
}

/// The upgrade request of a WebSocket client offering the `sip` subprotocol.
fn upgrade_request(port: u16) -> (Vec<u8>, String) {
    let key = websocket::client_key(*b"sipshard-test-16");
    (
        websocket::client_request(&format!("127.0.0.1:{port}"), "/", &key),
        key,
    )
}

/// The HTTP response to `request`, as text (read until the blank line).
fn http_exchange<S: Read + Write>(stream: &mut S, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    stream.flush().unwrap();
    let mut head = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !head.ends_with(b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no HTTP response: {head:?}");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the HTTP response: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

impl<S: Read + Write> WsClient<S> {
    /// Upgrades `stream` (connected to the node's WebSocket port).
    fn upgrade(mut stream: S, port: u16) -> WsClient<S> {
        let (request, key) = upgrade_request(port);
        let response = http_exchange(&mut stream, &request);
        let checked = websocket::check_upgrade_response(response.as_bytes(), &key, 8192);
        assert!(
            matches!(checked, Ok(Some(n)) if n == response.len()),
            "upgrade refused ({checked:?}):\n{response}"
        );
        WsClient {
            stream,
            decoder: FrameDecoder::new(Role::Client, 1 << 20),
            pending: Vec::new(),
            masks: 0,
        }
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        self.masks = self
            .masks
            .wrapping_mul(2_654_435_761)
            .wrapping_add(0x9e37_79b9);
        Some(self.masks.to_be_bytes())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Sends `message` in one text frame.
    fn send(&mut self, message: &str) {
        let mut frame = Vec::new();
        let mask = self.mask();
        websocket::encode_frame(Opcode::Text, true, message.as_bytes(), mask, &mut frame);
        self.write(&frame);
    }

    /// Sends `message` in `pieces` fragments, with a ping between the first two.
    fn send_fragmented(&mut self, message: &str, pieces: usize) {
        let bytes = message.as_bytes();
        let size = bytes.len().div_ceil(pieces);
        let mut frames = Vec::new();
        for (i, piece) in bytes.chunks(size).enumerate() {
            let opcode = if i == 0 {
                Opcode::Text
            } else {
                Opcode::Continuation
            };
            let fin = (i + 1) * size >= bytes.len();
            let mask = self.mask();
            websocket::encode_frame(opcode, fin, piece, mask, &mut frames);
            if i == 0 {
                let mask = self.mask();
                websocket::encode_frame(Opcode::Ping, true, b"are you there", mask, &mut frames);
            }
        }
        self.write(&frames);
    }

    /// The next event from the node.
    fn event(&mut self) -> Event {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut chunk = [0u8; 4096];
        loop {
            let mut input: &[u8] = &self.pending;
            let event = self.decoder.next_event(&mut input).expect("a valid frame");
            let consumed = self.pending.len() - input.len();
            self.pending.drain(..consumed);
            if let Some(event) = event {
                return event;
            }
            assert!(Instant::now() < deadline, "no WebSocket event in time");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the node closed the connection"),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next SIP message (100 Trying included), as text.
    fn read_sip(&mut self) -> String {
        loop {
            match self.event() {
                Event::Message { text, payload } => {
                    assert!(text, "the node sent SIP in a binary frame");
                    return String::from_utf8(payload).unwrap();
                }
                Event::Ping(_) | Event::Pong(_) => continue,
                Event::Close { code, reason } => panic!("closed: {code:?} {reason}"),
            }
        }
    }

    fn read_final(&mut self) -> String {
        loop {
            let message = self.read_sip();
            if !message.starts_with("SIP/2.0 100 ") {
                return message;
            }
        }
    }
}

fn tcp(port: u16) -> TcpStream {
    let tcp = TcpStream::connect((LOOPBACK, port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    tcp
}

/// A REGISTER as JsSIP writes it: Via with a `.invalid` host, a `transport=ws` contact.
fn register(user: &str, via: &str, call_id: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{via} df7jal23ls0d.invalid;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 69\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         From: <sip:{user}@127.0.0.1>;tag=reg-{call_id}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@df7jal23ls0d.invalid;transport=ws>;expires=600\r\n\
         Supported: path, outbound, gruu\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// An INVITE for `user` from a UDP caller; the caller's final response.
fn call_over_udp<S: Read + Write>(
    port: u16,
    callee: &mut WsClient<S>,
    user: &str,
    call_id: &str,
) -> String {
    let caller = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    caller.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let lp = caller.local_addr().unwrap().port();
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@127.0.0.1>;tag=bob-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let node = SocketAddr::from(([127, 0, 0, 1], port));
    caller.send_to(invite.as_bytes(), node).unwrap();
    let forwarded = callee.read_sip();
    assert!(
        forwarded.starts_with(&format!(
            "INVITE sip:{user}@df7jal23ls0d.invalid;transport=ws"
        )),
        "the INVITE did not reach the WebSocket client:\n{forwarded}"
    );
    let via = header(&forwarded, "Via").unwrap_or_default();
    assert!(
        via.starts_with("SIP/2.0/WS"),
        "the node's Via does not say WS:\n{forwarded}"
    );
    callee.send(&answer(&forwarded, "486 Busy Here", "ws-callee"));
    let mut buf = [0u8; 65535];
    loop {
        let (n, _) = caller.recv_from(&mut buf).expect("no final response");
        let response = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !response.starts_with("SIP/2.0 100 ") {
            return response;
        }
    }
}

/// A WebSocket client registers (a `.invalid` contact) and is called over UDP: the INVITE
/// reaches it over its WebSocket connection, its 486 goes back to the caller. A REGISTER in
/// three fragments with a ping between them is answered with a pong and a 200.
#[test]
fn websocket_client_registers_and_receives_a_call() {
    let (mut node, port, ws_port) = start_node("ws", &[]);
    let mut alice = WsClient::upgrade(tcp(ws_port), ws_port);
    alice.send(&register("alice", "WS", "ws-reg-1"));
    let ok = alice.read_final();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");

    let response = call_over_udp(port, &mut alice, "alice", "ws-call-1");
    assert!(
        response.starts_with("SIP/2.0 486 "),
        "the caller got:\n{response}"
    );

    let mut carol = WsClient::upgrade(tcp(ws_port), ws_port);
    carol.send_fragmented(&register("carol", "WS", "ws-reg-2"), 3);
    match carol.event() {
        Event::Pong(payload) => assert_eq!(payload, b"are you there"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    let ok = carol.read_final();
    assert!(ok.starts_with("SIP/2.0 200 "), "fragmented REGISTER:\n{ok}");
    node.process.assert_running();
}

/// The opening handshake is checked: a plain HTTP GET gets 426, a client not offering the `sip`
/// subprotocol 400, a wrong version 426 with the version we speak, a POST 405; each connection
/// is then closed. An unmasked frame after a good upgrade is answered with close code 1002.
#[test]
fn bad_upgrades_and_frames_get_the_right_errors() {
    let (mut node, _, ws_port) = start_node("ws", &[]);
    let host = format!("Host: 127.0.0.1:{ws_port}\r\n");
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases = [
        (format!("GET / HTTP/1.1\r\n{host}\r\n"), "426"),
        (
            format!("GET / HTTP/1.1\r\n{host}{upgrade}{key}Sec-WebSocket-Version: 13\r\n\r\n"),
            "400",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\n{host}{upgrade}{key}Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
            ),
            "426",
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{host}{upgrade}{key}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
            ),
            "405",
        ),
    ];
    for (request, status) in cases {
        let mut stream = tcp(ws_port);
        let response = http_exchange(&mut stream, request.as_bytes());
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?} got:\n{response}"
        );
        if status == "426" && request.contains("Version: 8") {
            assert!(response.contains("Sec-WebSocket-Version: 13"), "{response}");
        }
        // The node closes after its answer: the rest of the stream is empty.
        let mut rest = Vec::new();
        let closed = stream.read_to_end(&mut rest).is_ok() && rest.is_empty();
        assert!(closed, "the connection stayed open after {status}");
    }

    let mut client = WsClient::upgrade(tcp(ws_port), ws_port);
    let mut unmasked = Vec::new();
    websocket::encode_frame(
        Opcode::Text,
        true,
        register("eve", "WS", "ws-bad").as_bytes(),
        None,
        &mut unmasked,
    );
    client.write(&unmasked);
    match client.event() {
        Event::Close { code, .. } => assert_eq!(code, Some(1002)),
        other => panic!("expected a close 1002, got {other:?}"),
    }
    node.process.assert_running();
}

/// WSS: the same over TLS (a certificate made here, a client trusting its CA).
#[test]
fn secure_websocket_registers_and_receives_a_call() {
    let ca = certs::TestCa::new();
    let leaf = ca.issue(&["127.0.0.1", "localhost"], certs::Validity::Now);
    let dir = TempDir::new("wss-certs");
    let (chain, key) = leaf.write(dir.path(), "node");
    let (mut node, port, ws_port) = start_node(
        "wss",
        &[
            "--set".into(),
            format!("global/tls-certificates-file={}", chain.display()),
            "--set".into(),
            format!("global/tls-certificates-private-key={}", key.display()),
        ],
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(ca.client_config(None), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, tcp(ws_port));
    let mut dave = WsClient::upgrade(tls, ws_port);
    dave.send(&register("dave", "WSS", "wss-reg-1"));
    let ok = dave.read_final();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
    let response = call_over_udp(port, &mut dave, "dave", "wss-call-1");
    assert!(
        response.starts_with("SIP/2.0 486 "),
        "the caller got:\n{response}"
    );
    node.process.assert_running();
}
