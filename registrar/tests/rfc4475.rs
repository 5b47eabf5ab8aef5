//! The RFC 4475 torture messages that say what a registrar must do, from the shared fixtures
//! (tests/fixtures/rfc4475, provenance in SOURCES.md).

mod common;

use common::*;
use sipshard_registrar::{RegisterError, RegisterRequest};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(name: &str) -> Result<RegisterRequest, RegisterError> {
    request_from_bytes(&fixture(name), udp("192.0.2.99:5060"), &config())
}

/// §3.3.12: without <>, `;unknownparam` is a contact parameter, not part of the URI.
#[test]
fn cparam01_parameter_outside_the_uri() {
    let mut s = store();
    let out = s.register(request("cparam01").unwrap(), t(0)).unwrap();
    assert_eq!(out.added, 1);
    let aor = aor("sip:watson@example.com");
    assert_eq!(uris(&s, &aor, t(0)), ["sip:+19725552222@gw1.example.net"]);
    assert_eq!(
        out.contacts[0].to_string(),
        "<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"
    );
}

/// §3.3.13: inside <>, `;unknownparam` is a URI parameter and retrieval keeps it.
#[test]
fn cparam02_parameter_inside_the_uri() {
    let mut s = store();
    let out = s.register(request("cparam02").unwrap(), t(0)).unwrap();
    let aor = aor("sip:watson@example.com");
    assert_eq!(
        uris(&s, &aor, t(0)),
        ["sip:+19725552222@gw1.example.net;unknownparam"]
    );
    assert_eq!(
        out.contacts[0].to_string(),
        "<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"
    );
}

/// Both for one AOR: by §19.1.4 a parameter present in only one URI is ignored, so the second
/// refreshes the first binding (and its URI becomes the one with the parameter).
#[test]
fn cparam01_then_cparam02_is_one_binding() {
    let mut s = store();
    s.register(request("cparam01").unwrap(), t(0)).unwrap();
    let out = s.register(request("cparam02").unwrap(), t(1)).unwrap();
    assert_eq!((out.added, out.refreshed), (0, 1));
    assert_eq!(
        uris(&s, &aor("sip:watson@example.com"), t(1)),
        ["sip:+19725552222@gw1.example.net;unknownparam"]
    );
}

/// §3.1.1.4: `%00` must not cut the user part short, and the two contacts are distinct.
#[test]
fn escnull_two_distinct_contacts() {
    let mut s = store();
    let req = request("escnull").unwrap();
    assert_eq!(req.aor.as_str(), "sip:null-%00-null@example.com");
    let out = s.register(req, t(0)).unwrap();
    assert_eq!(out.added, 2);
    let key = aor("sip:null-%00-null@example.com");
    let mut got = uris(&s, &key, t(0));
    got.sort();
    assert_eq!(
        got,
        ["sip:%00%00@host5.example.com", "sip:%00@host5.example.com"]
    );
    // Another spelling of the same user is the same AOR; a shorter user is another.
    assert_eq!(
        s.lookup(&aor("sip:null-%00-nul%6C@example.com"), t(0))
            .count(),
        2
    );
    assert_eq!(s.lookup(&aor("sip:null-@example.com"), t(0)).count(), 0);
}

/// §3.3.14: the contact URI's escaped Route header survives registration and retrieval.
#[test]
fn regescrt_escaped_header_kept() {
    let mut s = store();
    let out = s.register(request("regescrt").unwrap(), t(0)).unwrap();
    let uri = "sip:user@example.com?Route=%3Csip:sip.example.com%3E";
    assert_eq!(uris(&s, &aor("sip:user@example.com"), t(0)), [uri]);
    assert_eq!(out.contacts[0].to_string(), format!("<{uri}>;expires=3600"));
    // A fetch returns it unchanged.
    let fetch = s.register(
        RegisterRequest {
            contacts: Vec::new(),
            cseq: 14398235,
            ..request("regescrt").unwrap()
        },
        t(10),
    );
    assert_eq!(
        fetch.unwrap().contacts[0].to_string(),
        format!("<{uri}>;expires=3590")
    );
}

/// §3.3.4: a To URI of an unknown scheme names no AOR: 400.
#[test]
fn unksm2_non_sip_to_is_400() {
    let err = request("unksm2").unwrap_err();
    assert_eq!(err, RegisterError::AorNotSip);
    assert_eq!(err.status().code, 400);
}
