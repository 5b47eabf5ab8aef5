//! Digest authentication inside the shard core, with a fake clock (monotonic and wall): what a
//! phone, a password guesser and a user enumerator see on the wire. The client side computes
//! digests with the hash crates directly, from RFC 2617 §3.2.2, not with the engine's own
//! functions.

mod core_support;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};
use sipshard_engine::auth::{AuthSettings, PasswordDb};
use sipshard_engine::core::{CoreSettings, Inbound, Output, ShardAuthSettings, ShardCore};
use sipshard_net::{AuthHeader, HeaderName, Message, Transport};

const PROXY: &str = "127.0.0.1:5060";
const ALICE_PHONE: &str = "127.0.0.2:5070";
const GUESSER: &str = "127.0.0.66:5070";
const GATEWAY: &str = "127.0.0.50:5060";
const FOREIGN_CALLER: &str = "127.0.0.9:5090";
const SECRET: &str = "a cluster-wide secret, 32 bytes";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Any fixed date: nonces carry it.
fn wall(offset_s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + offset_s)
}

fn settings() -> CoreSettings {
    let auth = AuthSettings::new(
        "example.org",
        "MD5",
        300,
        SECRET.as_bytes(),
        &[addr(GATEWAY).ip()],
    )
    .expect("valid auth settings");
    let db = PasswordDb::parse(b"version:1\nalice@example.org clrtxt:wonderland ;\n")
        .expect("valid password file");
    CoreSettings {
        auth: Some(ShardAuthSettings {
            settings: auth,
            db: Arc::new(db),
        }),
        ..core_support::core_settings()
    }
}

/// One shard core with fake clocks.
struct Sim {
    core: ShardCore,
    now: Instant,
    wall_s: u64,
    next_branch: u32,
}

#[derive(Debug)]
struct Sent {
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Sent {
    fn msg(&self) -> Message<'_> {
        Message::parse_datagram(&self.bytes).expect("the core sends valid messages")
    }

    fn status(&self) -> Option<u16> {
        self.msg().status()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl Sim {
    fn new() -> Sim {
        let mut core = ShardCore::new(0, 1, settings());
        core.set_wall_clock(wall(0));
        Sim {
            core,
            now: Instant::now(),
            wall_s: 0,
            next_branch: 0,
        }
    }

    /// Sends `request` from `from` and returns the final response sent back there (100 Trying
    /// skipped) and everything sent elsewhere.
    fn send(&mut self, from: &str, request: &str) -> (Option<Sent>, Vec<Sent>) {
        let mut out = Vec::new();
        let inbound = Inbound {
            transport: Transport::Udp,
            local: addr(PROXY),
            remote: addr(from),
            conn: None,
        };
        self.core
            .on_datagram(request.as_bytes(), inbound, self.now, &mut out);
        let mut answer = None;
        let mut elsewhere = Vec::new();
        for output in out {
            let Output::Send { to, bytes, .. } = output else {
                panic!("one shard sends nothing to other shards");
            };
            let sent = Sent {
                to,
                bytes: bytes.to_vec(),
            };
            if to == addr(from) && sent.status().is_some_and(|s| s >= 200) {
                assert!(answer.is_none(), "two final responses");
                answer = Some(sent);
            } else if to != addr(from) {
                elsewhere.push(sent);
            }
        }
        (answer, elsewhere)
    }

    /// The final status of `request` from `from`.
    fn status(&mut self, from: &str, request: &str) -> u16 {
        let (answer, _) = self.send(from, request);
        answer.and_then(|a| a.status()).expect("a final response")
    }

    fn advance_wall(&mut self, by_s: u64) {
        self.wall_s += by_s;
        self.core.set_wall_clock(wall(self.wall_s));
    }

    fn branch(&mut self) -> u32 {
        self.next_branch += 1;
        self.next_branch
    }
}

/// A REGISTER for `user` from `phone`, with `authorization` when given.
fn register(
    sim: &mut Sim,
    user: &str,
    phone: &str,
    cseq: u32,
    authorization: Option<&str>,
) -> String {
    let branch = sim.branch();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone};branch=z9hG4bK-reg{branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@example.org>;tag=r1\r\n\
To: <sip:{user}@example.org>\r\n\
Call-ID: reg@{phone}\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:{user}@{phone}>\r\n\
Expires: 3600\r\n\
{auth}\
Content-Length: 0\r\n\r\n"
    )
}

/// An INVITE to alice from `from_uri`, sent from `phone`, `to_tag` making it in-dialog.
fn invite(
    sim: &mut Sim,
    from_uri: &str,
    phone: &str,
    to_tag: Option<&str>,
    proxy_authorization: Option<&str>,
) -> String {
    let branch = sim.branch();
    let auth =
        proxy_authorization.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
    let to_tag = to_tag.map_or(String::new(), |t| format!(";tag={t}"));
    format!(
        "INVITE sip:alice@example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP {phone};branch=z9hG4bK-inv{branch}\r\n\
Max-Forwards: 70\r\n\
From: <{from_uri}>;tag=c1\r\n\
To: <sip:alice@example.org>{to_tag}\r\n\
Call-ID: call-{branch}@{phone}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:caller@{phone}>\r\n\
{auth}\
Content-Length: 0\r\n\r\n"
    )
}

fn md5_hex(text: &str) -> String {
    format!("{:x}", Md5::digest(text.as_bytes()))
}

/// A user agent answering one challenge (MD5, `qop=auth`).
struct Client {
    user: String,
    password: String,
    realm: String,
    nonce: String,
    nc: u32,
}

impl Client {
    /// Reads the challenge header `header` of `response`.
    fn new(user: &str, password: &str, response: &Sent, header: HeaderName) -> Client {
        let msg = response.msg();
        let challenge = msg
            .auth_headers(header)
            .next()
            .expect("a challenge")
            .expect("the challenge parses");
        let param =
            |name| String::from_utf8(challenge.param(name).expect(name).to_vec()).expect("ASCII");
        assert_eq!(param("algorithm"), "MD5");
        assert_eq!(param("qop"), "auth");
        Client {
            user: user.into(),
            password: password.into(),
            realm: param("realm"),
            nonce: param("nonce"),
            nc: 0,
        }
    }

    fn authorize(&mut self, method: &str, uri: &str) -> String {
        self.nc += 1;
        let nc = format!("{:08x}", self.nc);
        let cnonce = "f00dcafe";
        let ha1 = md5_hex(&format!("{}:{}:{}", self.user, self.realm, self.password));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let response = md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
        format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
            self.user, self.realm, self.nonce
        )
    }
}

/// Registers alice from her phone with her password; returns the client for more requests.
fn register_alice(sim: &mut Sim) -> Client {
    let request = register(sim, "alice", ALICE_PHONE, 1, None);
    let (challenge, _) = sim.send(ALICE_PHONE, &request);
    let challenge = challenge.expect("an answer");
    assert_eq!(challenge.status(), Some(401), "{}", challenge.text());
    let mut client = Client::new(
        "alice",
        "wonderland",
        &challenge,
        HeaderName::WwwAuthenticate,
    );
    let credentials = client.authorize("REGISTER", "sip:example.org");
    let request = register(sim, "alice", ALICE_PHONE, 2, Some(&credentials));
    assert_eq!(sim.status(ALICE_PHONE, &request), 200);
    client
}

#[test]
fn register_is_challenged_then_accepted() {
    let mut sim = Sim::new();
    let request = register(&mut sim, "alice", ALICE_PHONE, 1, None);
    let (challenge, _) = sim.send(ALICE_PHONE, &request);
    let challenge = challenge.expect("an answer");
    let text = challenge.text();
    assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
    assert!(
        text.contains("\r\nWWW-Authenticate: Digest realm=\"example.org\", nonce=\""),
        "{text}"
    );
    assert!(text.contains(", algorithm=MD5, qop=\"auth\"\r\n"), "{text}");

    let mut client = Client::new(
        "alice",
        "wonderland",
        &challenge,
        HeaderName::WwwAuthenticate,
    );
    let credentials = client.authorize("REGISTER", "sip:example.org");
    let request = register(&mut sim, "alice", ALICE_PHONE, 2, Some(&credentials));
    let (ok, _) = sim.send(ALICE_PHONE, &request);
    let ok = ok.expect("an answer");
    assert_eq!(ok.status(), Some(200), "{}", ok.text());
    assert!(
        ok.msg().contacts().next().is_some(),
        "the binding is listed"
    );

    let counters = sim.core.counters();
    assert_eq!(
        (
            counters.auth_challenged,
            counters.auth_authenticated,
            counters.registers_accepted
        ),
        (1, 1, 1)
    );
    let auth = sim.core.auth_counters().expect("auth enabled");
    assert_eq!((auth.challenged, auth.authenticated), (1, 1));
}

#[test]
fn stale_nonce_after_the_wall_clock_moves_on() {
    let mut sim = Sim::new();
    let mut client = register_alice(&mut sim);

    // 301 s later the nonce has expired: the right response gets a new nonce with stale=true,
    // so the phone retries without asking its user.
    sim.advance_wall(301);
    let credentials = client.authorize("REGISTER", "sip:example.org");
    let request = register(&mut sim, "alice", ALICE_PHONE, 3, Some(&credentials));
    let (stale, _) = sim.send(ALICE_PHONE, &request);
    let stale = stale.expect("an answer");
    assert_eq!(stale.status(), Some(401));
    assert!(
        stale.text().contains(", stale=true\r\n"),
        "{}",
        stale.text()
    );

    let mut renewed = Client::new("alice", "wonderland", &stale, HeaderName::WwwAuthenticate);
    assert_ne!(renewed.nonce, client.nonce);
    let credentials = renewed.authorize("REGISTER", "sip:example.org");
    let request = register(&mut sim, "alice", ALICE_PHONE, 4, Some(&credentials));
    assert_eq!(sim.status(ALICE_PHONE, &request), 200);
    let auth = sim.core.auth_counters().expect("auth enabled");
    assert_eq!(auth.stale_nonces, 1);
    assert_eq!(auth.bad_credentials, 0, "a stale nonce is not a failure");
}

#[test]
fn a_replayed_nonce_count_is_challenged() {
    let mut sim = Sim::new();
    let mut client = register_alice(&mut sim);
    // The next count on the same nonce is fine…
    let credentials = client.authorize("REGISTER", "sip:example.org");
    let request = register(&mut sim, "alice", ALICE_PHONE, 3, Some(&credentials));
    assert_eq!(sim.status(ALICE_PHONE, &request), 200);
    // …the same credentials again, in a new transaction, are a replay: a fresh challenge, and
    // the registrar is not reached.
    let request = register(&mut sim, "alice", ALICE_PHONE, 4, Some(&credentials));
    let (replayed, _) = sim.send(ALICE_PHONE, &request);
    let replayed = replayed.expect("an answer");
    assert_eq!(replayed.status(), Some(401));
    assert!(!replayed.text().contains("stale=true"));
    assert_eq!(sim.core.counters().registers_accepted, 2);
    assert_eq!(sim.core.auth_counters().expect("enabled").replays, 1);
}

#[test]
fn repeated_failures_lock_the_source_out_but_not_the_user() {
    let mut sim = Sim::new();
    let request = register(&mut sim, "alice", GUESSER, 1, None);
    let (challenge, _) = sim.send(GUESSER, &request);
    let challenge = challenge.expect("an answer");
    let mut guesser = Client::new("alice", "123456", &challenge, HeaderName::WwwAuthenticate);
    let mut cseq = 2;
    let mut attempt = |sim: &mut Sim| {
        let credentials = guesser.authorize("REGISTER", "sip:example.org");
        cseq += 1;
        let request = register(sim, "alice", GUESSER, cseq, Some(&credentials));
        sim.status(GUESSER, &request)
    };
    // Five wrong passwords are answered with challenges; then the pair is locked out (403)…
    for _ in 0..5 {
        assert_eq!(attempt(&mut sim), 401);
    }
    assert_eq!(attempt(&mut sim), 403);
    assert_eq!(attempt(&mut sim), 403);
    // …while alice, from her own phone, registers as usual.
    register_alice(&mut sim);
    // After the 1 s lockout the guesser may try again; the next failure doubles it.
    sim.now += Duration::from_millis(1001);
    assert_eq!(attempt(&mut sim), 401);
    assert_eq!(attempt(&mut sim), 403);
    let counters = sim.core.counters();
    assert_eq!(counters.auth_forbidden, 3);
    let auth = sim.core.auth_counters().expect("enabled");
    assert_eq!((auth.bad_credentials, auth.lockouts), (6, 2));
}

/// The response with every `nonce="…"` value blanked and `user` replaced by `USER`.
fn normalised(response: &Sent, user: &str) -> String {
    let mut text = response.text().replace(user, "USER");
    let mut at = 0;
    while let Some(found) = text[at..].find("nonce=\"") {
        let start = at + found + "nonce=\"".len();
        let end = start + text[start..].find('"').expect("closing quote");
        text.replace_range(start..end, "…");
        at = start;
    }
    text
}

#[test]
fn unknown_user_and_wrong_password_look_the_same() {
    // The same exchange, on two identical nodes: a wrong password for alice, and any password
    // for mallory, who does not exist.
    let mut seen = Vec::new();
    for (user, password) in [("alice", "not-her-password"), ("mallory", "wonderland")] {
        let mut sim = Sim::new();
        let request = register(&mut sim, user, GUESSER, 1, None);
        let (first, _) = sim.send(GUESSER, &request);
        let first = first.expect("an answer");
        let mut client = Client::new(user, password, &first, HeaderName::WwwAuthenticate);
        let credentials = client.authorize("REGISTER", "sip:example.org");
        let request = register(&mut sim, user, GUESSER, 2, Some(&credentials));
        let (second, _) = sim.send(GUESSER, &request);
        let second = second.expect("an answer");
        assert_eq!(second.status(), Some(401));
        seen.push((normalised(&first, user), normalised(&second, user)));
    }
    // Byte for byte, once the user name the request itself carried and the nonce are set aside.
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[0]
            .1
            .contains("WWW-Authenticate: Digest realm=\"example.org\"")
    );
}

#[test]
fn trusted_hosts_are_not_challenged() {
    let mut sim = Sim::new();
    // A provisioning gateway registers for alice without credentials…
    let request = register(&mut sim, "alice", GATEWAY, 1, None);
    assert_eq!(sim.status(GATEWAY, &request), 200);
    // …and alice registers her phone herself.
    register_alice(&mut sim);
    // Calls relayed by the gateway, From a local user, are routed without a challenge.
    let request = invite(&mut sim, "sip:bob@example.org", GATEWAY, None, None);
    let (answer, forwarded) = sim.send(GATEWAY, &request);
    assert!(answer.is_none(), "{:?}", answer.map(|a| a.text()));
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].to, addr(ALICE_PHONE));
    assert_eq!(
        sim.core.counters().auth_challenged,
        1,
        "alice's own 401 only"
    );
}

#[test]
fn invites_from_local_users_are_challenged_and_others_are_not() {
    let mut sim = Sim::new();
    register_alice(&mut sim);

    // bob@example.org is a local user: 407 with Proxy-Authenticate, nothing forwarded.
    let request = invite(&mut sim, "sip:bob@example.org", FOREIGN_CALLER, None, None);
    let (answer, forwarded) = sim.send(FOREIGN_CALLER, &request);
    let answer = answer.expect("an answer");
    let text = answer.text();
    assert!(
        text.starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nProxy-Authenticate: Digest realm=\"example.org\""));
    assert!(forwarded.is_empty());

    // alice calls herself with her password: forwarded to her phone, credentials unchanged.
    let request = invite(
        &mut sim,
        "sip:alice@example.org",
        FOREIGN_CALLER,
        None,
        None,
    );
    let (challenge, _) = sim.send(FOREIGN_CALLER, &request);
    let challenge = challenge.expect("an answer");
    assert_eq!(challenge.status(), Some(407));
    let mut client = Client::new(
        "alice",
        "wonderland",
        &challenge,
        HeaderName::ProxyAuthenticate,
    );
    let credentials = client.authorize("INVITE", "sip:alice@example.org");
    let request = invite(
        &mut sim,
        "sip:alice@example.org",
        FOREIGN_CALLER,
        None,
        Some(&credentials),
    );
    let (answer, forwarded) = sim.send(FOREIGN_CALLER, &request);
    assert!(answer.is_none(), "{:?}", answer.map(|a| a.text()));
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].to, addr(ALICE_PHONE));
    let forwarded = forwarded[0].msg();
    let kept: Vec<AuthHeader<'_>> = forwarded
        .auth_headers(HeaderName::ProxyAuthorization)
        .filter_map(Result::ok)
        .collect();
    assert_eq!(kept.len(), 1, "the proxy forwards credentials unchanged");

    // A caller from another domain, to a local user: not challenged, forwarded.
    let request = invite(
        &mut sim,
        "sip:carol@elsewhere.net",
        FOREIGN_CALLER,
        None,
        None,
    );
    let (answer, forwarded) = sim.send(FOREIGN_CALLER, &request);
    assert!(answer.is_none());
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].to, addr(ALICE_PHONE));

    // An in-dialog request from a local user (To tag): not challenged either (as Flexisip).
    let request = invite(
        &mut sim,
        "sip:bob@example.org",
        FOREIGN_CALLER,
        Some("callee-tag"),
        None,
    );
    let (answer, _) = sim.send(FOREIGN_CALLER, &request);
    assert_ne!(answer.and_then(|a| a.status()), Some(407));

    let counters = sim.core.counters();
    assert_eq!(
        counters.auth_challenged, 3,
        "alice's 401, bob's 407, alice's 407"
    );
    assert_eq!(counters.auth_authenticated, 2);
}
