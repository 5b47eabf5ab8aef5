//! `sipshard-load register` with digest authentication, against a challenging registrar written
//! here: it answers a REGISTER without credentials with 401 (or 407) and a fresh nonce, checks
//! the credentials of the resent REGISTER with its own digest computation (RFC 2617 / RFC 7616)
//! and a known password, and answers 200 when they are right, another challenge when not.

mod support;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};
use sipshard_net::{AuthHeader, HeaderName, Message};
use support::{load, out_path, read_json};

const REALM: &str = "sipshard.test";

#[derive(Default, Debug)]
struct Seen {
    challenges: u64,
    accepted: u64,
    rejected: u64,
    /// Accepted credentials by algorithm.
    algorithms: Vec<String>,
    /// Resent REGISTERs that were not CSeq 2 with the challenged Call-ID.
    bad_resends: u64,
}

struct Registrar {
    addr: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hex<D: Digest>(parts: &[&str]) -> String {
    let mut h = D::new();
    h.update(parts.join(":").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn h(algorithm: &str, parts: &[&str]) -> String {
    match algorithm {
        "MD5" => hex::<Md5>(parts),
        "SHA-256" => hex::<Sha256>(parts),
        other => panic!("unexpected algorithm {other}"),
    }
}

/// `challenge`: the authenticate header lines (with `{nonce}` for the nonce); `proxy`: 407.
fn registrar(password: &'static str, challenge: &'static str, proxy: bool) -> Registrar {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65535];
        let mut nonces = std::collections::HashMap::new();
        let mut next_nonce = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let request = &buf[..len];
            let msg = Message::parse_datagram(request).expect("a parseable request");
            let text = std::str::from_utf8(request).unwrap();
            let copied: String = text
                .split("\r\n")
                .filter(|l| {
                    ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            let call_id = msg.call_id().unwrap().to_owned();
            let cseq = msg.cseq().unwrap().seq;
            let name = if proxy {
                HeaderName::ProxyAuthorization
            } else {
                HeaderName::Authorization
            };
            let credentials = msg.auth_headers(name).next().map(|a| a.unwrap());
            let mut seen = seen2.lock().unwrap();
            let ok = credentials.is_some_and(|a: AuthHeader<'_>| {
                let p = |n: &str| {
                    std::str::from_utf8(a.param(n).unwrap_or_default())
                        .unwrap()
                        .to_owned()
                };
                let nonce = p("nonce");
                // The nonce must be one given for this Call-ID, used once, with CSeq 2.
                if nonces.remove(&nonce) != Some(call_id.clone()) || cseq != 2 {
                    seen.bad_resends += 1;
                    return false;
                }
                let algorithm = a
                    .param("algorithm")
                    .map_or("MD5".to_owned(), |v| String::from_utf8_lossy(v).into());
                let user = p("username");
                let ha1 = h(&algorithm, &[&user, REALM, password]);
                let ha2 = h(&algorithm, &["REGISTER", &p("uri")]);
                let expected = if a.param("qop").is_some() {
                    assert_eq!(p("qop"), "auth");
                    h(
                        &algorithm,
                        &[&ha1, &nonce, &p("nc"), &p("cnonce"), "auth", &ha2],
                    )
                } else {
                    h(&algorithm, &[&ha1, &nonce, &ha2])
                };
                let right = p("response") == expected
                    && p("realm") == REALM
                    && p("uri") == msg.request_uri().unwrap().as_str()
                    && text.contains(&format!("To: <sip:{user}@"));
                if right {
                    seen.algorithms.push(algorithm);
                }
                right
            });
            let response = if ok {
                seen.accepted += 1;
                format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n")
            } else {
                if credentials.is_some() {
                    seen.rejected += 1;
                }
                seen.challenges += 1;
                next_nonce += 1;
                let nonce = format!("nonce{next_nonce}");
                nonces.insert(nonce.clone(), call_id);
                let (status, header) = if proxy {
                    ("407 Proxy Authentication Required", "Proxy-Authenticate")
                } else {
                    ("401 Unauthorized", "WWW-Authenticate")
                };
                let challenges: String = challenge
                    .lines()
                    .map(|c| format!("{header}: {}\r\n", c.replace("{nonce}", &nonce)))
                    .collect();
                format!("SIP/2.0 {status}\r\n{copied}{challenges}Content-Length: 0\r\n\r\n")
            };
            drop(seen);
            socket.send_to(response.as_bytes(), peer).unwrap();
        }
    });
    Registrar {
        addr,
        stop,
        seen,
        thread: Some(thread),
    }
}

/// MD5 offered first, SHA-256 second (RFC 8760 wants the preferred first; the client must pick
/// the strongest whatever the order), and a `-sess` one it cannot answer.
const MD5_AND_SHA256: &str =
    "Digest realm=\"sipshard.test\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"
Digest realm=\"sipshard.test\", nonce=\"{nonce}\", algorithm=SHA-256-sess, qop=\"auth\"
Digest realm=\"sipshard.test\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\", opaque=\"op\"";

fn counts(json: &serde_json::Value) -> [u64; 5] {
    ["sent", "ok", "failed", "timed_out", "challenged"].map(|k| {
        json["counts"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k}: {json}"))
    })
}

fn register(name: &str, target: &str, extra: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let mut args = vec![
        "register",
        "--target",
        target,
        "--rate",
        "1000",
        "--count",
        "200",
        "--user-count",
        "50",
        // RFC 3261's T1: a shorter one makes a REGISTER retransmitted on a loaded machine
        // before its challenge comes, which the registrar here counts as another challenge.
        "--t1-ms",
        "500",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, path) = load(name, &args);
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    (code, stdout, json)
}

#[test]
fn the_right_password_registers_with_the_strongest_algorithm() {
    let r = registrar("s3cret", MD5_AND_SHA256, false);
    let (code, stdout, json) = register("auth-right", &r.addr, &["--password", "s3cret"]);
    assert_eq!(code, Some(0), "{stdout}\n{json}");
    assert_eq!(counts(&json), [200, 200, 0, 0, 200], "{json}");
    assert_eq!(json["counts"]["retransmissions"], 0, "{json}");
    assert_eq!(
        json["statuses"],
        serde_json::json!({ "200": 200 }),
        "{json}"
    );
    // One latency per REGISTER, from the first one's intended send to the 200.
    assert_eq!(json["latency_ms"]["corrected"]["count"], 200, "{json}");
    assert!(stdout.contains("challenged 200"), "{stdout}");
    let seen = r.seen.lock().unwrap();
    assert_eq!(
        (
            seen.challenges,
            seen.accepted,
            seen.rejected,
            seen.bad_resends
        ),
        (200, 200, 0, 0)
    );
    assert!(
        seen.algorithms.iter().all(|a| a == "SHA-256"),
        "{:?}",
        seen.algorithms
    );
}

#[test]
fn a_wrong_password_fails_at_the_second_challenge() {
    let r = registrar("s3cret", MD5_AND_SHA256, false);
    let (code, stdout, json) = register("auth-wrong", &r.addr, &["--password", "guess"]);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    assert_eq!(counts(&json), [200, 0, 200, 0, 200], "{json}");
    assert_eq!(
        json["statuses"],
        serde_json::json!({ "401": 200 }),
        "{json}"
    );
    let seen = r.seen.lock().unwrap();
    assert_eq!(
        (seen.challenges, seen.accepted, seen.rejected),
        (400, 0, 200)
    );
}

#[test]
fn without_a_password_a_challenge_is_a_failure() {
    let r = registrar("s3cret", MD5_AND_SHA256, false);
    let (code, stdout, json) = register("auth-none", &r.addr, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    assert_eq!(counts(&json), [200, 0, 200, 0, 0], "{json}");
}

#[test]
fn a_proxy_challenge_without_qop_is_answered_from_the_password_file() {
    // 407 and RFC 2069 digest (no qop, no algorithm: MD5). Users user000000..user000049; the
    // file gives user000007 a wrong password.
    let r = registrar(
        "pw",
        "Digest realm=\"sipshard.test\", nonce=\"{nonce}\"",
        true,
    );
    let file = out_path("passwords");
    let mut text = String::from("# USER:PASSWORD\n");
    for n in 0..50 {
        let pw = if n == 7 { "nope" } else { "pw" };
        text.push_str(&format!("user{n:06}:{pw}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let (code, stdout, json) = register(
        "auth-file",
        &r.addr,
        &["--passwords", file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    // 200 REGISTERs over 50 users: user000007 four times.
    assert_eq!(counts(&json), [200, 196, 4, 0, 200], "{json}");
    let seen = r.seen.lock().unwrap();
    assert_eq!(
        (seen.accepted, seen.rejected, seen.bad_resends),
        (196, 4, 0)
    );
    assert!(seen.algorithms.iter().all(|a| a == "MD5"));
}

#[test]
fn users_from_a_csv_answer_with_their_own_passwords() {
    // alice and carol have the registrar's password, bob a wrong one, dave none (his challenge
    // is a failure, not answered); carol's AOR is at another domain.
    let r = registrar("s3cret", MD5_AND_SHA256, false);
    let file = out_path("users.csv");
    std::fs::write(
        &file,
        "user,password,domain\nalice,s3cret\nbob,guess\ncarol,s3cret,example.org\ndave,\n",
    )
    .unwrap();
    let (code, stdout, path) = load(
        "auth-csv",
        &[
            "register",
            "--target",
            &r.addr,
            "--rate",
            "1000",
            "--count",
            "40",
            "--t1-ms",
            "500",
            "--users-csv",
            file.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&file);
    let json = read_json(&path);
    let _ = std::fs::remove_file(path);
    assert_eq!(code, Some(1), "{stdout}\n{json}");
    // Each user 10 times: alice and carol registered; bob challenged twice; dave once.
    assert_eq!(counts(&json), [40, 20, 20, 0, 30], "{json}");
    assert_eq!(
        json["settings"]["users"],
        serde_json::json!({ "count": 4, "from": "csv" })
    );
    let seen = r.seen.lock().unwrap();
    assert_eq!(
        (
            seen.challenges,
            seen.accepted,
            seen.rejected,
            seen.bad_resends
        ),
        (50, 20, 10, 0)
    );
}
