//! RFC 3261 §10.3 (with RFC 5626 §6, RFC 3327, RFC 3581) rule by rule, through REGISTER text and a
//! fake clock.

mod common;

use common::*;
use sipshard_registrar::{
    BindingStore, Domains, MAX_CONTACTS_PER_REQUEST, NextHop, RegisterError, RegistrarConfig,
    Transport,
};

const ALICE: &str = "sip:alice@example.com";
const UA: &str = "198.51.100.7:5060";

#[test]
fn add_fetch_refresh_remove() {
    let mut s = store();
    let a = aor(ALICE);
    let out = Reg::new(ALICE)
        .contact("<sip:alice@198.51.100.7>")
        .expires(600)
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    assert_eq!(
        (out.added, out.refreshed, out.removed, out.evicted),
        (1, 0, 0, 0)
    );
    assert_eq!(out.aor, a);
    assert_eq!(out.contacts.len(), 1);
    assert_eq!(
        out.contacts[0].to_string(),
        "<sip:alice@198.51.100.7>;expires=600"
    );
    assert_eq!(s.len(), 1);

    // A fetch (no Contact) lists the bindings with the time left and changes nothing.
    let out = Reg::new(ALICE)
        .cseq(2)
        .send(&mut s, udp(UA), t(100))
        .unwrap();
    assert_eq!((out.added, out.refreshed, out.removed), (0, 0, 0));
    assert_eq!(out.contacts[0].expires_s, 500);
    let b = s.lookup(&a, t(100)).next().unwrap();
    assert_eq!((b.cseq, b.expires_at), (1, t(600)));

    // A refresh from the same client: same binding, new interval and CSeq.
    let id = b.id();
    let out = Reg::new(ALICE)
        .cseq(3)
        .contact("<sip:alice@198.51.100.7>;expires=1200")
        .send(&mut s, udp(UA), t(200))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (0, 1));
    let b = s.lookup(&a, t(200)).next().unwrap();
    assert_eq!((b.id(), b.cseq, b.expires_at), (id, 3, t(1400)));
    assert_eq!((b.registered_at, b.updated_at), (t(0), t(200)));

    // Interval 0 removes it.
    let out = Reg::new(ALICE)
        .cseq(4)
        .contact("<sip:alice@198.51.100.7>")
        .expires(0)
        .send(&mut s, udp(UA), t(300))
        .unwrap();
    assert_eq!(out.removed, 1);
    assert!(out.contacts.is_empty());
    assert!(s.is_empty());
    assert_eq!(s.aor_count(), 0);
    assert_eq!(s.next_expiry(), None);
    s.check_invariants().unwrap();
}

#[test]
fn interval_comes_from_the_contact_then_expires_then_the_default() {
    let mut s = store();
    let a = aor(ALICE);
    let out = Reg::new(ALICE)
        .contact("<sip:a@192.0.2.10>;expires=120")
        .contact("<sip:b@192.0.2.10>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let mut got: Vec<_> = out.contacts.iter().map(|c| c.to_string()).collect();
    got.sort();
    // No Expires header: the default (3600).
    assert_eq!(
        got,
        [
            "<sip:a@192.0.2.10>;expires=120",
            "<sip:b@192.0.2.10>;expires=3600"
        ]
    );

    let out = Reg::new(ALICE)
        .cseq(2)
        .contact("<sip:c@192.0.2.10>")
        .contact("<sip:d@192.0.2.10>;expires=99999999")
        .expires(300)
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let c = out
        .contacts
        .iter()
        .find(|c| c.value.contains("sip:c@"))
        .unwrap();
    assert_eq!(c.expires_s, 300);
    // Longer than max-expires: shortened to it.
    let d = out
        .contacts
        .iter()
        .find(|c| c.value.contains("sip:d@"))
        .unwrap();
    assert_eq!(d.expires_s, 7200);
    assert_eq!(s.next_expiry(), Some(t(120)));
    assert_eq!(s.lookup(&a, t(0)).count(), 4);
}

#[test]
fn too_brief_is_423_with_min_expires_and_changes_nothing() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .contact("<sip:a@192.0.2.10>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let before = snapshot(&s, &a, t(1));
    // One contact fine, one too brief: the whole request fails.
    let err = Reg::new(ALICE)
        .cseq(2)
        .contact("<sip:b@192.0.2.10>")
        .contact("<sip:a@192.0.2.10>;expires=59")
        .send(&mut s, udp(UA), t(1))
        .unwrap_err();
    assert_eq!(err, RegisterError::IntervalTooBrief { min_expires_s: 60 });
    let status = err.status();
    assert_eq!((status.code, status.min_expires_s), (423, Some(60)));
    assert_eq!(snapshot(&s, &a, t(1)), before);
    // The Expires header counts too; 0 is never too brief.
    let err = Reg::new(ALICE)
        .cseq(3)
        .contact("<sip:b@192.0.2.10>")
        .expires(30)
        .send(&mut s, udp(UA), t(1))
        .unwrap_err();
    assert_eq!(err.status().code, 423);
    s.check_invariants().unwrap();
}

#[test]
fn same_call_id_needs_a_higher_cseq() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .cseq(10)
        .contact("<sip:a@192.0.2.10>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let before = snapshot(&s, &a, t(5));
    for (seq, expires) in [(10, 600), (9, 600), (10, 0), (3, 0)] {
        let err = Reg::new(ALICE)
            .cseq(seq)
            .contact("<sip:a@192.0.2.10>")
            .contact("<sip:new@192.0.2.10>")
            .expires(expires)
            .send(&mut s, udp(UA), t(5))
            .unwrap_err();
        assert_eq!(err, RegisterError::InvalidCSeq);
        assert_eq!(
            (err.status().code, err.status().reason),
            (400, "Invalid CSeq number")
        );
        assert_eq!(snapshot(&s, &a, t(5)), before, "CSeq {seq} changed state");
    }
    // Another Call-ID is another client session: a lower CSeq still updates (§10.3 step 7).
    let out = Reg::new(ALICE)
        .call_id("other-call")
        .cseq(1)
        .contact("<sip:a@192.0.2.10>")
        .expires(900)
        .send(&mut s, udp(UA), t(5))
        .unwrap();
    assert_eq!(out.refreshed, 1);
    let b = s.lookup(&a, t(5)).next().unwrap();
    assert_eq!(
        (&*b.call_id, b.cseq, b.expires_at),
        ("other-call", 1, t(905))
    );
    // A higher CSeq on the first Call-ID is fine again too (it differs from the stored one).
    Reg::new(ALICE)
        .cseq(11)
        .contact("<sip:a@192.0.2.10>")
        .send(&mut s, udp(UA), t(6))
        .unwrap();
}

#[test]
fn an_expired_binding_does_not_hold_back_a_cseq() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .cseq(10)
        .contact("<sip:a@192.0.2.10>;expires=60")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    // Not collected by expire() yet, but its time is up: the UA rebooted with CSeq 1.
    let out = Reg::new(ALICE)
        .cseq(1)
        .contact("<sip:a@192.0.2.10>")
        .send(&mut s, udp(UA), t(60))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (1, 0));
    assert_eq!(uris(&s, &a, t(60)), ["sip:a@192.0.2.10"]);
    assert_eq!(s.len(), 1);
    s.check_invariants().unwrap();
}

#[test]
fn star_removes_everything_and_only_alone_with_expires_zero() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .cseq(5)
        .contact("<sip:a@192.0.2.10>")
        .contact("<sip:b@192.0.2.10>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    Reg::new(ALICE)
        .call_id("other")
        .contact("<sip:c@192.0.2.10>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();

    for bad in [
        Reg::new(ALICE).cseq(6).contact("*"),
        Reg::new(ALICE).cseq(6).contact("*").expires(3600),
        Reg::new(ALICE)
            .cseq(6)
            .contact("*")
            .contact("<sip:a@192.0.2.10>")
            .expires(0),
        Reg::new(ALICE).cseq(6).contact("*, *").expires(0),
    ] {
        assert_eq!(bad.request(udp(UA)), Err(RegisterError::InvalidStar));
    }
    // A replayed "*" (same Call-ID, CSeq not higher) fails as a whole.
    let before = snapshot(&s, &a, t(1));
    let err = Reg::new(ALICE)
        .cseq(5)
        .contact("*")
        .expires(0)
        .send(&mut s, udp(UA), t(1))
        .unwrap_err();
    assert_eq!(err, RegisterError::InvalidCSeq);
    assert_eq!(snapshot(&s, &a, t(1)), before);

    let out = Reg::new(ALICE)
        .cseq(6)
        .contact("*")
        .expires(0)
        .send(&mut s, udp(UA), t(1))
        .unwrap();
    assert_eq!(out.removed, 3);
    assert!(out.contacts.is_empty());
    assert!(s.is_empty());
    // "*" on an AOR without bindings is fine.
    let out = Reg::new(ALICE)
        .cseq(7)
        .contact("*")
        .expires(0)
        .send(&mut s, udp(UA), t(2))
        .unwrap();
    assert_eq!(out.removed, 0);
    s.check_invariants().unwrap();
}

#[test]
fn contacts_match_by_uri_equivalence() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .contact("<sip:%61lice@Host.Example.com;transport=TCP>")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    // §19.1.4: escapes decoded, host and parameter values case-insensitive.
    let out = Reg::new(ALICE)
        .cseq(2)
        .contact("<sip:alice@host.example.COM;transport=tcp>")
        .send(&mut s, udp(UA), t(1))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (0, 1));
    // The binding now carries the URI as last registered.
    assert_eq!(
        uris(&s, &a, t(1)),
        ["sip:alice@host.example.COM;transport=tcp"]
    );
    // User parts are case-sensitive, ports and transports must agree.
    let out = Reg::new(ALICE)
        .cseq(3)
        .contact("<sip:Alice@host.example.com;transport=tcp>")
        .contact("<sip:alice@host.example.com:5060;transport=tcp>")
        .contact("<sip:alice@host.example.com;transport=udp>")
        .send(&mut s, udp(UA), t(2))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (3, 0));
    assert_eq!(s.len(), 4);
}

#[test]
fn instance_and_reg_id_name_the_binding() {
    let mut s = store();
    let a = aor(ALICE);
    let inst = r#"+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>""#;
    // Two flows of one device (RFC 5626): one binding each.
    let out = Reg::new(ALICE)
        .contact(&format!("<sip:alice@198.51.100.7:5060;ob>;{inst};reg-id=1"))
        .send(&mut s, tcp(UA, 7), t(0))
        .unwrap();
    assert_eq!(out.added, 1);
    let out = Reg::new(ALICE)
        .call_id("flow-2")
        .contact(&format!("<sip:alice@198.51.100.7:5062;ob>;{inst};reg-id=2"))
        .send(&mut s, tcp("198.51.100.7:5062", 8), t(0))
        .unwrap();
    assert_eq!(out.added, 1);
    assert_eq!(s.len(), 2);

    // Flow 1 again, from a new address and URI (the NAT rebound): it replaces its binding.
    let out = Reg::new(ALICE)
        .call_id("flow-1-again")
        .contact(&format!("<sip:alice@203.0.113.9:41000;ob>;{inst};reg-id=1"))
        .send(&mut s, tcp("203.0.113.9:41000", 9), t(10))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (0, 1));
    assert_eq!(s.len(), 2);
    let flow1 = s.lookup(&a, t(10)).find(|b| b.reg_id == Some(1)).unwrap();
    assert_eq!(&*flow1.uri, "sip:alice@203.0.113.9:41000;ob");
    assert_eq!(flow1.source.connection, Some(9));

    // The instance id compares case-insensitively (a UUID URN).
    let upper = inst
        .to_uppercase()
        .replace("+SIP.INSTANCE", "+sip.instance");
    let out = Reg::new(ALICE)
        .call_id("flow-2")
        .cseq(2)
        .contact(&format!("<sip:x@198.51.100.7:5062;ob>;{upper};reg-id=2"))
        .send(&mut s, tcp("198.51.100.7:5062", 8), t(11))
        .unwrap();
    assert_eq!((out.added, out.refreshed), (0, 1));

    // Without reg-id the instance alone names the device (Flexisip): it replaces both flows.
    let out = Reg::new(ALICE)
        .call_id("no-outbound")
        .contact(&format!("<sip:alice@198.51.100.7:5070>;{inst}"))
        .send(&mut s, udp("198.51.100.7:5070"), t(20))
        .unwrap();
    assert_eq!((out.added, out.refreshed, out.removed), (0, 1, 1));
    assert_eq!(uris(&s, &a, t(20)), ["sip:alice@198.51.100.7:5070"]);

    // Another device's instance is another binding, even with an equal URI.
    let out = Reg::new(ALICE)
        .call_id("device-2")
        .contact(r#"<sip:alice@198.51.100.7:5070>;+sip.instance="<urn:uuid:2>""#)
        .send(&mut s, udp("198.51.100.7:5070"), t(21))
        .unwrap();
    assert_eq!(out.added, 1);

    // An un-REGISTER by URI alone (no instance) removes every binding with that URI.
    let out = Reg::new(ALICE)
        .call_id("cleanup")
        .contact("<sip:alice@198.51.100.7:5070>;expires=0")
        .send(&mut s, udp("198.51.100.7:5070"), t(22))
        .unwrap();
    assert_eq!(out.removed, 2);
    assert!(s.is_empty());
    s.check_invariants().unwrap();
}

#[test]
fn reg_id_needs_an_instance() {
    let err = Reg::new(ALICE)
        .contact("<sip:alice@198.51.100.7>;reg-id=1")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!(err, RegisterError::RegIdWithoutInstance);
    assert_eq!(err.status().code, 400);
}

#[test]
fn outbound_needs_a_first_hop_that_keeps_the_flow() {
    let contact = r#"<sip:alice@198.51.100.7;ob>;+sip.instance="<urn:uuid:1>";reg-id=1"#;
    // Direct from the UA (one Via): outbound applies; Require: outbound when supported.
    let mut s = store();
    let out = Reg::new(ALICE)
        .contact(contact)
        .header("Supported: path, outbound")
        .send(&mut s, tcp(UA, 1), t(0))
        .unwrap();
    assert!(out.require_outbound);
    assert_eq!(s.lookup(&aor(ALICE), t(0)).next().unwrap().reg_id, Some(1));

    // Through a proxy that did not put ;ob in Path: 439 when the UA insists on outbound…
    let via_edge = Reg::new(ALICE)
        .via_proxies(1)
        .contact(contact)
        .header("Path: <sip:edge.example.com;lr>");
    let err = via_edge
        .clone()
        .header("Supported: outbound")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!(err, RegisterError::FirstHopLacksOutboundSupport);
    assert_eq!(err.status().code, 439);
    // …and reg-id ignored otherwise.
    let req = via_edge.request(udp(UA)).unwrap();
    assert_eq!(req.contacts[0].reg_id, None);

    // A first hop with ;ob keeps the flow: outbound applies.
    let req = Reg::new(ALICE)
        .via_proxies(1)
        .contact(contact)
        .header("Path: <sip:edge.example.com;lr;ob>")
        .header("Supported: outbound")
        .request(udp(UA))
        .unwrap();
    assert_eq!(req.contacts[0].reg_id, Some(1));
    let mut s = store();
    assert!(s.register(req, t(0)).unwrap().require_outbound);
}

#[test]
fn too_many_bindings_evict_the_least_recently_updated() {
    let mut s = store(); // at most 4 per AOR
    let a = aor(ALICE);
    for i in 0..4 {
        Reg::new(ALICE)
            .call_id(&format!("c{i}"))
            .contact(&format!("<sip:d{i}@192.0.2.10>"))
            .send(&mut s, udp(UA), t(i))
            .unwrap();
    }
    // d0 refreshes, so d1 is now the least recently updated.
    Reg::new(ALICE)
        .call_id("c0")
        .cseq(2)
        .contact("<sip:d0@192.0.2.10>")
        .send(&mut s, udp(UA), t(10))
        .unwrap();
    let out = Reg::new(ALICE)
        .call_id("c4")
        .contact("<sip:d4@192.0.2.10>")
        .contact("<sip:d5@192.0.2.10>")
        .send(&mut s, udp(UA), t(11))
        .unwrap();
    assert_eq!((out.added, out.evicted), (2, 2));
    assert_eq!(out.contacts.len(), 4);
    let mut left = uris(&s, &a, t(11));
    left.sort();
    assert_eq!(
        left,
        [
            "sip:d0@192.0.2.10",
            "sip:d3@192.0.2.10",
            "sip:d4@192.0.2.10",
            "sip:d5@192.0.2.10"
        ]
    );
    assert_eq!(s.len(), 4);
    s.check_invariants().unwrap();

    // One request with more contacts than the limit keeps the last ones it lists.
    let mut s = store();
    let mut reg = Reg::new(ALICE);
    for i in 0..6 {
        reg = reg.contact(&format!("<sip:e{i}@192.0.2.10>"));
    }
    let out = reg.send(&mut s, udp(UA), t(0)).unwrap();
    assert_eq!((out.added, out.evicted), (6, 2));
    let mut left = uris(&s, &a, t(0));
    left.sort();
    assert_eq!(left.first().map(String::as_str), Some("sip:e2@192.0.2.10"));
}

#[test]
fn path_is_stored_and_echoed_only_when_supported() {
    let mut s = store();
    let a = aor(ALICE);
    let reg = Reg::new(ALICE)
        .via_proxies(2)
        .contact("<sip:alice@10.0.0.5:5060>")
        .header("Path: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>")
        .header("Path: \"Edge\" <sip:p3.example.com;lr>;x=1");
    let out = reg.send(&mut s, udp("203.0.113.5:5060"), t(0)).unwrap();
    assert!(
        out.path.is_empty(),
        "no Supported: path, no Path in the 200"
    );
    let b = s.lookup(&a, t(0)).next().unwrap();
    assert_eq!(
        b.path,
        [
            Box::<str>::from("<sip:p1.example.com;lr>"),
            "<sip:p2.example.com;lr>".into(),
            "\"Edge\" <sip:p3.example.com;lr>;x=1".into()
        ]
    );
    let out = reg
        .cseq(2)
        .header("Supported: Path")
        .send(&mut s, udp("203.0.113.5:5060"), t(1))
        .unwrap();
    assert_eq!(out.path.len(), 3);
    assert_eq!(&*out.path[0], "<sip:p1.example.com;lr>");
    // Through a proxy, requests go to it (the source), which routes on the Path.
    let b = s.lookup(&a, t(1)).next().unwrap();
    assert_eq!(
        b.next_hop(),
        NextHop::Address {
            transport: Transport::Udp,
            addr: addr("203.0.113.5:5060")
        }
    );
}

#[test]
fn next_hop_follows_nat_and_flows() {
    let mut s = store();
    let a = aor(ALICE);
    let hop = |s: &BindingStore, uri: &str| {
        s.lookup(&a, t(0))
            .find(|b| &*b.uri == uri)
            .unwrap()
            .next_hop()
    };
    // UDP, contact names the address it came from: reach it by its URI.
    Reg::new(ALICE)
        .call_id("1")
        .contact("<sip:alice@198.51.100.7>")
        .send(&mut s, udp("198.51.100.7:5060"), t(0))
        .unwrap();
    assert_eq!(hop(&s, "sip:alice@198.51.100.7"), NextHop::ContactUri);
    // UDP behind NAT: private contact, public source → the source (RFC 3581).
    Reg::new(ALICE)
        .call_id("2")
        .contact("<sip:alice@10.0.0.7:5062>")
        .send(&mut s, udp("203.0.113.9:40000"), t(0))
        .unwrap();
    assert_eq!(
        hop(&s, "sip:alice@10.0.0.7:5062"),
        NextHop::Address {
            transport: Transport::Udp,
            addr: addr("203.0.113.9:40000")
        }
    );
    // Same IP, other port (a port-mapping NAT): the source too.
    Reg::new(ALICE)
        .call_id("3")
        .contact("<sip:alice@198.51.100.8:5060>")
        .send(&mut s, udp("198.51.100.8:6001"), t(0))
        .unwrap();
    assert!(matches!(
        hop(&s, "sip:alice@198.51.100.8:5060"),
        NextHop::Address { .. }
    ));
    // No NAT (the Via names the source), contact on another port: a UA that listens on one
    // socket and sends from another, or a registration made on its behalf. The contact wins.
    Reg::new(ALICE)
        .call_id("5")
        .contact("<sip:alice@198.51.100.7:6016>")
        .send(&mut s, udp("198.51.100.7:5060"), t(0))
        .unwrap();
    assert_eq!(hop(&s, "sip:alice@198.51.100.7:6016"), NextHop::ContactUri);
    // A stream: the connection, the source as fallback.
    Reg::new(ALICE)
        .call_id("4")
        .contact("<sip:alice@10.0.0.9;transport=tcp>")
        .send(&mut s, tcp("203.0.113.9:50000", 42), t(0))
        .unwrap();
    assert_eq!(
        hop(&s, "sip:alice@10.0.0.9;transport=tcp"),
        NextHop::Connection {
            transport: Transport::Tcp,
            connection: 42,
            fallback: addr("203.0.113.9:50000")
        }
    );
    // Not a SIP URI: nothing to traverse.
    let mut s = store();
    Reg::new(ALICE)
        .contact("<tel:+15551234567>")
        .send(&mut s, udp("203.0.113.9:40000"), t(0))
        .unwrap();
    assert_eq!(
        s.lookup(&a, t(0)).next().unwrap().next_hop(),
        NextHop::ContactUri
    );
}

#[test]
fn lookup_orders_by_q_then_recency() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .contact("<sip:low@192.0.2.10>;q=0.1")
        .contact("<sip:mid-old@192.0.2.10>;q=0.5")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let out = Reg::new(ALICE)
        .call_id("later")
        .contact("<sip:mid-new@192.0.2.10>;q=0.5")
        .contact("<sip:unranked@192.0.2.10>")
        .send(&mut s, udp(UA), t(5))
        .unwrap();
    let expected = [
        "sip:unranked@192.0.2.10",
        "sip:mid-new@192.0.2.10",
        "sip:mid-old@192.0.2.10",
        "sip:low@192.0.2.10",
    ];
    assert_eq!(uris(&s, &a, t(5)), expected);
    // The 200 lists them in the same order, q kept in the echoed value.
    let echoed: Vec<_> = out.contacts.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        echoed,
        [
            "<sip:unranked@192.0.2.10>;expires=3600",
            "<sip:mid-new@192.0.2.10>;q=0.5;expires=3600",
            "<sip:mid-old@192.0.2.10>;q=0.5;expires=3595",
            "<sip:low@192.0.2.10>;q=0.1;expires=3595",
        ]
    );
}

#[test]
fn bindings_expire_on_time() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .contact("<sip:a@192.0.2.10>;expires=60")
        .contact("<sip:b@192.0.2.10>;expires=120")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    Reg::new("sip:bob@example.com")
        .contact("<sip:bob@192.0.2.11>;expires=90")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    assert_eq!(s.next_expiry(), Some(t(60)));
    assert_eq!(s.expire(t(59)), 0);
    // Lookup hides a binding whose time is up even before expire() runs.
    assert_eq!(uris(&s, &a, t(60)), ["sip:b@192.0.2.10"]);
    assert_eq!(s.expire(t(60)), 1);
    assert_eq!(s.next_expiry(), Some(t(90)));
    assert_eq!(s.expire(t(1000)), 2);
    assert!(s.is_empty());
    assert_eq!((s.aor_count(), s.next_expiry()), (0, None));
    s.check_invariants().unwrap();
}

#[test]
fn remaining_time_is_reported_down_but_never_zero_while_live() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .contact("<sip:a@192.0.2.10>;expires=60")
        .send(&mut s, udp(UA), t(0))
        .unwrap();
    let b = s.lookup(&a, t(0)).next().unwrap();
    let almost = t(59) + std::time::Duration::from_millis(999);
    assert_eq!(b.remaining_s(t(0)), 60);
    assert_eq!(b.remaining_s(t(30)), 30);
    assert_eq!(b.remaining_s(almost), 1);
    assert_eq!(b.remaining_s(t(60)), 0);
}

#[test]
fn closed_flows_take_their_bindings() {
    let mut s = store();
    let a = aor(ALICE);
    Reg::new(ALICE)
        .call_id("1")
        .contact("<sip:a@10.0.0.1;transport=tcp>")
        .send(&mut s, tcp("203.0.113.1:40000", 5), t(0))
        .unwrap();
    Reg::new(ALICE)
        .call_id("2")
        .contact("<sip:b@10.0.0.2;transport=tcp>")
        .send(&mut s, tcp("203.0.113.2:40000", 6), t(0))
        .unwrap();
    Reg::new("sip:bob@example.com")
        .contact("<sip:bob@10.0.0.3;transport=tcp>")
        .send(&mut s, tcp("203.0.113.3:40000", 5), t(0))
        .unwrap();
    assert_eq!(s.remove_flow(5), 2);
    assert_eq!(uris(&s, &a, t(0)), ["sip:b@10.0.0.2;transport=tcp"]);
    assert_eq!((s.len(), s.aor_count()), (1, 1));
    assert_eq!(s.remove_flow(99), 0);
    s.check_invariants().unwrap();
}

#[test]
fn domains_and_schemes() {
    // The Request-URI names a domain we do not serve: 403 "Domain not served".
    let err = Reg::new(ALICE)
        .request_uri("sip:example.org")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!(err, RegisterError::NotOurDomain);
    assert_eq!(
        (err.status().code, err.status().reason),
        (403, "Domain not served")
    );
    // Case and form of the host do not matter.
    assert!(
        Reg::new(ALICE)
            .request_uri("sips:EXAMPLE.com:5061")
            .request(udp(UA))
            .is_ok()
    );
    // The AOR belongs to a domain we do not serve: 404 (§10.3 step 5).
    let err = Reg::new("sip:alice@example.org")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!((err, err.status().code), (RegisterError::AorNotServed, 404));
    // A tel: Request-URI: 416.
    let err = Reg::new(ALICE)
        .request_uri("tel:+15551234567")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!(
        (err, err.status().code),
        (RegisterError::UnsupportedUriScheme, 416)
    );
    // Serving any domain accepts them all.
    let any = RegistrarConfig {
        domains: Domains::Any,
        ..config()
    };
    let reg = Reg::new("sip:alice@example.org").request_uri("sip:example.org");
    assert!(request_from_bytes(reg.text().as_bytes(), udp(UA), &any).is_ok());
}

#[test]
fn sips_aor_is_the_sip_aor() {
    let mut s = store();
    Reg::new("sips:alice@EXAMPLE.com:5061")
        .contact("<sips:alice@198.51.100.7>")
        .send(&mut s, tcp(UA, 1), t(0))
        .unwrap();
    assert_eq!(uris(&s, &aor(ALICE), t(0)), ["sips:alice@198.51.100.7"]);
}

#[test]
fn malformed_and_misrouted_requests() {
    let err = Reg::new(ALICE)
        .contact("<sip:a@192.0.2.10>;q=2")
        .request(udp(UA))
        .unwrap_err();
    assert_eq!(
        (err.status().code, err.status().reason),
        (400, "Bad Contact")
    );
    let err = Reg::new(ALICE)
        .expires(0)
        .header("Expires: 10")
        .request(udp(UA));
    assert_eq!(err.unwrap_err().status().code, 400);

    let invite = "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:b@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: x\r\n\
        CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        request_from_bytes(invite.as_bytes(), udp(UA), &config()),
        Err(RegisterError::NotRegister)
    );

    let mut reg = Reg::new(ALICE);
    for i in 0..=MAX_CONTACTS_PER_REQUEST {
        reg = reg.contact(&format!("<sip:c{i}@192.0.2.10>"));
    }
    assert_eq!(reg.request(udp(UA)), Err(RegisterError::TooManyContacts));
}

#[test]
fn request_summary_keeps_what_the_shell_needs() {
    let long_ua = "x".repeat(1000);
    let req = Reg::new(ALICE)
        .contact(
            r#""Alice Smith" <sip:alice@198.51.100.7;transport=udp>;q=0.7;expires=300;+sip.instance="<urn:uuid:abc>";reg-id=2;foo"#,
        )
        .header("Supported: path")
        .header(&format!("User-Agent: {long_ua}"))
        .expires(600)
        .request(udp(UA))
        .unwrap();
    assert_eq!(req.aor, aor(ALICE));
    assert_eq!((&*req.call_id, req.cseq), ("call-1@198.51.100.7", 1));
    assert_eq!(req.expires_s, Some(600));
    assert!(req.path_supported && !req.outbound_supported && !req.star);
    assert_eq!(req.user_agent.as_deref().map(str::len), Some(256));
    let c = &req.contacts[0];
    assert_eq!(&*c.uri, "sip:alice@198.51.100.7;transport=udp");
    assert_eq!(
        &*c.echo_value,
        r#""Alice Smith" <sip:alice@198.51.100.7;transport=udp>;q=0.7;+sip.instance="<urn:uuid:abc>";reg-id=2;foo"#
    );
    assert_eq!(
        (c.q_millis, c.expires_s, c.instance.as_deref(), c.reg_id),
        (Some(700), Some(300), Some("<urn:uuid:abc>"), Some(2))
    );
    assert!(!req.is_fetch());
}
