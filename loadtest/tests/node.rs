//! `sipshard-load` through the node, `sipshard` (engine crate), on 127.0.0.1: users registered
//! at a `sipshard-load uas`, then calls through the node over UDP, TCP, TLS and WebSocket (the
//! node relays them to the UAS over UDP; every count adds up: sent = ok + failed + timed out,
//! none failed, every BYE answered, and the UAS saw each INVITE, ACK and BYE); REGISTERs over TCP, TLS (a certificate for 127.0.0.1 signed by a CA
//! generated here), WebSocket and secure WebSocket, persistent and a connection per request;
//! and REGISTER, call and MESSAGE through a node that authenticates (its 401s and 407s answered).
//!
//! The node binary is not built for this crate's tests by Cargo (CARGO_BIN_EXE_sipshard exists
//! only in the engine's): it is taken from next to `sipshard-load` (target/debug/), where
//! `cargo test --workspace` builds it before any test runs. If it is missing, or older than the
//! sources it is built from (a `cargo test -p sipshard-loadtest` after editing the node), the
//! test fails saying how to build it rather than testing a stale node.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use support::stream::Certificates;
use support::{LOAD, load, out_path, read_json, server, stop};

/// The node next to `sipshard-load`, checked to be newer than its sources.
fn node_binary() -> PathBuf {
    let binary = Path::new(LOAD).with_file_name("sipshard");
    let build =
        "`cargo test --workspace` builds it, or `cargo build -p sipshard-engine --bin sipshard`";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("no node binary at {}: {e}; {build}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let sources = ["engine/src", "registrar/src", "net/src"].map(|d| root.join(d));
    if let Some((newest, path)) = sources.iter().filter_map(|d| newest_file(d)).max() {
        assert!(
            newest <= built,
            "{} is older than {}: {build}",
            binary.display(),
            path.display()
        );
    }
    binary
}

/// The most recently modified file under `dir` and its time.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(found) = found {
            if newest.as_ref().is_none_or(|(t, _)| found.0 > *t) {
                newest = Some(found);
            }
        }
    }
    newest
}

/// A loopback port free on both UDP and TCP a moment ago.
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both UDP and TCP on 127.0.0.1")
}

/// The node, killed and reaped on drop.
struct Node {
    child: Child,
    /// `sip:` (UDP and TCP) on this port.
    port: u16,
    /// `sips:` (TLS) on this port.
    tls_port: u16,
    /// WebSocket and secure WebSocket on these.
    ws_port: u16,
    wss_port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// A registrar and proxy for the domain 127.0.0.1, one shard, listening on UDP, TCP, TLS,
    /// WS and WSS, with `certs`' server certificate.
    fn start(certs: &Certificates) -> Node {
        Node::start_with(certs, &[])
    }

    /// As `start`, with `extra` `--set` settings.
    fn start_with(certs: &Certificates, extra: &[String]) -> Node {
        let [port, tls_port, ws_port, wss_port] = [(); 4].map(|()| free_port());
        let settings = [
            format!(
                "global/transports=sip:127.0.0.1:{port} sips:127.0.0.1:{tls_port} \
                 sip:127.0.0.1:{ws_port};transport=ws sip:127.0.0.1:{wss_port};transport=wss"
            ),
            "module::Registrar/reg-domains=127.0.0.1 localhost".to_owned(),
            format!("global/tls-certificates-file={}", certs.path("cert.pem")),
            format!(
                "global/tls-certificates-private-key={}",
                certs.path("key.pem")
            ),
        ];
        let mut command = Command::new(node_binary());
        for s in settings.iter().chain(extra) {
            command.args(["--set", s]);
        }
        let mut child = command
            .args(["--threads", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipshard");
        let stdout = child.stdout.take().expect("stdout");
        let node = Node {
            child,
            port,
            tls_port,
            ws_port,
            wss_port,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the node's `listening on` line within 10 s");
        assert!(line.contains(&port.to_string()), "{line}");
        node
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn counts(json: &serde_json::Value, path: &str) -> [u64; 4] {
    let c = json
        .pointer(path)
        .unwrap_or_else(|| panic!("no {path} in {json}"));
    ["sent", "ok", "failed", "timed_out"]
        .map(|k| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {c}")))
}

#[test]
fn calls_through_the_node_reach_the_uas_over_udp_tcp_tls_and_websocket() {
    let certs = Certificates::new("node-calls");
    let node = Node::start(&certs);
    let uas = server("uas", &[]);
    let target = node.addr();
    // 50 users, each bound to the UAS.
    let (code, stdout, path) = load(
        "node-register-uas",
        &[
            "register",
            "--target",
            &target,
            "--rate",
            "500",
            "--count",
            "50",
            "--users",
            "callee%d",
            "--user-count",
            "50",
            "--contact",
            &uas.addr,
        ],
    );
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(counts(&json, "/counts"), [50, 50, 0, 0], "{json}");
    let ca = certs.path("ca.pem");
    let at = |port: u16| format!("127.0.0.1:{port}");
    let calls: [(&str, String, &[&str]); 4] = [
        ("udp", target.clone(), &[]),
        ("tcp", target.clone(), &[]),
        ("tls", at(node.tls_port), &["--tls-ca", &ca]),
        ("ws", at(node.ws_port), &[]),
    ];
    for (transport, target, extra) in &calls {
        let name = format!("node-call-{transport}");
        let mut args = vec![
            "call",
            "--transport",
            transport,
            "--target",
            target,
            "--rate",
            "200",
            "--count",
            "100",
            "--hold-ms",
            "50",
            "--users",
            "callee%d",
            "--user-count",
            "50",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, path) = load(&name, &args);
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        assert_eq!(code, Some(0), "{transport}: {stdout}\n{json}");
        assert_eq!(
            counts(&json, "/counts"),
            [100, 100, 0, 0],
            "{transport}: {json}"
        );
        assert_eq!(
            counts(&json, "/bye/counts"),
            [100, 100, 0, 0],
            "{transport}: {json}"
        );
        // Every final response ACKed, and again each retransmitted one (on a loaded machine
        // the node retransmits INVITEs to the UAS, which answers each with its 200 again).
        let late = json["counts"]["late"].as_u64().expect("late");
        assert_eq!(json["calls"]["acks"], 100 + late, "{transport}: {json}");
        assert_eq!(json["calls"]["no_dialog"], 0, "{transport}: {json}");
        assert_eq!(json["counts"]["unexpected"], 0, "{transport}: {json}");
    }
    // The UAS saw each INVITE, ACK and BYE (and any the node retransmitted to it).
    assert_uas_saw(uas, [400, 400, 400, 0]);
}

/// The node with `[module::Authentication]` (a Flexisip password file, SHA-512-256, SHA-256 and
/// MD5 offered): REGISTERs answer its 401s, and MESSAGEs and INVITEs from each user to the one
/// before it answer its 407s (the INVITE's 407 ACKed and the INVITE resent); every count adds
/// up, and no request fails (the node answers wrong
/// credentials with another challenge, a failure here). The BYEs, in-dialog, are not
/// challenged.
#[test]
fn calls_and_messages_answer_the_challenges_of_a_node_that_authenticates() {
    const USERS: u64 = 20;
    let certs = Certificates::new("node-auth");
    let password_file = out_path("node-auth-passwords");
    let csv = out_path("node-auth-users.csv");
    let mut passwords = String::from("version:1\n");
    let mut users = String::from("user,password\n");
    for n in 0..USERS {
        passwords.push_str(&format!("caller{n}@127.0.0.1 clrtxt:pw-{n} ;\n"));
        users.push_str(&format!("caller{n},pw-{n}\n"));
    }
    std::fs::write(&password_file, passwords).expect("write the password file");
    std::fs::write(&csv, users).expect("write the users");
    let node = Node::start_with(
        &certs,
        &[
            "module::Authentication/enabled=true".to_owned(),
            format!(
                "module::Authentication/file-path={}",
                password_file.display()
            ),
            "module::Authentication/available-algorithms=SHA-512-256 SHA-256 MD5".to_owned(),
        ],
    );
    let uas = server("uas", &[]);
    let target = node.addr();
    let csv_path = csv.to_str().expect("a UTF-8 path");
    let run = |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--target", &target, "--users-csv", csv_path]);
        let (code, stdout, path) = load(name, &all);
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        (code, stdout, json)
    };
    let count = USERS.to_string();
    let (code, stdout, json) = run(
        "node-auth-register",
        &[
            "register",
            "--rate",
            "500",
            "--count",
            &count,
            "--contact",
            &uas.addr,
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(counts(&json, "/counts"), [USERS, USERS, 0, 0], "{json}");
    assert_eq!(json["counts"]["challenged"], USERS, "{json}");

    let (code, stdout, json) = run(
        "node-auth-call",
        &["call", "--rate", "200", "--count", "100", "--hold-ms", "50"],
    );
    let _ = std::fs::remove_file(&password_file);
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(counts(&json, "/counts"), [100, 100, 0, 0], "{json}");
    assert_eq!(json["counts"]["challenged"], 100, "{json}");
    assert_eq!(
        json["statuses"],
        serde_json::json!({ "200": 100 }),
        "{json}"
    );
    assert_eq!(counts(&json, "/bye/counts"), [100, 100, 0, 0], "{json}");
    assert_eq!(json["bye"]["counts"]["challenged"], 0, "{json}");
    // One ACK to each 407 and to each 200, and again to each retransmitted one (a loaded
    // machine makes some; the ACK's form is `call`'s and `uas`' unit tests').
    let late = json["counts"]["late"].as_u64().expect("late");
    assert_eq!(json["calls"]["acks"], 200 + late, "{json}");
    assert_eq!(json["counts"]["unexpected"], 0, "{json}");

    let (code, stdout, json) = run(
        "node-auth-message",
        &["message", "--rate", "200", "--count", "100"],
    );
    let _ = std::fs::remove_file(&csv);
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(counts(&json, "/counts"), [100, 100, 0, 0], "{json}");
    assert_eq!(json["counts"]["challenged"], 100, "{json}");
    assert_eq!(json["counts"]["unexpected"], 0, "{json}");

    // The authenticated requests reached the UAS; the MESSAGEs count as `other`.
    assert_uas_saw(uas, [100, 100, 100, 100]);
}

/// Stops the UAS and checks its counts (printed once a second: the last line has them all):
/// at least `[invite, ack, bye, other]` (more when the node retransmitted requests to it, on a
/// loaded machine; the generator's JSON has the exact end-to-end counts), and no unknown BYE,
/// CANCEL or dropped datagram.
fn assert_uas_saw(uas: support::Server, at_least: [u64; 4]) {
    std::thread::sleep(Duration::from_millis(1300));
    let stderr = stop(uas);
    let last = stderr.lines().last().unwrap_or_default();
    let words: Vec<&str> = last.split_whitespace().collect();
    let count = |name: &str| -> u64 {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("no {name} in {last:?}"));
        words[at + 1].parse().expect("a count")
    };
    let seen = ["invite", "ack", "bye", "other"].map(count);
    assert!(
        seen.iter().zip(at_least).all(|(s, n)| *s >= n),
        "{seen:?} < {at_least:?}: {stderr}"
    );
    assert_eq!(
        ["bye-unknown", "cancel", "dropped"].map(count),
        [0, 0, 0],
        "{stderr}"
    );
}

#[test]
fn registers_through_the_node_over_tcp_tls_and_websocket() {
    let certs = Certificates::new("node-register");
    let node = Node::start(&certs);
    let ca = certs.path("ca.pem");
    let tls_target = format!("127.0.0.1:{}", node.tls_port);
    let ws_target = format!("127.0.0.1:{}", node.ws_port);
    let wss_target = format!("127.0.0.1:{}", node.wss_port);
    let tls = ["--tls-ca", ca.as_str()];
    let runs: [(&str, &str, Vec<&str>); 5] = [
        ("tcp", &node.addr(), vec!["--transport", "tcp"]),
        (
            "tls",
            &tls_target,
            [&["--transport", "tls"][..], &tls].concat(),
        ),
        (
            "tls-per-request",
            &tls_target,
            [
                &["--transport", "tls", "--connection-per-request"][..],
                &tls,
            ]
            .concat(),
        ),
        ("ws", &ws_target, vec!["--transport", "ws"]),
        (
            "wss-per-request",
            &wss_target,
            [
                &["--transport", "wss", "--connection-per-request"][..],
                &tls,
            ]
            .concat(),
        ),
    ];
    for (name, target, extra) in &runs {
        let mut args = vec![
            "register",
            "--target",
            target,
            "--rate",
            "400",
            "--count",
            "200",
            "--threads",
            "2",
            "--user-count",
            "100",
        ];
        args.extend(extra);
        let (code, stdout, path) = load(&format!("node-register-{name}"), &args);
        let json = read_json(&path);
        let _ = std::fs::remove_file(path);
        assert_eq!(code, Some(0), "{name}: {stdout}\n{json}");
        assert_eq!(counts(&json, "/counts"), [200, 200, 0, 0], "{name}: {json}");
        let c = &json["connections"];
        let (opened, handshakes) = match *name {
            "tcp" | "ws" => (2, 0),
            "tls" => (2, 2),
            _ => (200, 200),
        };
        assert_eq!(
            [&c["opened"], &c["tls_handshakes"]],
            [opened, handshakes],
            "{name}: {json}"
        );
        assert_eq!(c["failed"], 0, "{name}: {json}");
    }
}
