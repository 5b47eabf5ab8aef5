//! `sipshard-load --transport tls` against a TLS responder written here (`support::stream`, rustls
//! with a certificate for 127.0.0.1 signed by a CA generated in the test): persistent
//! connections (one handshake per thread), a connection and a full handshake per request (or a
//! resumed one with `--tls-resumption`), and the certificate checks: a CA not trusted or a name
//! the certificate does not carry stops the run with the reason, `--tls-insecure` goes on. And
//! WebSocket over TCP and TLS (`--transport ws|wss`) against the same responder speaking the
//! server side of `sipshard_net::websocket`.

mod support;

use std::sync::atomic::Ordering;

use support::stream::{Certificates, responder};
use support::{LOAD, load, read_json};

fn counts(json: &serde_json::Value) -> [u64; 5] {
    ["sent", "ok", "failed", "timed_out", "retransmissions"].map(|k| {
        json["counts"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k}: {json}"))
    })
}

#[test]
fn register_over_persistent_tls_connections() {
    let certs = Certificates::new("persistent");
    let r = responder(Some(&certs), None);
    let ca = certs.path("ca.pem");
    let (code, stdout, path) = load(
        "tls-register",
        &[
            "register",
            "--transport",
            "tls",
            "--tls-ca",
            &ca,
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
    assert_eq!(json["transport"], "tls");
    assert_eq!(counts(&json), [2000, 2000, 0, 0, 0], "{json}");
    let c = &json["connections"];
    assert_eq!(
        [
            &c["opened"],
            &c["tls_handshakes"],
            &c["tls_resumed"],
            &c["failed"]
        ],
        [2, 2, 0, 0],
        "{json}"
    );
    assert_eq!(json["settings"]["tls"]["ca"], ca.as_str());
    assert_eq!(r.seen.connections.load(Ordering::Relaxed), 2);
    assert_eq!(r.seen.answered.load(Ordering::Relaxed), 2000);
    let requests = r.seen.requests.lock().unwrap();
    assert!(requests.iter().all(|(via, _)| via == "TLS"));
    assert!(
        requests
            .iter()
            .all(|(_, c)| c.as_deref().is_some_and(|c| c.ends_with(";transport=tls>"))),
        "{:?}",
        requests.first()
    );
}

#[test]
fn a_full_handshake_per_request_or_a_resumed_one() {
    let certs = Certificates::new("per-request");
    let r = responder(Some(&certs), None);
    let ca = certs.path("ca.pem");
    for (name, resumption) in [("tls-full", false), ("tls-resumed", true)] {
        let mut args = vec![
            "options",
            "--transport",
            "tls",
            "--connection-per-request",
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "localhost",
            "--target",
            &r.addr,
            "--rate",
            "200",
            "--count",
            "100",
        ];
        if resumption {
            args.push("--tls-resumption");
        }
        let (code, stdout, path) = load(name, &args);
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        assert_eq!(code, Some(0), "{stdout}\n{json}");
        assert_eq!(counts(&json), [100, 100, 0, 0, 0], "{json}");
        let c = &json["connections"];
        assert_eq!([&c["opened"], &c["tls_handshakes"]], [100, 100], "{json}");
        let resumed = c["tls_resumed"].as_u64().unwrap();
        if resumption {
            // Connections resume the sessions that the check before the run and earlier
            // connections set up. TLS 1.3 tickets are used once (two per connection here):
            // connections opened while none is left make a full handshake, how many depends on
            // how many handshakes overlap (a debug build on a busy machine: many).
            assert!(resumed > 0, "{json}");
        } else {
            assert_eq!(resumed, 0, "{json}");
        }
        // Over the same span as the achieved rate (a debug build on a busy machine may not
        // keep up with even 200 handshakes a second: no bound on the rate here).
        assert_eq!(c["opened_per_s"], json["rate"]["achieved"], "{json}");
    }
    assert_eq!(r.seen.connections.load(Ordering::Relaxed), 202);
    assert_eq!(r.seen.failed_handshakes.load(Ordering::Relaxed), 0);
}

#[test]
fn an_untrusted_certificate_stops_the_run_unless_insecure() {
    let certs = Certificates::new("untrusted");
    let other = Certificates::new("other-ca");
    let r = responder(Some(&certs), None);
    let run = |extra: &[&str]| {
        std::process::Command::new(LOAD)
            .args(["options", "--transport", "tls", "--target", &r.addr])
            .args(["--rate", "100", "--count", "20"])
            .args(extra)
            .output()
            .expect("run sipshard-load")
    };
    // Another CA, or the right CA and a name the certificate does not carry.
    let other_ca = other.path("ca.pem");
    let ca = certs.path("ca.pem");
    for (extra, reason) in [
        (&["--tls-ca", other_ca.as_str()][..], "UnknownIssuer"),
        (
            &[
                "--tls-ca",
                ca.as_str(),
                "--tls-server-name",
                "sip.example.org",
            ],
            "not valid for name",
        ),
    ] {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(reason), "{extra:?}: {stderr}");
    }
    let out = run(&["--tls-insecure"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A CA file that is not one.
    let out = run(&["--tls-ca", "/dev/null"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--tls-ca /dev/null"), "{stderr}");
}

/// WebSocket (RFC 7118) over TCP and over TLS: the upgrade offers `sip` with the path asked for,
/// each SIP message goes in a masked text frame, Via says WS or WSS and Contact
/// `;transport=ws`; with a connection per request each closes with a close frame.
#[test]
fn register_over_websocket_and_secure_websocket() {
    let certs = Certificates::new("ws");
    let ca = certs.path("ca.pem");
    for (transport, secure, per_request) in [("ws", false, false), ("wss", true, true)] {
        let r = support::stream::ws_responder(secure.then_some(&certs));
        let mut args = vec![
            "register",
            "--transport",
            transport,
            "--ws-path",
            "/sip",
            "--target",
            &r.addr,
            "--rate",
            "400",
            "--count",
            "100",
            "--threads",
            "2",
        ];
        if secure {
            args.extend(["--tls-ca", &ca]);
        }
        if per_request {
            args.push("--connection-per-request");
        }
        let name = format!("register-{transport}");
        let (code, stdout, path) = load(&name, &args);
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        assert_eq!(code, Some(0), "{transport}: {stdout}\n{json}");
        assert_eq!(json["transport"], transport);
        assert_eq!(counts(&json), [100, 100, 0, 0, 0], "{json}");
        assert_eq!(json["settings"]["ws_path"], "/sip");
        let (connections, handshakes) = if per_request { (100, 100) } else { (2, 0) };
        let c = &json["connections"];
        assert_eq!(
            [&c["opened"], &c["tls_handshakes"], &c["failed"]],
            [connections, handshakes, 0],
            "{json}"
        );
        // The check before the run is one more connection with a connection per request.
        let expected = connections + u64::from(per_request);
        assert_eq!(r.seen.upgrades.load(Ordering::Relaxed), expected);
        let via = transport.to_ascii_uppercase();
        let requests = r.seen.requests.lock().unwrap();
        assert_eq!(requests.len(), 100);
        assert!(
            requests
                .iter()
                .all(|(v, c)| *v == via
                    && c.as_deref().is_some_and(|c| c.ends_with(";transport=ws>"))),
            "{:?}",
            requests.first()
        );
        drop(requests);
        // Each connection ends with a close frame (the check's too).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while r.seen.ws_closes.load(Ordering::Relaxed) < expected
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(r.seen.ws_closes.load(Ordering::Relaxed), expected);
    }
}

#[test]
fn a_server_that_does_not_upgrade_stops_the_run() {
    // A SIP-over-TCP server: the upgrade request is not SIP, it hangs up.
    let r = responder(None, None);
    let out = std::process::Command::new(LOAD)
        .args(["options", "--transport", "ws", "--target", &r.addr])
        .args(["--rate", "10", "--count", "1"])
        .output()
        .expect("run sipshard-load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("closed the connection during the handshake"),
        "{stderr}"
    );
}
