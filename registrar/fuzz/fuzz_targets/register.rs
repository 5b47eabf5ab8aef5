//! Fuzz target `register`: a history of REGISTER datagrams through the registrar, as a shard
//! handles them: `Message::parse_datagram`, `RegisterRequest::from_message`, then
//! `BindingStore::register` on one small store, with a fake clock that moves between requests.
//!
//! Input layout: byte 0 picks the configuration (bit 0: a domain list instead of any domain;
//! bit 1: one contact per AOR instead of 4; bit 2: minimum interval 0 instead of 60 s; bit 3: at
//! most 2 AORs in the store instead of 64). The rest is split into steps at `"\n%%\n"`. Each
//! step's first byte is a control byte, the rest a datagram:
//! - bits 0–2: how far the clock moves before the step (0 s to more than a day);
//! - bits 3–4: the source (UDP, two TCP connections, WSS over IPv6);
//! - bit 5: call `expire(now)` after the step; bit 6: close TCP connection 1 (`remove_flow`);
//! - bit 7 with a datagram of at most 4 bytes: resend the previous datagram, with its CSeq
//!   number replaced by those bytes' value if there are any (replays and reordering).
//!
//! Checks that nothing panics, and that:
//! - the AOR is canonical (its text parses back to the same AOR);
//! - `check_invariants()` holds after every step;
//! - `check_register` refuses exactly what `register` refuses (less `StoreFull`, which only the
//!   write can see), with the same error;
//! - a refused REGISTER changes nothing (bindings, their expiry, counts);
//! - the 200 OK lists exactly the AOR's live bindings, at most `max_contacts_per_aor`, each with
//!   1..=max_expires_s seconds left; `*` leaves none;
//! - `expire(now)` leaves no binding whose time is up, and `remove_flow` none on that flow.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipshard_net::Message;
use sipshard_registrar::{
    Aor, BindingStore, Domains, MAX_CONTACTS_PER_REQUEST, MAX_USER_AGENT_BYTES, RegisterError,
    RegisterRequest, RegistrarConfig, Source, Transport, owner_shard,
};

const SEPARATOR: &[u8] = b"\n%%\n";
const ADVANCE_S: [u64; 8] = [0, 1, 30, 59, 600, 3_600, 7_201, 100_000];
const MAX_EXPIRES_S: u32 = 7_200;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn config(flags: u8) -> RegistrarConfig {
    RegistrarConfig {
        domains: if flags & 1 == 0 {
            Domains::Any
        } else {
            Domains::list(["example.com", "192.0.2.1", "[2001:db8::1]"]).expect("valid domains")
        },
        max_expires_s: MAX_EXPIRES_S,
        min_expires_s: if flags & 4 == 0 { 60 } else { 0 },
        default_expires_s: 3_600,
        max_contacts_per_aor: if flags & 2 == 0 { 4 } else { 1 },
        max_aors_per_shard: if flags & 8 == 0 { 64 } else { 2 },
    }
}

fn source(choice: u8) -> Source {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("valid address");
    let (transport, remote, connection) = match choice & 3 {
        0 => (Transport::Udp, "198.51.100.7:5060", None),
        1 => (Transport::Tcp, "198.51.100.7:40000", Some(1)),
        2 => (Transport::Tcp, "203.0.113.5:40001", Some(2)),
        _ => (Transport::Wss, "[2001:db8::7]:5062", Some(3)),
    };
    Source {
        transport,
        remote: addr(remote),
        local: addr("192.0.2.1:5060"),
        connection,
    }
}

/// What a refused request must leave as it was: the store's counts and the AOR's bindings.
type Snapshot = (usize, usize, Vec<(u64, Box<str>, u32)>);

fn snapshot(store: &BindingStore, aor: &Aor, now: Instant) -> Snapshot {
    let bindings = store
        .lookup(aor, now)
        .map(|b| (b.id().get(), b.uri.clone(), b.remaining_s(now)))
        .collect();
    (store.len(), store.aor_count(), bindings)
}

/// `datagram` with the number after its first `CSeq:` replaced by `cseq`.
fn with_cseq(datagram: &[u8], cseq: u32) -> Vec<u8> {
    let Some(at) = datagram.windows(5).position(|w| w == b"CSeq:") else {
        return datagram.to_vec();
    };
    let mut start = at + 5;
    while datagram.get(start) == Some(&b' ') {
        start += 1;
    }
    let end = start
        + datagram[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    let mut out = datagram[..start].to_vec();
    out.extend_from_slice(cseq.to_string().as_bytes());
    out.extend_from_slice(&datagram[end..]);
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

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let cfg = config(flags);
    let mut store = BindingStore::new(cfg.clone());
    let mut now = base();
    let mut aors: Vec<Aor> = Vec::new();
    let mut previous: Vec<u8> = Vec::new();

    for step in split(rest) {
        let Some((&control, body)) = step.split_first() else {
            continue;
        };
        now += Duration::from_secs(ADVANCE_S[usize::from(control & 7)]);
        let datagram = if control & 0x80 != 0 && body.len() <= 4 {
            if body.is_empty() {
                previous.clone()
            } else {
                let cseq = body.iter().fold(0u32, |n, &b| n << 8 | u32::from(b));
                with_cseq(&previous, cseq)
            }
        } else {
            body.to_vec()
        };
        apply(
            &mut store,
            &cfg,
            &datagram,
            source(control >> 3),
            now,
            &mut aors,
        );
        previous = datagram;
        store.check_invariants().expect("invariants after register");

        if control & 0x20 != 0 {
            let (len, next) = (store.len(), store.next_expiry());
            let removed = store.expire(now);
            assert_eq!(store.len(), len - removed);
            assert!(removed == 0 || next.is_some_and(|at| at <= now));
            assert!(store.next_expiry().is_none_or(|at| at > now));
            store.check_invariants().expect("invariants after expire");
        }
        if control & 0x40 != 0 {
            let len = store.len();
            let removed = store.remove_flow(1);
            assert_eq!(store.len(), len - removed);
            store
                .check_invariants()
                .expect("invariants after remove_flow");
            for aor in &aors {
                assert!(
                    store.lookup(aor, now).all(
                        |b| !(b.source.transport.is_stream() && b.source.connection == Some(1))
                    ),
                    "a binding on a closed flow"
                );
            }
        }
        let live: usize = aors.iter().map(|a| store.lookup(a, now).count()).sum();
        assert!(live <= store.len());
    }
});

fn apply(
    store: &mut BindingStore,
    cfg: &RegistrarConfig,
    datagram: &[u8],
    source: Source,
    now: Instant,
    aors: &mut Vec<Aor>,
) {
    let Ok(msg) = Message::parse_datagram(datagram) else {
        return;
    };
    let req = match RegisterRequest::from_message(&msg, source, cfg) {
        Ok(req) => req,
        Err(e) => {
            let status = e.status();
            assert!((400..=599).contains(&status.code) && !status.reason.is_empty());
            let _ = e.to_string();
            return;
        }
    };
    assert!(req.contacts.len() <= MAX_CONTACTS_PER_REQUEST);
    assert!(!req.star || req.contacts.is_empty());
    // Cut at MAX_USER_AGENT_BYTES, then each invalid byte may become U+FFFD (3 bytes).
    assert!(
        req.user_agent
            .as_ref()
            .is_none_or(|ua| ua.len() <= 3 * MAX_USER_AGENT_BYTES)
    );
    assert!(
        req.contacts
            .iter()
            .all(|c| c.reg_id.is_none() || c.instance.is_some())
    );
    // The AOR is canonical: its text parses back to itself (the admin endpoint and the Redis
    // key rely on that), and it has an owner shard.
    assert_eq!(
        Aor::parse(req.aor.as_str()).ok().as_ref(),
        Some(&req.aor),
        "AOR not canonical"
    );
    assert!(owner_shard(&req.aor, 7) < 7);
    let _ = req.aor.host();
    if !aors.contains(&req.aor) {
        aors.push(req.aor.clone());
    }

    let before = snapshot(store, &req.aor, now);
    let checked = store.check_register(&req, now);
    let result = store.register(req.clone(), now);
    match (&checked, &result) {
        (Ok(()), Ok(_)) | (Ok(()), Err(RegisterError::StoreFull)) => {}
        (Err(a), Err(b)) if a == b => {}
        _ => panic!("check_register said {checked:?} but register {result:?}"),
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            assert_eq!(
                before,
                snapshot(store, &req.aor, now),
                "a refused REGISTER ({e:?}) changed the store"
            );
            let status = e.status();
            assert!((400..=599).contains(&status.code));
            return;
        }
    };
    assert_eq!(outcome.aor, req.aor);
    assert!(outcome.contacts.len() <= cfg.max_contacts_per_aor.max(1));
    if req.star {
        assert!(outcome.contacts.is_empty(), "bindings left after *");
    }
    let listed: Vec<(Box<str>, u32)> = store
        .lookup(&req.aor, now)
        .map(|b| (b.echo_value.clone(), b.remaining_s(now)))
        .collect();
    let echoed: Vec<(Box<str>, u32)> = outcome
        .contacts
        .iter()
        .map(|c| (c.value.clone(), c.expires_s))
        .collect();
    assert_eq!(listed, echoed, "the 200 OK does not list the live bindings");
    for c in &outcome.contacts {
        assert!((1..=MAX_EXPIRES_S).contains(&c.expires_s), "{c}");
    }
    for b in store.lookup(&req.aor, now) {
        let _ = b.next_hop();
        for c in &req.contacts {
            let _ = b.matches(c);
        }
    }
}
