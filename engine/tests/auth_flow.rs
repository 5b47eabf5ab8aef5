//! The authenticator driven as the shard drives it: parsed requests in, outcomes out, with a fake
//! clock. The client side is written here from the RFCs with the hash crates directly (not with
//! the engine's digest module), so a shared mistake cannot make both sides agree.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use md5::Md5;
use sha2::{Digest, Sha256};
use sipshard_engine::auth::{
    AuthOutcome, AuthSettings, AuthenticatedUser, Authenticator, ChallengeReason, ForbiddenReason,
    NotRequiredReason, PasswordDb,
};
use sipshard_net::{AuthHeader, HeaderName, Message};

const SECRET: &[u8] = b"cluster-wide nonce secret, 32 b!";
const PHONE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
const ELSEWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 5060);
const CLUSTER_NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

/// The wall clock of these tests: any fixed date will do.
fn wall(offset_s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + offset_s)
}

fn hex_md5(text: &str) -> String {
    format!("{:x}", Md5::digest(text.as_bytes()))
}

fn hex_sha256(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn password_file() -> String {
    // bob has only an MD5 HA1, as a Flexisip file migrated from an old system might.
    format!(
        "version:1\n# test users\nalice@example.org clrtxt:wonderland ;\nbob@example.org md5:{} ;\n",
        hex_md5("bob:example.org:builder")
    )
}

fn authenticator() -> Authenticator {
    let settings = AuthSettings::new("example.org", "MD5 SHA-256", 300, SECRET, &[CLUSTER_NODE])
        .expect("valid");
    let db = PasswordDb::parse(password_file().as_bytes()).expect("valid password file");
    Authenticator::new(settings, Arc::new(db), 0).expect("valid settings")
}

/// A user agent's side of digest authentication (RFC 2617 §3.2.2, RFC 7616 §3.4).
struct Client {
    user: &'static str,
    password: &'static str,
    nonce: String,
    realm: String,
    algorithm: String,
    nc: u32,
}

impl Client {
    /// Takes the first challenge whose algorithm it knows (RFC 8760 §2.4: they come strongest
    /// first).
    fn from_challenge(user: &'static str, password: &'static str, outcome: &AuthOutcome) -> Client {
        let AuthOutcome::Challenge { headers, .. } = outcome else {
            panic!("expected a challenge, got {outcome:?}");
        };
        let (_, value) = headers.first().expect("at least one challenge");
        let challenge = AuthHeader::parse(value.as_bytes()).expect("challenge parses");
        let param =
            |name| String::from_utf8(challenge.param(name).expect(name).to_vec()).expect("ASCII");
        assert_eq!(challenge.scheme, "Digest");
        assert_eq!(param("qop"), "auth");
        Client {
            user,
            password,
            nonce: param("nonce"),
            realm: param("realm"),
            algorithm: param("algorithm"),
            nc: 0,
        }
    }

    /// The next `Authorization` value for `method` to `uri`.
    fn authorize(&mut self, method: &str, uri: &str) -> String {
        self.nc += 1;
        self.authorization(method, uri, self.nc)
    }

    fn authorization(&self, method: &str, uri: &str, nc: u32) -> String {
        let h = |text: &str| match self.algorithm.as_str() {
            "MD5" => hex_md5(text),
            "SHA-256" => hex_sha256(text),
            other => panic!("client does not know {other}"),
        };
        let nc = format!("{nc:08x}");
        let cnonce = "0a4f113b";
        let ha1 = h(&format!("{}:{}:{}", self.user, self.realm, self.password));
        let ha2 = h(&format!("{method}:{uri}"));
        let response = h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
        format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"",
            self.user, self.realm, self.nonce, self.algorithm
        )
    }
}

/// A REGISTER for `aor_user`, with `authorization` if given.
fn register(aor_user: &str, authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "REGISTER sip:example.org SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{aor_user}@example.org>;tag=1\r\n\
         To: <sip:{aor_user}@example.org>\r\n\
         Call-ID: reg-1@192.0.2.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{aor_user}@192.0.2.1:5060>\r\n\
         {auth}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(from_user: &str, proxy_authorization: Option<&str>) -> Vec<u8> {
    let auth =
        proxy_authorization.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
    format!(
        "INVITE sip:carol@example.org SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-2\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@example.org>;tag=2\r\n\
         To: <sip:carol@example.org>\r\n\
         Call-ID: call-1@192.0.2.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from_user}@192.0.2.1:5060>\r\n\
         {auth}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn check(
    auth: &mut Authenticator,
    bytes: &[u8],
    from: SocketAddr,
    now: Instant,
    wall_clock: SystemTime,
) -> AuthOutcome {
    let msg = Message::parse_datagram(bytes).expect("test message parses");
    let is_register = msg.method().is_some_and(|m| m.as_str() == "REGISTER");
    auth.check(&msg, from, is_register, now, wall_clock)
}

fn reason(outcome: &AuthOutcome) -> ChallengeReason {
    match outcome {
        AuthOutcome::Challenge { reason, .. } => *reason,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn alice() -> AuthOutcome {
    AuthOutcome::Authenticated {
        user: AuthenticatedUser {
            username: "alice".into(),
            domain: "example.org".into(),
        },
    }
}

#[test]
fn register_round_trip() {
    let mut auth = authenticator();
    let t0 = Instant::now();

    // No credentials: 401 with one challenge per algorithm, strongest first, one nonce.
    let first = check(&mut auth, &register("alice", None), PHONE, t0, wall(0));
    let AuthOutcome::Challenge {
        status,
        headers,
        reason: why,
    } = &first
    else {
        panic!("expected a challenge, got {first:?}");
    };
    assert_eq!((*status, *why), (401, ChallengeReason::NoCredentials));
    assert_eq!(headers.len(), 2);
    assert!(
        headers
            .iter()
            .all(|(name, _)| *name == HeaderName::WwwAuthenticate)
    );
    assert!(
        headers[0].1.contains("algorithm=SHA-256"),
        "{}",
        headers[0].1
    );
    assert!(headers[1].1.contains("algorithm=MD5"), "{}", headers[1].1);
    assert!(
        headers[0]
            .1
            .starts_with("Digest realm=\"example.org\", nonce=\"")
    );
    assert!(!headers[0].1.contains("stale"));

    // The client answers (SHA-256, the first offered): authenticated.
    let mut client = Client::from_challenge("alice", "wonderland", &first);
    assert_eq!(client.algorithm, "SHA-256");
    let authorization = client.authorize("REGISTER", "sip:example.org");
    let request = register("alice", Some(&authorization));
    assert_eq!(check(&mut auth, &request, PHONE, t0, wall(1)), alice());

    // The same request again (same nc): a replay, challenged afresh.
    let replay = check(&mut auth, &request, PHONE, t0, wall(2));
    assert_eq!(reason(&replay), ChallengeReason::Replay);

    // The next nonce-count on the same nonce is fine (preemptive re-registration).
    let next = client.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        check(
            &mut auth,
            &register("alice", Some(&next)),
            PHONE,
            t0,
            wall(3)
        ),
        alice()
    );
    // A lower one is not.
    let lower = client.authorization("REGISTER", "sip:example.org", 1);
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&lower)),
            PHONE,
            t0,
            wall(4)
        )),
        ChallengeReason::Replay
    );

    // A wrong password: challenged again, and counted.
    let mut guesser = Client::from_challenge("alice", "guess", &first);
    let wrong = guesser.authorize("REGISTER", "sip:example.org");
    let outcome = check(
        &mut auth,
        &register("alice", Some(&wrong)),
        PHONE,
        t0,
        wall(5),
    );
    assert_eq!(reason(&outcome), ChallengeReason::BadCredentials);
    assert_eq!(auth.counters().bad_credentials, 1);
    assert_eq!(auth.counters().replays, 2);
    assert_eq!(auth.counters().authenticated, 2);

    // After the nonce lifetime the right password gets `stale=true` and a new nonce…
    let late = client.authorize("REGISTER", "sip:example.org");
    let stale = check(
        &mut auth,
        &register("alice", Some(&late)),
        PHONE,
        t0,
        wall(302),
    );
    assert_eq!(reason(&stale), ChallengeReason::StaleNonce);
    let AuthOutcome::Challenge { headers, .. } = &stale else {
        unreachable!()
    };
    assert!(headers.iter().all(|(_, v)| v.ends_with(", stale=true")));
    // …while a wrong password on a stale nonce is just wrong (no hint that the nonce was old).
    let late_wrong = guesser.authorize("REGISTER", "sip:example.org");
    let outcome = check(
        &mut auth,
        &register("alice", Some(&late_wrong)),
        PHONE,
        t0,
        wall(302),
    );
    assert_eq!(reason(&outcome), ChallengeReason::BadCredentials);

    // With the new nonce the client goes on without asking its user.
    let mut renewed = Client::from_challenge("alice", "wonderland", &stale);
    let fresh = renewed.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        check(
            &mut auth,
            &register("alice", Some(&fresh)),
            PHONE,
            t0,
            wall(303)
        ),
        alice()
    );
}

#[test]
fn proxy_challenge_uses_407_and_proxy_headers() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    let first = check(&mut auth, &invite("alice", None), PHONE, t0, wall(0));
    let AuthOutcome::Challenge {
        status, headers, ..
    } = &first
    else {
        panic!("expected a challenge, got {first:?}");
    };
    assert_eq!(*status, 407);
    assert!(
        headers
            .iter()
            .all(|(name, _)| *name == HeaderName::ProxyAuthenticate)
    );
    let mut client = Client::from_challenge("alice", "wonderland", &first);
    let credentials = client.authorize("INVITE", "sip:carol@example.org");
    assert_eq!(
        check(
            &mut auth,
            &invite("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        ),
        alice()
    );
    // Credentials in the registrar's header on a proxied request are not looked at.
    let credentials = client.authorize("INVITE", "sip:carol@example.org");
    let misplaced = String::from_utf8(invite("alice", Some(&credentials)))
        .expect("ASCII")
        .replace("Proxy-Authorization:", "Authorization:");
    assert_eq!(
        reason(&check(&mut auth, misplaced.as_bytes(), PHONE, t0, wall(1))),
        ChallengeReason::NoCredentials
    );
}

#[test]
fn stored_md5_hash_serves_md5_only() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    let first = check(&mut auth, &register("bob", None), PHONE, t0, wall(0));
    let mut sha = Client::from_challenge("bob", "builder", &first);
    let attempt = sha.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("bob", Some(&attempt)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::BadCredentials
    );
    let mut md5 = Client::from_challenge("bob", "builder", &first);
    md5.algorithm = "MD5".into();
    let attempt = md5.authorize("REGISTER", "sip:example.org");
    assert!(matches!(
        check(
            &mut auth,
            &register("bob", Some(&attempt)),
            PHONE,
            t0,
            wall(1)
        ),
        AuthOutcome::Authenticated { .. }
    ));
}

#[test]
fn what_is_challenged_and_what_is_refused() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    let first = check(&mut auth, &register("alice", None), PHONE, t0, wall(0));

    // A nonce issued to another address.
    let mut client = Client::from_challenge("alice", "wonderland", &first);
    let credentials = client.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            ELSEWHERE,
            t0,
            wall(1)
        )),
        ChallengeReason::InvalidNonce
    );
    // A tampered nonce.
    let mut forged = Client::from_challenge("alice", "wonderland", &first);
    forged.nonce.replace_range(
        0..1,
        if forged.nonce.starts_with('A') {
            "B"
        } else {
            "A"
        },
    );
    let credentials = forged.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::InvalidNonce
    );
    // Credentials computed for another Request-URI.
    let credentials = client.authorize("REGISTER", "sip:other.example.org");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::UriMismatch
    );
    // An algorithm that was not offered.
    let credentials = client
        .authorize("REGISTER", "sip:example.org")
        .replace("algorithm=SHA-256", "algorithm=SHA-512-256");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::AlgorithmNotOffered
    );
    // Credentials for another realm are ignored (they belong to another proxy).
    let credentials = client
        .authorize("REGISTER", "sip:example.org")
        .replace("realm=\"example.org\"", "realm=\"elsewhere.net\"");
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::NoCredentials
    );
    // No qop: RFC 2069 style, not accepted.
    let credentials = client
        .authorize("REGISTER", "sip:example.org")
        .replace("qop=auth, ", "");
    assert!(matches!(
        reason(&check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1)
        )),
        ChallengeReason::Malformed(_)
    ));

    // alice's password, registering bob's address: authenticated but not authorised.
    let credentials = client.authorize("REGISTER", "sip:example.org");
    let bytes = String::from_utf8(register("bob", Some(&credentials))).expect("ASCII");
    assert_eq!(
        check(&mut auth, bytes.as_bytes(), PHONE, t0, wall(1)),
        AuthOutcome::Forbidden {
            reason: ForbiddenReason::IdentityMismatch
        }
    );

    // A domain we do not serve.
    let foreign = String::from_utf8(register("alice", None))
        .expect("ASCII")
        .replace("alice@example.org", "alice@example.net");
    assert_eq!(
        check(&mut auth, foreign.as_bytes(), PHONE, t0, wall(1)),
        AuthOutcome::Forbidden {
            reason: ForbiddenReason::DomainNotServed
        }
    );

    // Trusted cluster nodes and unchallengeable methods pass.
    let node = SocketAddr::new(CLUSTER_NODE, 5060);
    assert_eq!(
        check(&mut auth, &register("alice", None), node, t0, wall(1)),
        AuthOutcome::NotRequired(NotRequiredReason::TrustedSource)
    );
    let ack = String::from_utf8(invite("alice", None))
        .expect("ASCII")
        .replace("INVITE sip:", "ACK sip:")
        .replace("1 INVITE", "1 ACK");
    assert_eq!(
        check(&mut auth, ack.as_bytes(), PHONE, t0, wall(1)),
        AuthOutcome::NotRequired(NotRequiredReason::UnchallengeableMethod)
    );
}

/// Replaces every `nonce="…"` value, the only part of a challenge that differs between two.
fn without_nonces(outcome: &AuthOutcome) -> AuthOutcome {
    let mut outcome = outcome.clone();
    if let AuthOutcome::Challenge { headers, .. } = &mut outcome {
        for (_, value) in headers.iter_mut() {
            let start = value.find("nonce=\"").expect("has a nonce") + 7;
            let end = start + value[start..].find('"').expect("closed");
            value.replace_range(start..end, "…");
        }
    }
    outcome
}

#[test]
fn unknown_user_is_answered_like_a_wrong_password() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    let mut outcomes = Vec::new();
    for (user, password) in [("alice", "not-her-password"), ("mallory", "anything")] {
        let first = check(&mut auth, &register(user, None), PHONE, t0, wall(0));
        let mut client = Client::from_challenge(user, password, &first);
        let credentials = client.authorize("REGISTER", "sip:example.org");
        let outcome = check(
            &mut auth,
            &register(user, Some(&credentials)),
            PHONE,
            t0,
            wall(1),
        );
        outcomes.push((without_nonces(&first), without_nonces(&outcome)));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(reason(&outcomes[0].1), ChallengeReason::BadCredentials);

    // And they lock out on the same schedule.
    let mut auth = authenticator();
    for user in ["alice", "mallory"] {
        let first = check(&mut auth, &register(user, None), PHONE, t0, wall(0));
        let mut client = Client::from_challenge(user, "wrong", &first);
        for _ in 0..5 {
            let credentials = client.authorize("REGISTER", "sip:example.org");
            check(
                &mut auth,
                &register(user, Some(&credentials)),
                PHONE,
                t0,
                wall(1),
            );
        }
        let credentials = client.authorize("REGISTER", "sip:example.org");
        assert_eq!(
            check(
                &mut auth,
                &register(user, Some(&credentials)),
                PHONE,
                t0,
                wall(1)
            ),
            AuthOutcome::Forbidden {
                reason: ForbiddenReason::LockedOut {
                    until: t0 + Duration::from_secs(1)
                }
            },
            "{user}"
        );
    }
}

#[test]
fn lockout_schedule_with_a_fake_clock() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let first = check(&mut auth, &register("alice", None), PHONE, t0, wall(0));
    let mut guesser = Client::from_challenge("alice", "guess", &first);
    let mut attempt = |auth: &mut Authenticator, at: Instant| {
        let credentials = guesser.authorize("REGISTER", "sip:example.org");
        check(
            auth,
            &register("alice", Some(&credentials)),
            PHONE,
            at,
            wall(1),
        )
    };
    let locked = |until| AuthOutcome::Forbidden {
        reason: ForbiddenReason::LockedOut { until },
    };

    // Four failures pass as challenges; the fifth starts a 1 s lockout.
    for _ in 0..5 {
        assert_eq!(
            reason(&attempt(&mut auth, t0)),
            ChallengeReason::BadCredentials
        );
    }
    assert_eq!(attempt(&mut auth, t0), locked(t0 + s(1)));
    assert_eq!(
        attempt(&mut auth, t0 + Duration::from_millis(999)),
        locked(t0 + s(1))
    );
    // Each further failure doubles it: 2 s, 4 s, 8 s.
    let mut at = t0 + s(1);
    for lockout_s in [2, 4, 8] {
        assert_eq!(
            reason(&attempt(&mut auth, at)),
            ChallengeReason::BadCredentials
        );
        assert_eq!(attempt(&mut auth, at), locked(at + s(lockout_s)));
        at += s(lockout_s);
    }
    assert_eq!(auth.counters().lockouts, 4);

    // Meanwhile the real alice, from her own address, is not locked out…
    let hers = check(&mut auth, &register("alice", None), ELSEWHERE, at, wall(1));
    let mut real = Client::from_challenge("alice", "wonderland", &hers);
    let credentials = real.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        check(
            &mut auth,
            &register("alice", Some(&credentials)),
            ELSEWHERE,
            at,
            wall(1)
        ),
        alice()
    );
    // …and bob, behind the guesser's NAT, is not either (only 8 failures from that address).
    let bobs = check(&mut auth, &register("bob", None), PHONE, t0, wall(1));
    assert_eq!(reason(&bobs), ChallengeReason::NoCredentials);

    // Success from the guessed pair clears its count: the right password after the lockout.
    let mut fixed = Client::from_challenge("alice", "wonderland", &first);
    let credentials = fixed.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            at,
            wall(1)
        ),
        alice()
    );
    for _ in 0..4 {
        assert_eq!(
            reason(&attempt(&mut auth, at)),
            ChallengeReason::BadCredentials
        );
    }
}

#[test]
fn password_spraying_locks_the_source() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    // Twenty users, one guess each: no pair reaches 5, the source reaches 20.
    let users: Vec<&'static str> = (0..20)
        .map(|i| &*Box::leak(format!("user{i}").into_boxed_str()))
        .collect();
    for user in &users {
        let first = check(&mut auth, &register(user, None), PHONE, t0, wall(0));
        let mut client = Client::from_challenge(user, "123456", &first);
        let credentials = client.authorize("REGISTER", "sip:example.org");
        let outcome = check(
            &mut auth,
            &register(user, Some(&credentials)),
            PHONE,
            t0,
            wall(1),
        );
        assert_eq!(reason(&outcome), ChallengeReason::BadCredentials);
    }
    assert_eq!(
        check(&mut auth, &register("alice", None), PHONE, t0, wall(1)),
        AuthOutcome::Forbidden {
            reason: ForbiddenReason::LockedOut {
                until: t0 + Duration::from_secs(1)
            }
        }
    );
    // Trusted hosts are never locked out, and other sources are unaffected.
    assert_eq!(
        check(
            &mut auth,
            &register("alice", None),
            SocketAddr::new(CLUSTER_NODE, 5060),
            t0,
            wall(1)
        ),
        AuthOutcome::NotRequired(NotRequiredReason::TrustedSource)
    );
    assert_eq!(
        reason(&check(
            &mut auth,
            &register("alice", None),
            ELSEWHERE,
            t0,
            wall(1)
        )),
        ChallengeReason::NoCredentials
    );
}

#[test]
fn a_replayed_success_does_not_clear_a_guessers_count() {
    let mut auth = authenticator();
    let t0 = Instant::now();
    // alice registers from the office NAT; the request is captured there.
    let first = check(&mut auth, &register("alice", None), PHONE, t0, wall(0));
    let mut alice_phone = Client::from_challenge("alice", "wonderland", &first);
    let captured = alice_phone.authorize("REGISTER", "sip:example.org");
    assert_eq!(
        check(
            &mut auth,
            &register("alice", Some(&captured)),
            PHONE,
            t0,
            wall(1)
        ),
        alice()
    );
    // A guesser behind the same NAT interleaves the captured request with guesses.
    let mut guesser = Client::from_challenge("alice", "guess", &first);
    for _ in 0..4 {
        let credentials = guesser.authorize("REGISTER", "sip:example.org");
        let outcome = check(
            &mut auth,
            &register("alice", Some(&credentials)),
            PHONE,
            t0,
            wall(1),
        );
        assert_eq!(reason(&outcome), ChallengeReason::BadCredentials);
        let replayed = check(
            &mut auth,
            &register("alice", Some(&captured)),
            PHONE,
            t0,
            wall(1),
        );
        assert_eq!(reason(&replayed), ChallengeReason::Replay);
    }
    // The fifth guess still starts the lockout.
    let credentials = guesser.authorize("REGISTER", "sip:example.org");
    check(
        &mut auth,
        &register("alice", Some(&credentials)),
        PHONE,
        t0,
        wall(1),
    );
    assert!(matches!(
        check(
            &mut auth,
            &register("alice", Some(&captured)),
            PHONE,
            t0,
            wall(1)
        ),
        AuthOutcome::Forbidden {
            reason: ForbiddenReason::LockedOut { .. }
        }
    ));
}
