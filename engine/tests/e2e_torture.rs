//! The running node against hostile and odd input: every RFC 4475, RFC 5118 and PROTOS c07-sip
//! message is sent to it over UDP, and over TCP (a connection each); after each, a valid OPTIONS
//! must still be answered 200. The node must answer or drop each message and keep serving (the
//! PROTOS verdict).

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sipshard_net::Message;

fn fixture_files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let root = support::workspace_root().join("tests/fixtures").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Sends an OPTIONS to the node and waits for its 200, skipping whatever else arrives
/// (retransmitted answers to the torture messages).
fn probe(socket: &UdpSocket, node: &str, n: usize) -> Result<(), String> {
    let local = socket.local_addr().expect("local address");
    let call_id = format!("probe-{n}");
    let options = format!(
        "OPTIONS sip:{node} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-probe-{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:{node}>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(options.as_bytes(), node)
        .expect("send probe");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        if let Ok(msg) = Message::parse_datagram(&buf[..len]) {
            if msg.call_id() == Ok(call_id.as_str()) {
                return match msg.status() {
                    Some(200) => Ok(()),
                    other => Err(format!("probe answered {other:?}")),
                };
            }
        }
    }
    Err("probe not answered within 5 s".into())
}

/// The RFC 4475, RFC 5118 and PROTOS messages.
fn torture_files() -> Vec<PathBuf> {
    let mut files = fixture_files("rfc4475", "dat");
    files.extend(fixture_files("rfc5118", "dat"));
    files.extend(fixture_files("protos/rendered", "sip"));
    assert!(files.len() > 500, "fixtures missing: {}", files.len());
    files
}

/// Each message on a connection of its own, the sending side then shut: the node answers,
/// refuses or drops it, and closes the connection when it has read everything (an incomplete
/// message ends with the connection). Between messages, a UDP OPTIONS must be answered.
#[test]
fn the_node_survives_every_torture_message_over_tcp() {
    let port = support::free_port();
    let mut node = support::Node::start_on(port, &["--threads", "2"]);
    let target = format!("127.0.0.1:{port}");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = vec![0u8; 65_536];
    for (n, path) in torture_files().iter().enumerate() {
        let bytes = std::fs::read(path).expect("read fixture");
        let mut stream = TcpStream::connect(&target).expect("connect to the node");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        // The node may close early (a framing error): then the rest cannot be written.
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let closed_at = Instant::now() + Duration::from_secs(5);
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) if Instant::now() < closed_at => {}
                Ok(_) => panic!("{}: the node never closed the connection", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "{}: the node neither answered nor closed within 5 s: {e}",
                    path.display()
                ),
            }
        }
        if n % 25 == 0 {
            if let Err(e) = probe(&socket, &target, n) {
                node.process.assert_running();
                panic!(
                    "after {}: {e}\nnode stderr:\n{}",
                    path.display(),
                    node.process.stderr()
                );
            }
        }
    }
    probe(&socket, &target, usize::MAX).expect("OPTIONS after the last message");
    node.process.assert_running();
}

#[test]
fn the_node_survives_every_torture_message_and_keeps_answering() {
    let port = support::free_port();
    let mut node = support::Node::start_on(port, &["--threads", "2"]);
    let target = format!("127.0.0.1:{port}");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");

    for (n, path) in torture_files().iter().enumerate() {
        let bytes = std::fs::read(path).expect("read fixture");
        // A datagram cannot exceed 65,507 bytes over IPv4; the PROTOS renderings are cut to it.
        socket
            .send_to(&bytes, &target)
            .expect("send torture message");
        if let Err(e) = probe(&socket, &target, n) {
            node.process.assert_running();
            panic!(
                "after {}: {e}\nnode stderr:\n{}",
                path.display(),
                node.process.stderr()
            );
        }
    }
    node.process.assert_running();
}
