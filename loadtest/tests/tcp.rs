//! `sipshard-load register|options|message --transport tcp` against a small TCP responder
//! (`support::stream`): one connection per generator thread, or one per request with
//! `--connection-per-request`, messages cut out of the stream by Content-Length, Via saying TCP,
//! nothing retransmitted; and a server that reads requests without answering them and then hangs
//! up: every request times out (Timer F), none is retransmitted.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::stream::responder;
use support::{load, read_json};

fn count(json: &serde_json::Value, k: &str) -> u64 {
    json["counts"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no {k}: {json}"))
}

#[test]
fn register_and_options_over_tcp() {
    let r = responder(None, None);
    for (name, scenario) in [
        ("tcp-register", "register"),
        ("tcp-options", "options"),
        ("tcp-message", "message"),
    ] {
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
        assert_eq!(json["connections"]["opened"], 2, "{json}");
        assert_eq!(json["connections"]["failed"], 0, "{json}");
    }
    // One connection per thread per run.
    assert_eq!(r.seen.connections.load(Ordering::Relaxed), 6);
    assert_eq!(r.seen.answered.load(Ordering::Relaxed), 6000);
    let requests = r.seen.requests.lock().unwrap();
    assert!(requests.iter().all(|(via, _)| via == "TCP"));
    // REGISTER's Contact says TCP.
    let contacts: Vec<&String> = requests.iter().filter_map(|(_, c)| c.as_ref()).collect();
    assert!(contacts.len() >= 2000, "{}", contacts.len());
    assert!(
        contacts.iter().all(|c| c.ends_with(";transport=tcp>")),
        "{:?}",
        contacts.first()
    );
}

#[test]
fn over_tcp_nothing_is_retransmitted_and_unanswered_requests_time_out() {
    // Reads 50 requests, answers none, hangs up: later sends fail, every request times out.
    let r = responder(None, Some(50));
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
    // The hang-up is seen as an end of stream, or as a reset by the next write.
    let c = &json["connections"];
    assert_eq!(
        c["closed_by_peer"].as_u64().unwrap() + c["failed"].as_u64().unwrap(),
        1,
        "{json}"
    );
}

/// A connection per request: as many connections as requests, each closed by the generator
/// after its response; Via and Contact name each connection's own port.
#[test]
fn a_connection_per_request() {
    let r = responder(None, None);
    let (code, stdout, path) = load(
        "tcp-per-request",
        &[
            "register",
            "--transport",
            "tcp",
            "--connection-per-request",
            "--target",
            &r.addr,
            "--rate",
            "500",
            "--count",
            "300",
            "--threads",
            "2",
        ],
    );
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(
        ["sent", "ok", "failed", "timed_out"].map(|k| count(&json, k)),
        [300, 300, 0, 0],
        "{json}"
    );
    assert_eq!(json["connections"]["opened"], 300, "{json}");
    assert_eq!(json["connections"]["failed"], 0, "{json}");
    assert_eq!(json["settings"]["connection_per_request"], true);
    assert!(stdout.contains("connections: opened 300 "), "{stdout}");
    // One more: the check made before the run.
    assert_eq!(r.seen.connections.load(Ordering::Relaxed), 301);
    let requests = r.seen.requests.lock().unwrap();
    let mut ports: Vec<&str> = requests
        .iter()
        .filter_map(|(_, c)| c.as_deref()?.split(':').nth(2)?.split(';').next())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 300, "each request from its own port");
}

/// A connection per request to a server that never answers: each request times out at Timer F
/// (when the generator also closes its connection), nothing is retransmitted, the run ends.
#[test]
fn unanswered_connections_are_closed_at_their_timeout() {
    let r = responder(None, Some(u64::MAX));
    let started = std::time::Instant::now();
    let (code, stdout, path) = load(
        "tcp-per-request-silent",
        &[
            "options",
            "--transport",
            "tcp",
            "--connection-per-request",
            "--target",
            &r.addr,
            "--rate",
            "500",
            "--count",
            "50",
            "--t1-ms",
            "10",
        ],
    );
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    assert_eq!(
        ["sent", "ok", "timed_out", "retransmissions"].map(|k| count(&json, k)),
        [50, 0, 50, 0],
        "{json}"
    );
    assert_eq!(json["connections"]["opened"], 50, "{json}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn connection_per_request_is_refused_over_udp_and_for_calls() {
    for args in [
        &["register", "--connection-per-request"][..],
        &["call", "--transport", "tcp", "--connection-per-request"],
        &["options", "--tls-insecure"],
    ] {
        let out = std::process::Command::new(support::LOAD)
            .args(args)
            .args(["--target", "127.0.0.1:9", "--rate", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--"), "{stderr}");
    }
}

#[test]
fn a_refused_connection_stops_the_run_with_the_reason() {
    // A port nobody listens on: bound and closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(support::LOAD)
        .args([
            "options",
            "--transport",
            "tcp",
            "--rate",
            "10",
            "--count",
            "1",
        ])
        .args(["--target", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
}
