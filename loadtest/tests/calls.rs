//! `sipshard-load call` against `sipshard-load uas` (and against servers that answer calls
//! wrongly), and `message`, on loopback: every INVITE and every BYE is counted to an end, every
//! final response to an INVITE is ACKed, and the UAS saw what the generator says it sent.
//!
//! Calls through the node: `node.rs`.

mod support;

use support::{load, read_json, server, stop};

fn counts(json: &serde_json::Value, path: &str) -> [u64; 5] {
    let c = json
        .pointer(path)
        .unwrap_or_else(|| panic!("no {path} in {json}"));
    ["sent", "ok", "failed", "timed_out", "retransmissions"]
        .map(|k| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {c}")))
}

#[test]
fn calls_through_the_uas_are_invited_acked_held_and_hung_up() {
    let uas = server("uas", &[]);
    let started = std::time::Instant::now();
    let (code, stdout, path) = load(
        "call",
        &[
            "call",
            "--target",
            &uas.addr,
            "--rate",
            "1000",
            "--count",
            "300",
            "--hold-ms",
            "100",
            "--users",
            "callee%d",
            "--user-count",
            "50",
        ],
    );
    let json = read_json(&path);
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(counts(&json, "/counts"), [300, 300, 0, 0, 0], "{json}");
    assert_eq!(counts(&json, "/bye/counts"), [300, 300, 0, 0, 0], "{json}");
    assert_eq!(json["counts"]["provisional"], 300, "one 180 each: {json}");
    assert_eq!(
        json["calls"],
        serde_json::json!({ "acks": 300, "no_dialog": 0 })
    );
    assert_eq!(json["latency_ms"]["corrected"]["count"], 300);
    assert_eq!(json["bye"]["latency_ms"]["corrected"]["count"], 300);
    assert_eq!(json["settings"]["hold_ms"], 100);
    assert!(stdout.contains("BYE from due time (corr.)"), "{stdout}");
    // The hold: the last BYE goes 100 ms after the last 200, so the run lasts at least
    // 0.3 s + 0.1 s.
    assert!(json["elapsed_s"].as_f64().unwrap() >= 0.39, "{json}");
    // The UAS prints its counts once a second.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let stderr = stop(uas);
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last, "uas: invite 300 ack 300 bye 300 bye-unknown 0 cancel 0 other 0 dropped 0",
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 10);
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_busy_callee_fails_calls_and_every_failure_is_acked() {
    let busy = server("responder", &["--status", "486"]);
    let (code, stdout, path) = load(
        "call-busy",
        &[
            "call", "--target", &busy.addr, "--rate", "1000", "--count", "100",
        ],
    );
    let json = read_json(&path);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(counts(&json, "/counts"), [100, 0, 100, 0, 0], "{json}");
    assert_eq!(counts(&json, "/bye/counts"), [0, 0, 0, 0, 0], "{json}");
    assert_eq!(json["calls"]["acks"], 100, "{json}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_2xx_without_contact_is_counted_and_the_call_goes_no_further() {
    // The calibration responder answers INVITE with a 200 that has no Contact: no dialog.
    let responder = server("responder", &[]);
    let (code, stdout, path) = load(
        "call-nocontact",
        &[
            "call",
            "--target",
            &responder.addr,
            "--rate",
            "1000",
            "--count",
            "50",
        ],
    );
    let json = read_json(&path);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(counts(&json, "/counts"), [50, 50, 0, 0, 0], "{json}");
    assert_eq!(
        json["calls"],
        serde_json::json!({ "acks": 0, "no_dialog": 50 })
    );
    assert_eq!(counts(&json, "/bye/counts"), [0, 0, 0, 0, 0], "{json}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn messages_to_the_uas_all_get_200() {
    let uas = server("uas", &[]);
    let (code, stdout, path) = load(
        "message",
        &[
            "message",
            "--target",
            &uas.addr,
            "--rate",
            "1000",
            "--count",
            "200",
            "--body",
            "hello <&>",
        ],
    );
    let json = read_json(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(counts(&json, "/counts"), [200, 200, 0, 0, 0], "{json}");
    assert_eq!(json["scenario"], "message");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let stderr = stop(uas);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains(" other 200 "),
        "{stderr}"
    );
    let _ = std::fs::remove_file(path);
}
