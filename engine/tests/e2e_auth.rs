//! Digest authentication end to end: the `sipshard` binary with `[module::Authentication]`
//! enabled and a password file, against SIPp (MD5) and against a small UDP client written here
//! (SHA-256, which SIPp 3.6.1 cannot compute: its `[authentication]` knows MD5 and AKAv1-MD5
//! only, and it stops with "createAuthHeader: authentication must use MD5 or AKAv1-MD5" when the
//! first challenge it reads is SHA-256). Also the start-up errors an operator can meet.

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sipshard_engine::auth::digest::{DigestRequest, expected_response, password_ha1};
use sipshard_engine::auth::{Algorithm, DigestHash};
use sipshard_net::{HeaderName, Message};
use support::{InjectionFile, Node, SIPP_TIMEOUT, Sipp, TempDir};

const REALM: &str = "127.0.0.1";

/// A node with authentication enabled, its password file in a temporary directory.
struct AuthNode {
    node: Node,
    target: String,
    _dir: TempDir,
}

fn auth_node(password_file: &str, extra: &[&str]) -> AuthNode {
    let dir = TempDir::new("auth-passwords");
    let path = dir.join("passwords");
    std::fs::write(&path, password_file).expect("write the password file");
    let file_path = format!("module::Authentication/file-path={}", path.display());
    let mut args = vec![
        "--threads",
        "2",
        "--set",
        "module::Authentication/enabled=true",
        "--set",
        &file_path,
    ];
    args.extend_from_slice(extra);
    let port = support::free_port();
    let node = Node::start_on(port, &args);
    AuthNode {
        node,
        target: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

const ALICE: &str = "version:1\nalice@127.0.0.1 clrtxt:wonderland ;\n";

fn sipp_register(
    node: &AuthNode,
    user: &str,
    password: &str,
    args: &[&str],
) -> support::SippResult {
    let users = InjectionFile::sequential(&[&format!("{user};127.0.0.1:5070;")]);
    let mut all = vec!["-inf", users.path(), "-au", user, "-ap", password];
    all.extend_from_slice(args);
    Sipp::run("register_auth.xml", &node.target, &all, SIPP_TIMEOUT)
}

#[test]
fn sipp_registers_with_md5_over_udp_and_tcp() {
    let mut node = auth_node(ALICE, &[]);
    for transport in ["u1", "t1"] {
        sipp_register(
            &node,
            "alice",
            "wonderland",
            &["-t", transport, "-m", "3", "-r", "20"],
        )
        .assert_success(3);
    }
    node.node.process.assert_running();
}

#[test]
fn wrong_passwords_unknown_users_and_no_credentials_fail() {
    let node = auth_node(ALICE, &[]);
    // A second 401 instead of the 200: the scenario fails.
    sipp_register(&node, "alice", "not-wonderland", &[]).assert_all_failed(1);
    sipp_register(&node, "mallory", "wonderland", &[]).assert_all_failed(1);
    // The plain register scenario, which does not answer challenges, is refused too.
    let users = InjectionFile::sequential(&["alice;127.0.0.1:5070;"]);
    Sipp::run(
        "register.xml",
        &node.target,
        &["-inf", users.path()],
        SIPP_TIMEOUT,
    )
    .assert_all_failed(1);
    // And alice still gets in (two failures from this address are far from a lockout).
    sipp_register(&node, "alice", "wonderland", &[]).assert_success(1);
}

/// A phone over UDP that answers digest challenges itself.
struct Phone {
    socket: UdpSocket,
    target: String,
    cseq: u32,
}

/// One challenge of a 401: its algorithm, realm and nonce.
#[derive(Debug, Clone)]
struct Challenge {
    algorithm: String,
    realm: String,
    nonce: String,
}

impl Phone {
    fn new(target: &str) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        Phone {
            socket,
            target: target.to_owned(),
            cseq: 0,
        }
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.target)
    }

    /// Sends a REGISTER for `user` (with `authorization`) and returns the final response.
    fn register(&mut self, user: &str, authorization: Option<&str>) -> Vec<u8> {
        self.cseq += 1;
        let local = self.socket.local_addr().expect("local address");
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let request = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-e2e-auth-{cseq}-{port};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{REALM}>;tag=e2e-{port}\r\n\
             To: <sip:{user}@{REALM}>\r\n\
             Call-ID: e2e-auth-{user}-{port}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Expires: 600\r\n\
             {auth}\
             Content-Length: 0\r\n\r\n",
            uri = self.request_uri(),
            cseq = self.cseq,
            port = local.port(),
        );
        self.socket
            .send_to(request.as_bytes(), &self.target)
            .expect("send the REGISTER");
        let mut buf = vec![0; 65_535];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no answer to CSeq {}: {e}", self.cseq));
            let msg = Message::parse_datagram(&buf[..n]).expect("the node's answer parses");
            let ours = msg.cseq().is_ok_and(|c| c.seq == self.cseq);
            if ours && msg.status().is_some_and(|s| s >= 200) {
                return buf[..n].to_vec();
            }
        }
    }

    /// The challenges of a 401, in the order given.
    fn challenges(response: &[u8]) -> Vec<Challenge> {
        let msg = Message::parse_datagram(response).expect("parses");
        assert_eq!(
            msg.status(),
            Some(401),
            "{}",
            String::from_utf8_lossy(response)
        );
        msg.auth_headers(HeaderName::WwwAuthenticate)
            .map(|h| {
                let h = h.expect("a challenge parses");
                let param =
                    |name| String::from_utf8(h.param(name).expect(name).to_vec()).expect("ASCII");
                Challenge {
                    algorithm: param("algorithm"),
                    realm: param("realm"),
                    nonce: param("nonce"),
                }
            })
            .collect()
    }

    /// The Authorization value for a REGISTER answering `challenge` with nonce-count `nc`,
    /// computed with the auth module's own digest functions.
    fn authorization(&self, user: &str, password: &str, challenge: &Challenge, nc: u32) -> String {
        let algorithm = Algorithm::from_name(challenge.algorithm.as_bytes()).expect("known");
        let ha1 = password_ha1(
            algorithm.hash(),
            user.as_bytes(),
            challenge.realm.as_bytes(),
            password.as_bytes(),
        );
        let nc = format!("{nc:08x}");
        let uri = self.request_uri();
        let request = DigestRequest {
            method: b"REGISTER",
            digest_uri: uri.as_bytes(),
            nonce: challenge.nonce.as_bytes(),
            nc: nc.as_bytes(),
            cnonce: b"e2e-cnonce",
            qop: b"auth",
        };
        let response = expected_response(algorithm, &ha1, &request);
        format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"e2e-cnonce\"",
            challenge.realm,
            challenge.nonce,
            response.as_str(),
            challenge.algorithm
        )
    }
}

fn status(response: &[u8]) -> u16 {
    Message::parse_datagram(response)
        .ok()
        .and_then(|m| m.status())
        .expect("a response")
}

#[test]
fn sha256_and_md5_offered_together() {
    let carol_sha256 = password_ha1(DigestHash::Sha256, b"carol", REALM.as_bytes(), b"pw-carol");
    let dave_md5 = password_ha1(DigestHash::Md5, b"dave", REALM.as_bytes(), b"pw-dave");
    let passwords = format!(
        "version:1\n\
         alice@127.0.0.1 clrtxt:wonderland ;\n\
         carol@127.0.0.1 sha256:{} ;\n\
         dave@127.0.0.1 md5:{} ;\n",
        carol_sha256.as_str(),
        dave_md5.as_str()
    );
    let node = auth_node(
        &passwords,
        &[
            "--set",
            "module::Authentication/available-algorithms=MD5 SHA-256",
        ],
    );
    // dave's MD5 hash cannot serve SHA-256: said at start-up, before `listening on`.
    let stderr = node.node.process.stderr();
    assert!(
        stderr.contains("1 of 3 users")
            && stderr.contains("dave@127.0.0.1")
            && stderr.contains("SHA-256"),
        "{stderr}"
    );

    let mut phone = Phone::new(&node.target);
    let first = phone.register("alice", None);
    let challenges = Phone::challenges(&first);
    let algorithms: Vec<&str> = challenges.iter().map(|c| c.algorithm.as_str()).collect();
    assert_eq!(algorithms, ["SHA-256", "MD5"], "strongest first (RFC 8760)");
    assert_eq!(challenges[0].nonce, challenges[1].nonce);
    assert_eq!(challenges[0].realm, REALM);

    // SHA-256, the first offered: registered, and the 200 lists the binding.
    let credentials = phone.authorization("alice", "wonderland", &challenges[0], 1);
    let ok = phone.register("alice", Some(&credentials));
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    assert!(
        Message::parse_datagram(&ok)
            .expect("parses")
            .contacts()
            .next()
            .is_some()
    );
    // The next nonce-count on the same nonce re-registers without a new challenge…
    let next = phone.authorization("alice", "wonderland", &challenges[0], 2);
    assert_eq!(status(&phone.register("alice", Some(&next))), 200);
    // …and the same one again is a replay.
    assert_eq!(status(&phone.register("alice", Some(&next))), 401);

    // carol has only a SHA-256 hash: SHA-256 works.
    let mut carol = Phone::new(&node.target);
    let challenges = Phone::challenges(&carol.register("carol", None));
    let credentials = carol.authorization("carol", "pw-carol", &challenges[0], 1);
    assert_eq!(status(&carol.register("carol", Some(&credentials))), 200);

    // dave has only an MD5 hash: SHA-256 fails, MD5 (the second challenge) works.
    let mut dave = Phone::new(&node.target);
    let challenges = Phone::challenges(&dave.register("dave", None));
    let sha = dave.authorization("dave", "pw-dave", &challenges[0], 1);
    let refused = dave.register("dave", Some(&sha));
    let challenges = Phone::challenges(&refused);
    let md5 = dave.authorization("dave", "pw-dave", &challenges[1], 1);
    assert_eq!(status(&dave.register("dave", Some(&md5))), 200);
}

/// Runs `sipshard ARGS`, which must exit (within 10 s) with status 2; returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipshard"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipshard");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sipshard {args:?} started instead of refusing its configuration");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn start_up_refuses_what_cannot_work() {
    let port = support::free_port();
    let transports = format!("global/transports=sip:127.0.0.1:{port}");
    let start = |extra: &[&str]| {
        let mut args = vec!["--set", transports.as_str()];
        args.extend_from_slice(extra);
        refused_start(&args)
    };
    assert_eq!(
        start(&["--set", "module::Authentication/enabled=true"]),
        "sipshard: --set module::Authentication/enabled: [module::Authentication] enabled=true \
         needs file-path (the password file)"
    );

    let dir = TempDir::new("auth-bad-files");
    let missing = dir.join("missing");
    let set_path = |path: &Path| format!("module::Authentication/file-path={}", path.display());
    let message = start(&[
        "--set",
        "module::Authentication/enabled=true",
        "--set",
        &set_path(&missing),
    ]);
    assert!(
        message.starts_with(&format!(
            "sipshard: [module::Authentication] file-path {}: cannot open: ",
            missing.display()
        )),
        "{message}"
    );

    let broken = dir.join("passwords");
    std::fs::write(
        &broken,
        "version:1\nalice@127.0.0.1 clrtxt:wonderland ;\nbob@127.0.0.1 clrtxt:hunter2\n",
    )
    .expect("write");
    let message = start(&[
        "--set",
        "module::Authentication/enabled=true",
        "--set",
        &set_path(&broken),
    ]);
    assert_eq!(
        message,
        format!(
            "sipshard: [module::Authentication] file-path {}:3: the credentials must end with ` ;`",
            broken.display()
        )
    );
    assert!(!message.contains("hunter2"));

    let message = start(&["--set", "module::Authentication/db-implementation=soci"]);
    assert!(message.contains("expected file"), "{message}");
}

/// SIGHUP reads the password file again: a changed password works at once, the old one no
/// longer does, and a file that cannot be parsed leaves the previous one in force.
#[test]
fn sighup_reloads_the_password_file() {
    let mut node = auth_node(ALICE, &[]);
    sipp_register(&node, "alice", "wonderland", &[]).assert_success(1);
    let path = node._dir.join("passwords");
    let hup = |node: &AuthNode| {
        let status = Command::new("kill")
            .args(["-HUP", &node.node.process.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    };

    std::fs::write(&path, "version:1\nalice@127.0.0.1 clrtxt:looking-glass ;\n")
        .expect("rewrite the password file");
    hup(&node);
    // The shards take the new file on their next 10 ms tick; allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = sipp_register(&node, "alice", "looking-glass", &[]);
        if attempt.successful_calls == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new password is not in force 5 s after SIGHUP: {attempt:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    sipp_register(&node, "alice", "wonderland", &[]).assert_all_failed(1);

    // A broken file: the node keeps the last good one (and keeps running).
    std::fs::write(&path, "version:1\nalice@127.0.0.1 rot13:looking-glass ;\n")
        .expect("rewrite the password file");
    hup(&node);
    thread::sleep(Duration::from_millis(300));
    sipp_register(&node, "alice", "looking-glass", &[]).assert_success(1);
    node.node.process.assert_running();
}
