//! `sipshard-load register|options --transport tcp` against a small TCP responder written here:
//! one connection per generator thread, messages cut out of the stream by Content-Length, Via
//! saying TCP, nothing retransmitted; and a server that reads requests without answering them
//! and then hangs up: every request times out (Timer F), none is retransmitted.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sipshard_net::{Frame, Message, StreamFramer};
use support::{load, read_json};

struct Responder {
    addr: String,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    /// Requests whose top Via did not say TCP.
    not_tcp: Arc<AtomicU64>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers 200 to every request on every connection; `silent`: reads requests, answers none,
/// and closes the connection after `silent` of them.
fn responder(silent: Option<u64>) -> Responder {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let r = Responder {
        addr: listener.local_addr().unwrap().to_string(),
        stop: Arc::new(AtomicBool::new(false)),
        connections: Arc::default(),
        answered: Arc::default(),
        not_tcp: Arc::default(),
    };
    let (stop, connections, answered, not_tcp) = (
        Arc::clone(&r.stop),
        Arc::clone(&r.connections),
        Arc::clone(&r.answered),
        Arc::clone(&r.not_tcp),
    );
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            connections.fetch_add(1, Ordering::Relaxed);
            let (stop, answered, not_tcp) = (
                Arc::clone(&stop),
                Arc::clone(&answered),
                Arc::clone(&not_tcp),
            );
            std::thread::spawn(move || serve(stream, silent, &stop, &answered, &not_tcp));
        }
    });
    r
}

fn serve(
    mut stream: TcpStream,
    silent: Option<u64>,
    stop: &AtomicBool,
    answered: &AtomicU64,
    not_tcp: &AtomicU64,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut framer = StreamFramer::new(65536);
    let mut inbox = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut seen = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        let mut out = Vec::new();
        loop {
            match framer.next_frame(&inbox).expect("well-framed requests") {
                Frame::Message { len } => {
                    let request = inbox.drain(..len).collect::<Vec<u8>>();
                    let msg = Message::parse_datagram(&request).expect("a request");
                    if !msg.top_via().unwrap().transport.eq_ignore_ascii_case("TCP") {
                        not_tcp.fetch_add(1, Ordering::Relaxed);
                    }
                    seen += 1;
                    if silent.is_some() {
                        continue;
                    }
                    let text = std::str::from_utf8(&request).unwrap();
                    let copied: String = text
                        .split("\r\n")
                        .filter(|l| {
                            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                                .iter()
                                .any(|p| l.starts_with(p))
                        })
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    out.extend_from_slice(
                        format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n").as_bytes(),
                    );
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Frame::Ping { len } | Frame::Pong { len } => {
                    inbox.drain(..len);
                }
                Frame::Incomplete => break,
            }
        }
        if silent.is_some_and(|n| seen >= n) {
            return;
        }
        stream.write_all(&out).unwrap();
    }
}

fn count(json: &serde_json::Value, k: &str) -> u64 {
    json["counts"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no {k}: {json}"))
}

#[test]
fn register_and_options_over_tcp() {
    let r = responder(None);
    for (name, scenario) in [("tcp-register", "register"), ("tcp-options", "options")] {
        let (code, stdout, path) = load(
            name,
            &[
                scenario,
                "--transport",
                "tcp",
                "--target",
                &r.addr,
                "--rate",
                "4000",
                "--count",
                "2000",
                "--threads",
                "2",
            ],
        );
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        assert_eq!(code, Some(0), "{stdout}\n{json}");
        assert_eq!(json["transport"], "tcp");
        assert_eq!(
            [
                "sent",
                "ok",
                "failed",
                "timed_out",
                "retransmissions",
                "unexpected"
            ]
            .map(|k| count(&json, k)),
            [2000, 2000, 0, 0, 0, 0],
            "{json}"
        );
        assert_eq!(json["latency_ms"]["corrected"]["count"], 2000);
    }
    // One connection per thread per run.
    assert_eq!(r.connections.load(Ordering::Relaxed), 4);
    assert_eq!(r.answered.load(Ordering::Relaxed), 4000);
    assert_eq!(r.not_tcp.load(Ordering::Relaxed), 0);
}

#[test]
fn over_tcp_nothing_is_retransmitted_and_unanswered_requests_time_out() {
    // Reads 50 requests, answers none, hangs up: later sends fail, every request times out.
    let r = responder(Some(50));
    let started = std::time::Instant::now();
    let (code, stdout, path) = load(
        "tcp-silent",
        &[
            "register",
            "--transport",
            "tcp",
            "--target",
            &r.addr,
            "--rate",
            "1000",
            "--count",
            "100",
            "--t1-ms",
            "10",
        ],
    );
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    assert_eq!(
        ["sent", "ok", "timed_out", "retransmissions"].map(|k| count(&json, k)),
        [100, 0, 100, 0],
        "{json}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn tcp_is_refused_for_calls() {
    let out = std::process::Command::new(support::LOAD)
        .args([
            "call",
            "--transport",
            "tcp",
            "--target",
            "127.0.0.1:9",
            "--rate",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
