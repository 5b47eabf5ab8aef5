//! The binding store under many bindings and random histories: expiry in order and on time, the
//! expiry index consistent with the map, the per-AOR bound never exceeded, failed requests
//! changing nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use sipshard_registrar::{
    Aor, BindingStore, Domains, RegisterError, RegisterRequest, RegistrarConfig, RequestContact,
    Source, Transport, redis_data::StoredBinding,
};

/// A small deterministic generator, so the large test replays exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn contact(uri: &str, expires_s: Option<u32>) -> RequestContact {
    RequestContact {
        uri: uri.into(),
        echo_value: format!("<{uri}>").into(),
        q_millis: None,
        expires_s,
        instance: None,
        reg_id: None,
    }
}

fn request(aor: &Aor, call_id: &str, cseq: u32, contacts: Vec<RequestContact>) -> RegisterRequest {
    RegisterRequest {
        aor: aor.clone(),
        call_id: call_id.into(),
        cseq,
        contacts,
        star: false,
        expires_s: None,
        path: Vec::new(),
        path_supported: false,
        outbound_supported: false,
        source: udp("198.51.100.7:5060"),
        via_matches_source: true,
        user_agent: None,
    }
}

#[test]
fn thousands_of_bindings_expire_in_order_and_on_time() {
    let mut s = BindingStore::new(RegistrarConfig {
        max_contacts_per_aor: 3,
        ..config()
    });
    let mut rng = Lcg(7);
    let mut deadlines: Vec<Instant> = Vec::new();
    for i in 0..2000 {
        let aor = aor(&format!("sip:user{i}@example.com"));
        let n = 1 + rng.next(3) as usize;
        let mut contacts = Vec::new();
        for j in 0..n {
            let expires_s = 60 + rng.next(7200 - 60) as u32;
            contacts.push(contact(&format!("sip:u{i}-{j}@192.0.2.1"), Some(expires_s)));
            deadlines.push(t(expires_s.into()));
        }
        let out = s.register(request(&aor, "c", 1, contacts), t(0)).unwrap();
        assert_eq!(out.added, n);
    }
    assert_eq!(s.len(), deadlines.len());
    deadlines.sort();

    let mut now_s = 0;
    let mut gone = 0;
    let mut last_next = t(0);
    while !s.is_empty() {
        now_s += 37;
        let now = t(now_s);
        let due = deadlines.partition_point(|&d| d <= now);
        assert_eq!(s.expire(now), due - gone, "at {now_s} s");
        gone = due;
        assert_eq!(s.len(), deadlines.len() - gone);
        let next = s.next_expiry();
        assert_eq!(next, deadlines.get(gone).copied());
        if let Some(next) = next {
            assert!(next > now && next >= last_next);
            last_next = next;
        }
    }
    assert!(now_s <= 7200 + 37);
    s.check_invariants().unwrap();
}

#[test]
fn a_full_shard_answers_503_for_new_aors_and_serves_the_ones_it_has() {
    let mut s = BindingStore::new(RegistrarConfig {
        max_aors_per_shard: 3,
        ..config()
    });
    let one = |i: u32| {
        let aor = aor(&format!("sip:user{i}@example.com"));
        let c = contact(&format!("sip:u{i}@192.0.2.1"), Some(600));
        request(&aor, "c", 1, vec![c])
    };
    for i in 0..3 {
        s.register(one(i), t(0)).unwrap();
    }
    let refused = s.register(one(3), t(0)).unwrap_err();
    assert_eq!(refused, RegisterError::StoreFull);
    assert_eq!(refused.status().code, 503);
    assert!(refused.status().retry_after_s.is_some());
    // Known AORs are still refreshed, fetched and removed.
    let mut refresh = one(0);
    refresh.cseq = 2;
    assert_eq!(s.register(refresh, t(1)).unwrap().refreshed, 1);
    let mut remove = one(1);
    remove.cseq = 2;
    remove.contacts[0].expires_s = Some(0);
    assert_eq!(s.register(remove, t(2)).unwrap().removed, 1);
    // The removal made room.
    assert_eq!(s.register(one(3), t(3)).unwrap().added, 1);
    s.check_invariants().unwrap();
}

fn stored(uri: &str, q_millis: Option<u16>, expires_at: Instant) -> StoredBinding {
    StoredBinding {
        field: format!("uri:{uri}").into(),
        uri: uri.into(),
        echo_value: format!("<{uri}>").into(),
        q_millis,
        instance: None,
        reg_id: None,
        call_id: "c".into(),
        cseq: 7,
        path: Vec::new(),
        source: udp("198.51.100.7:5060"),
        node: "node-a".into(),
        via_matches_source: true,
        user_agent: None,
        registered_at: t(0),
        updated_at: t(0),
        expires_at,
    }
}

#[test]
fn loading_what_the_database_holds_replaces_the_cached_bindings() {
    let mut s = BindingStore::new(RegistrarConfig {
        max_aors_per_shard: 1,
        ..config()
    });
    let alice = aor("sip:alice@example.com");
    s.register(
        request(
            &alice,
            "old",
            1,
            vec![contact("sip:a@192.0.2.9", Some(600))],
        ),
        t(0),
    )
    .unwrap();
    // The database's lookup order: q 1.0 first, then the most recent; the expired one is left out.
    let from_db = [
        stored("sip:a@192.0.2.1", Some(1000), t(100)),
        stored("sip:a@192.0.2.2", None, t(200)),
        stored("sip:a@192.0.2.3", Some(500), t(300)),
        stored("sip:a@192.0.2.4", Some(500), t(5)),
    ];
    s.load(&alice, &from_db, t(10)).unwrap();
    let uris: Vec<&str> = s.lookup(&alice, t(10)).map(|b| &*b.uri).collect();
    assert_eq!(
        uris,
        ["sip:a@192.0.2.1", "sip:a@192.0.2.2", "sip:a@192.0.2.3"]
    );
    assert_eq!(s.len(), 3);
    assert_eq!(s.next_expiry(), Some(t(100)));
    // The cache now checks against what the database holds: CSeq 7 of Call-ID "c" is stored.
    let replay = request(&alice, "c", 7, vec![contact("sip:a@192.0.2.1", Some(600))]);
    assert_eq!(
        s.check_register(&replay, t(10)),
        Err(RegisterError::InvalidCSeq)
    );
    s.check_invariants().unwrap();
    // Nothing live in the database: the AOR is forgotten, and its room is free again.
    s.load(&alice, &[], t(10)).unwrap();
    assert_eq!((s.len(), s.lookup(&alice, t(10)).count()), (0, 0));
    let bob = aor("sip:bob@example.com");
    s.load(&bob, &[stored("sip:b@192.0.2.5", None, t(50))], t(10))
        .unwrap();
    assert_eq!(
        s.load(&alice, &[stored("sip:a@192.0.2.1", None, t(50))], t(10)),
        Err(RegisterError::StoreFull)
    );
    s.check_invariants().unwrap();
}

/// The `redis_reply` fuzz target (registrar/fuzz) failed on this: a reply with more live bindings
/// than `max_contacts_per_aor` (another node's higher limit) was cached whole, past the per-AOR
/// bound that `check_invariants` checks.
#[test]
fn loading_keeps_at_most_the_per_aor_limit_in_lookup_order() {
    let mut s = BindingStore::new(RegistrarConfig {
        max_contacts_per_aor: 2,
        ..config()
    });
    let alice = aor("sip:alice@example.com");
    let from_db = [
        stored("sip:a@192.0.2.1", Some(1000), t(5)),
        stored("sip:a@192.0.2.2", Some(1000), t(100)),
        stored("sip:a@192.0.2.3", Some(500), t(200)),
        stored("sip:a@192.0.2.4", Some(100), t(300)),
    ];
    // The expired first one does not count toward the limit.
    s.load(&alice, &from_db, t(10)).unwrap();
    let uris: Vec<&str> = s.lookup(&alice, t(10)).map(|b| &*b.uri).collect();
    assert_eq!(uris, ["sip:a@192.0.2.2", "sip:a@192.0.2.3"]);
    assert_eq!(s.len(), 2);
    s.check_invariants().unwrap();
}

#[test]
fn forgetting_an_aor_or_everything_leaves_a_consistent_store() {
    let mut s = BindingStore::new(config());
    let alice = aor("sip:alice@example.com");
    let bob = aor("sip:bob@example.com");
    for (who, host) in [(&alice, "192.0.2.1"), (&bob, "192.0.2.2")] {
        let c = contact(&format!("sip:x@{host}"), Some(600));
        s.register(request(who, "c", 1, vec![c]), t(0)).unwrap();
    }
    assert!(s.forget(&alice));
    assert!(!s.forget(&alice), "nothing left to forget");
    assert!(!s.holds(&alice) && s.holds(&bob));
    assert_eq!(s.len(), 1);
    assert_eq!(s.next_expiry(), Some(t(600)));
    s.check_invariants().unwrap();
    s.clear();
    assert_eq!((s.len(), s.next_expiry(), s.holds(&bob)), (0, None, false));
    s.check_invariants().unwrap();
    // Still usable afterwards.
    let c = contact("sip:x@192.0.2.3", Some(600));
    s.register(request(&alice, "d", 1, vec![c]), t(1)).unwrap();
    assert!(s.holds(&alice));
    s.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
struct ContactSpec {
    user: u8,
    instance: Option<u8>,
    reg_id: Option<u8>,
    expires_s: Option<u32>,
    q_millis: Option<u16>,
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        aor: u8,
        call: u8,
        cseq: u32,
        star: bool,
        header_expires_s: Option<u32>,
        connection: Option<u64>,
        contacts: Vec<ContactSpec>,
    },
    Advance(u64),
    Expire,
    RemoveFlow(u64),
}

fn expires_strategy() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(30)), // below min-expires: 423
        Just(Some(60)),
        Just(Some(61)),
        Just(Some(300)),
        Just(Some(100_000)), // above max-expires: shortened
    ]
}

fn contact_strategy() -> impl Strategy<Value = ContactSpec> {
    (
        0u8..6,
        prop::option::of(0u8..3),
        prop::option::of(0u8..2),
        expires_strategy(),
        prop::option::of(prop_oneof![Just(0u16), Just(500), Just(1000)]),
    )
        .prop_map(
            |(user, instance, reg_id, expires_s, q_millis)| ContactSpec {
                user,
                instance,
                // RegisterRequest::from_message refuses reg-id without an instance (RFC 5626 §6).
                reg_id: instance.and(reg_id),
                expires_s,
                q_millis,
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0u8..3,
            0u8..2,
            0u32..8,
            prop::bool::weighted(0.08),
            expires_strategy(),
            prop::option::of(0u64..3),
            prop::collection::vec(contact_strategy(), 0..5),
        )
            .prop_map(|(aor, call, cseq, star, header_expires_s, connection, contacts)| {
                Op::Register {
                    aor,
                    call,
                    cseq,
                    star,
                    header_expires_s,
                    connection,
                    contacts,
                }
            }),
        2 => (0u64..400).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => (0u64..3).prop_map(Op::RemoveFlow),
    ]
}

const MAX_CONTACTS: usize = 3;

fn registrar_config() -> RegistrarConfig {
    RegistrarConfig {
        domains: Domains::Any,
        max_expires_s: 7200,
        min_expires_s: 60,
        default_expires_s: 300,
        max_contacts_per_aor: MAX_CONTACTS,
        max_aors_per_shard: 64,
    }
}

fn build(op_aor: &Aor, op: &Op) -> Option<RegisterRequest> {
    let Op::Register {
        call,
        cseq,
        star,
        header_expires_s,
        connection,
        contacts,
        ..
    } = op
    else {
        return None;
    };
    let source = match connection {
        Some(id) => Source {
            transport: Transport::Tcp,
            remote: addr("203.0.113.1:40000"),
            local: addr("192.0.2.1:5060"),
            connection: Some(*id),
        },
        None => udp("203.0.113.1:40000"),
    };
    let contacts = if *star {
        Vec::new()
    } else {
        contacts
            .iter()
            .map(|c| {
                let uri = format!("sip:u{}@192.0.2.{}", c.user, c.user);
                RequestContact {
                    echo_value: format!("<{uri}>").into(),
                    uri: uri.into(),
                    q_millis: c.q_millis,
                    expires_s: c.expires_s,
                    instance: c.instance.map(|i| format!("<urn:uuid:{i}>").into()),
                    reg_id: c.reg_id.map(u32::from),
                }
            })
            .collect()
    };
    Some(RegisterRequest {
        aor: op_aor.clone(),
        call_id: format!("call-{call}").into(),
        cseq: *cseq,
        contacts,
        star: *star,
        expires_s: if *star { Some(0) } else { *header_expires_s },
        path: Vec::new(),
        path_supported: false,
        outbound_supported: false,
        source,
        via_matches_source: true,
        user_agent: None,
    })
}

/// 256 cases from a fixed seed, so every run (and CI) checks the same histories and a failure
/// replays exactly; `PROPTEST_RNG_SEED=N` explores others.
fn proptest_config() -> ProptestConfig {
    let base = ProptestConfig::with_cases(256);
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x5195_4a4d),
        chosen => chosen,
    };
    ProptestConfig { rng_seed, ..base }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn random_histories_keep_the_store_consistent(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let cfg = registrar_config();
        let mut s = BindingStore::new(cfg.clone());
        let aors: Vec<Aor> = (0..3).map(|i| aor(&format!("sip:user{i}@example.com"))).collect();
        let mut now = t(0);
        for op in &ops {
            match op {
                Op::Register { aor: which, .. } => {
                    let aor = &aors[usize::from(*which)];
                    let req = build(aor, op).unwrap();
                    let before: Vec<_> = s.lookup(aor, now).cloned().collect();
                    let len_before = s.len();
                    match s.register(req.clone(), now) {
                        Ok(out) => {
                            let live: Vec<_> = s.lookup(aor, now).collect();
                            prop_assert_eq!(out.contacts.len(), live.len());
                            // The last contact's fate is visible: it is bound with its
                            // interval, or (interval 0) no binding matches it.
                            if let Some(last) = req.contacts.last() {
                                let granted = cfg
                                    .granted_expires_s(last.expires_s.or(req.expires_s))
                                    .unwrap();
                                let bound = live.iter().find(|b| b.matches(last));
                                if granted == 0 {
                                    prop_assert!(bound.is_none());
                                } else {
                                    let b = bound.unwrap();
                                    prop_assert_eq!(
                                        b.expires_at,
                                        now + Duration::from_secs(granted.into())
                                    );
                                    prop_assert_eq!(b.cseq, req.cseq);
                                }
                            }
                            if req.star {
                                prop_assert!(live.is_empty());
                            }
                            if req.is_fetch() {
                                prop_assert_eq!(s.len(), len_before);
                            }
                        }
                        Err(_) => {
                            // A refused request changes nothing.
                            let after: Vec<_> = s.lookup(aor, now).cloned().collect();
                            prop_assert_eq!(after, before);
                            prop_assert_eq!(s.len(), len_before);
                        }
                    }
                }
                Op::Advance(secs) => now += Duration::from_secs(*secs),
                Op::Expire => {
                    s.expire(now);
                    if let Some(next) = s.next_expiry() {
                        prop_assert!(next > now);
                    }
                    let live: usize = aors.iter().map(|a| s.lookup(a, now).count()).sum();
                    prop_assert_eq!(live, s.len());
                }
                Op::RemoveFlow(id) => {
                    s.remove_flow(*id);
                    for a in &aors {
                        prop_assert!(s.lookup(a, now).all(|b| b.source.connection != Some(*id)));
                    }
                }
            }
            if let Err(e) = s.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
            for a in &aors {
                prop_assert!(s.lookup(a, now).count() <= MAX_CONTACTS);
            }
        }
    }
}
