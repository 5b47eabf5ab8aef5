//! Fuzz target `digest`: hostile `Authorization` / `Proxy-Authorization` values in otherwise valid
//! requests, through one `Authenticator` (built as engine/tests/auth_flow.rs builds it), over a
//! history of requests with a fake clock.
//!
//! Input layout: byte 0 configures the authenticator (bit 0: require an `opaque`; bit 1: offer
//! MD5 only instead of all six algorithms; bit 2: tables of 2 entries instead of 64, so nonce
//! counts and throttles are evicted). The rest is split into steps at `"\n%%\n"`; each step is
//! two control bytes and a header value template.
//!
//! - control 1, bits 0–1: how far both clocks move first (0, 1, 200 or 400 s; nonces live 300 s);
//!   bits 2–3: the source (192.0.2.1:5060, 192.0.2.1:40000, 198.51.100.7, 192.0.2.1 as an
//!   IPv4-mapped IPv6 address); bits 4–5: the request (REGISTER to `sip:example.org`, INVITE,
//!   REGISTER to `sip:EXAMPLE.org;transport=udp`, MESSAGE); bits 6–7: the identity's user (To
//!   of a REGISTER, From otherwise): alice, bob, carol, or mallory who has no account;
//! - control 2, bits 0–1: the identity's host (`example.org`, `Example.ORG`, `other.org`, or
//!   `example.org` with the user's first letter escaped); bit 2: a `Digest` header for another
//!   realm before ours; bit 3: the value twice; bit 4: from the trusted host; bit 5: the wall
//!   clock steps back 5 s first (an NTP correction).
//!
//! The template is the header value with, in this order: `%N` replaced by the nonce of the last
//! challenge to this source (or the last one at all); `%R` by the response a client that knows
//! the password of the template's `username` computes for the template's parameters; `%W` by the
//! response for a wrong password.
//!
//! Checks that nothing panics, and that a request is `Authenticated` only when:
//! - its `response` is the one the user's real password gives (computed here with `md-5`/`sha2`,
//!   for the realm the server uses): no success without the password;
//! - the user exists, is the request's identity (user part unescaped) and the realm is ours;
//! - its nonce was issued by this authenticator, to this source address, for this realm, no more
//!   than the nonce lifetime ago on the wall clock;
//! - its nonce-count is higher than that of every earlier success with the same nonce (no replay).
//!
//! And that challenges are 401 with `WWW-Authenticate` for REGISTER, 407 with
//! `Proxy-Authenticate` otherwise, one per offered algorithm, each parsing back with a 43-byte
//! nonce; a lockout ends in the future.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use sipshard_engine::auth::{
    AuthOutcome, AuthSettings, Authenticator, ForbiddenReason, NotRequiredReason, PasswordDb,
};
use sipshard_net::{AuthHeader, HeaderName, Message};

const SECRET: &[u8] = b"cluster-wide nonce secret, 32 b!";
const SEPARATOR: &[u8] = b"\n%%\n";
const LIFETIME_S: u64 = 300;
const OPAQUE: &str = "fuzz-opaque";
const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
const ADVANCE_S: [u64; 4] = [0, 1, 200, 400];
/// (user, password): alice's is stored in clear, bob's as an MD5 HA1, carol's as a SHA-256 one.
const USERS: [(&str, &str); 3] = [
    ("alice", "wonderland"),
    ("bob", "builder"),
    ("carol", "secret"),
];
const WRONG_PASSWORD: &str = "guess";

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `FUZZ_DEBUG=1` prints each step's outcome (to check that the seeds reach `Authenticated`).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn hex<D: Digest>(parts: &[&[u8]]) -> String {
    let mut d = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(p);
    }
    d.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn db() -> Arc<PasswordDb> {
    static DB: OnceLock<Arc<PasswordDb>> = OnceLock::new();
    DB.get_or_init(|| {
        let text = format!(
            "version:1\nalice@example.org clrtxt:wonderland ;\nbob@example.org md5:{} ;\n\
             carol@example.org sha256:{} ;\n",
            hex::<Md5>(&[b"bob", b"example.org", b"builder"]),
            hex::<Sha256>(&[b"carol", b"example.org", b"secret"]),
        );
        Arc::new(PasswordDb::parse(text.as_bytes()).expect("valid password file"))
    })
    .clone()
}

fn authenticator(flags: u8) -> Authenticator {
    let algorithms = if flags & 2 == 0 {
        "MD5 MD5-sess SHA-256 SHA-256-sess SHA-512-256 SHA-512-256-sess"
    } else {
        "MD5"
    };
    let mut settings = AuthSettings::new("example.org", algorithms, LIFETIME_S, SECRET, &[TRUSTED])
        .expect("valid settings");
    if flags & 1 != 0 {
        settings.opaque = Some(OPAQUE.into());
    }
    let entries = if flags & 4 == 0 { 64 } else { 2 };
    settings.limits.nonce_table_entries = entries;
    settings.limits.throttle_table_entries = entries;
    Authenticator::new(settings, db(), 0).expect("valid authenticator")
}

/// The response for `params` (a credentials header's) with `password`, by RFC 2617 §3.2.2 and
/// RFC 7616 §3.4, for `realm` and `method`. `None` when the algorithm is unknown.
fn response(params: &Params<'_>, realm: &str, password: &str, method: &str) -> Option<String> {
    let mut name = params
        .get("algorithm")
        .unwrap_or(&b"MD5"[..])
        .to_ascii_uppercase();
    let session = name.ends_with(b"-SESS");
    if session {
        name.truncate(name.len() - 5);
    }
    let h: fn(&[&[u8]]) -> String = match name.as_slice() {
        b"MD5" => hex::<Md5>,
        b"SHA-256" => hex::<Sha256>,
        b"SHA-512-256" => hex::<Sha512_256>,
        _ => return None,
    };
    let p = |name| params.get(name).unwrap_or_default();
    let (nonce, cnonce) = (p("nonce"), p("cnonce"));
    let mut ha1 = h(&[p("username"), realm.as_bytes(), password.as_bytes()]);
    if session {
        ha1 = h(&[ha1.as_bytes(), nonce, cnonce]);
    }
    let ha2 = h(&[method.as_bytes(), p("uri")]);
    Some(h(&[
        ha1.as_bytes(),
        nonce,
        p("nc"),
        cnonce,
        p("qop"),
        ha2.as_bytes(),
    ]))
}

/// A credentials header's parameters, the first of each name (case-insensitive), quotes removed.
struct Params<'a>(Option<AuthHeader<'a>>);

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0.as_ref()?.param(name)
    }
}

fn replace(text: &[u8], pattern: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(pattern) {
            out.extend_from_slice(with);
            i += pattern.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut steps = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        steps.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    steps.push(rest);
    steps
}

/// A nonce the authenticator issued: to whom, for which realm, when (wall clock, seconds).
struct Issued {
    client: IpAddr,
    realm: String,
    at_s: u64,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut auth = authenticator(flags);
    let algorithms = auth.algorithms().len();
    let mut now = base();
    let mut wall_s: u64 = 1_700_000_000;
    let mut issued: HashMap<Vec<u8>, Issued> = HashMap::new();
    let mut last_nonce: HashMap<IpAddr, Vec<u8>> = HashMap::new();
    let mut any_nonce: Vec<u8> = b"none".to_vec();
    let mut highest_nc: HashMap<Vec<u8>, u32> = HashMap::new();

    for (index, step) in split(rest).into_iter().enumerate() {
        let [c1, c2, template @ ..] = step else {
            continue;
        };
        let (c1, c2) = (*c1, *c2);
        let advance = ADVANCE_S[usize::from(c1 & 3)];
        now += Duration::from_secs(advance);
        wall_s += advance;
        if c2 & 0x20 != 0 {
            wall_s -= 5;
        }
        let client = if c2 & 0x10 != 0 {
            SocketAddr::new(TRUSTED, 5060)
        } else {
            match (c1 >> 2) & 3 {
                0 => "192.0.2.1:5060".parse().unwrap(),
                1 => "192.0.2.1:40000".parse().unwrap(),
                2 => "198.51.100.7:5060".parse().unwrap(),
                _ => "[::ffff:192.0.2.1]:5060".parse().unwrap(),
            }
        };
        let ip = client.ip().to_canonical();
        let (method, request_uri, is_register) = match (c1 >> 4) & 3 {
            0 => ("REGISTER", "sip:example.org", true),
            1 => ("INVITE", "sip:carol@example.org", false),
            2 => ("REGISTER", "sip:EXAMPLE.org;transport=udp", true),
            _ => ("MESSAGE", "sip:carol@example.org", false),
        };
        let user_index = usize::from(c1 >> 6);
        let user = ["alice", "bob", "carol", "mallory"][user_index];
        let (host, user_text) = match c2 & 3 {
            0 => ("example.org", user.to_owned()),
            1 => ("Example.ORG", user.to_owned()),
            2 => ("other.org", user.to_owned()),
            _ => (
                "example.org",
                format!("%{:02X}{}", user.as_bytes()[0], &user[1..]),
            ),
        };
        let realm = host.to_ascii_lowercase();

        // The header value: %N, then %R / %W computed over the result.
        let nonce = last_nonce.get(&ip).unwrap_or(&any_nonce).clone();
        let value = replace(template, b"%N", &nonce);
        let params = Params(AuthHeader::parse(&value).ok());
        let username = params
            .get("username")
            .and_then(|u| std::str::from_utf8(u).ok())
            .unwrap_or("");
        let password = USERS
            .iter()
            .find(|(u, _)| *u == username)
            .map_or("x", |&(_, p)| p);
        let zeros = "0".repeat(32);
        let right = response(&params, &realm, password, method).unwrap_or(zeros.clone());
        let wrong = response(&params, &realm, WRONG_PASSWORD, method).unwrap_or(zeros);
        let value = replace(&value, b"%R", right.as_bytes());
        let value = replace(&value, b"%W", wrong.as_bytes());

        let header = if is_register {
            "Authorization"
        } else {
            "Proxy-Authorization"
        };
        let (from, to) = if is_register {
            (user_text.as_str(), user_text.as_str())
        } else {
            (user_text.as_str(), "carol")
        };
        let to_host = if is_register { host } else { "example.org" };
        let mut msg = format!(
            "{method} {request_uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{index}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}@{host}>;tag=1\r\n\
             To: <sip:{to}@{to_host}>\r\n\
             Call-ID: fuzz-1@192.0.2.1\r\n\
             CSeq: {} {method}\r\n\
             Contact: <sip:{from}@192.0.2.1:5060>\r\n",
            index + 1
        )
        .into_bytes();
        if c2 & 4 != 0 {
            msg.extend_from_slice(
                format!(
                    "{header}: Digest username=\"{user}\", realm=\"other.org\", nonce=\"{}\", \
                     uri=\"{request_uri}\", response=\"{}\", qop=auth, nc=00000001, cnonce=\"c\"\r\n",
                    String::from_utf8_lossy(&nonce),
                    "0".repeat(32)
                )
                .as_bytes(),
            );
        }
        for _ in 0..1 + usize::from(c2 & 8 != 0) {
            msg.extend_from_slice(header.as_bytes());
            msg.extend_from_slice(b": ");
            msg.extend_from_slice(&value);
            msg.extend_from_slice(b"\r\n");
        }
        msg.extend_from_slice(b"Content-Length: 0\r\n\r\n");

        let Ok(parsed) = Message::parse_datagram(&msg) else {
            continue;
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(wall_s);
        let outcome = auth.check(&parsed, client, is_register, now, wall);
        if debug() {
            eprintln!("step {index}: {outcome:?}");
        }
        match &outcome {
            AuthOutcome::Authenticated { user: who } => {
                let msg_text = String::from_utf8_lossy(&msg);
                assert!(ip != TRUSTED, "trusted source authenticated:\n{msg_text}");
                assert_eq!(who.domain, "example.org", "{msg_text}");
                assert_eq!(who.domain, realm, "{msg_text}");
                assert_eq!(who.username, user, "not the identity:\n{msg_text}");
                let Some((_, password)) = USERS.iter().find(|(u, _)| *u == who.username) else {
                    panic!("no such user, yet authenticated:\n{msg_text}");
                };
                // The credentials the server used: the first Digest header for our realm.
                let used = parsed
                    .auth_headers(if is_register {
                        HeaderName::Authorization
                    } else {
                        HeaderName::ProxyAuthorization
                    })
                    .filter_map(Result::ok)
                    .find(|h| {
                        h.scheme.eq_ignore_ascii_case("Digest")
                            && h.param("realm")
                                .is_some_and(|r| r.eq_ignore_ascii_case(realm.as_bytes()))
                    })
                    .expect("authenticated without credentials for the realm");
                let params = Params(Some(used));
                let given = params
                    .get("response")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let header_realm = String::from_utf8_lossy(params.get("realm").unwrap_or_default());
                let proves = [realm.as_str(), &*header_realm].iter().any(|r| {
                    response(&params, r, password, method).is_some_and(|e| e.as_bytes() == given)
                });
                assert!(proves, "authenticated without the password:\n{msg_text}");
                let nonce = params.get("nonce").unwrap_or_default();
                let Some(from) = issued.get(nonce) else {
                    panic!("authenticated with a nonce never issued:\n{msg_text}");
                };
                assert_eq!(from.client, ip, "nonce from another address:\n{msg_text}");
                assert_eq!(from.realm, realm, "nonce for another realm:\n{msg_text}");
                assert!(
                    wall_s.saturating_sub(from.at_s) <= LIFETIME_S,
                    "stale nonce accepted ({} s old):\n{msg_text}",
                    wall_s - from.at_s
                );
                let nc_text = params.get("nc").unwrap_or_default();
                let nc = std::str::from_utf8(nc_text)
                    .ok()
                    .and_then(|t| u32::from_str_radix(t, 16).ok())
                    .expect("authenticated with a bad nc");
                if let Some(&seen) = highest_nc.get(nonce) {
                    assert!(
                        nc > seen,
                        "nonce-count {nc} replayed (seen {seen}):\n{msg_text}"
                    );
                }
                highest_nc.insert(nonce.to_vec(), nc);
            }
            AuthOutcome::Challenge {
                status, headers, ..
            } => {
                let (want_status, want_header) = if is_register {
                    (401, HeaderName::WwwAuthenticate)
                } else {
                    (407, HeaderName::ProxyAuthenticate)
                };
                assert_eq!(*status, want_status);
                assert_eq!(headers.len(), algorithms);
                let mut nonce = None;
                for (name, value) in headers {
                    assert_eq!(*name, want_header);
                    let challenge = AuthHeader::parse(value.as_bytes()).expect("challenge parses");
                    let n = challenge.param("nonce").expect("challenge has a nonce");
                    assert_eq!(n.len(), 43);
                    assert!(
                        nonce.is_none_or(|first| first == n),
                        "one nonce per challenge"
                    );
                    nonce = Some(n);
                    assert_eq!(challenge.param("realm"), Some(realm.as_bytes()));
                }
                if let Some(n) = nonce {
                    issued.insert(
                        n.to_vec(),
                        Issued {
                            client: ip,
                            realm: realm.clone(),
                            at_s: wall_s,
                        },
                    );
                    last_nonce.insert(ip, n.to_vec());
                    any_nonce = n.to_vec();
                }
            }
            AuthOutcome::Forbidden { reason } => {
                if let ForbiddenReason::LockedOut { until } = reason {
                    assert!(*until > now, "a lockout that has ended");
                }
                assert!(ip != TRUSTED);
            }
            AuthOutcome::NotRequired(reason) => {
                assert_eq!(*reason, NotRequiredReason::TrustedSource);
                assert_eq!(ip, TRUSTED);
            }
        }
    }
});
