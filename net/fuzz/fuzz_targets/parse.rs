//! Fuzz target `parse`: one UDP datagram through the whole codec.
//!
//! Checks that no input panics or hangs in:
//! - `Message::parse_datagram` and `parse_stream`, and `ParseError::action()` for every error;
//! - `validate()` and every typed accessor, with list headers (Via, Contact, Route, Record-Route,
//!   Path, option tags, credentials) iterated to the end;
//! - `response_to` + `finish`, and `ForwardEdits` (set_request_uri, push_via, prepend_record_route,
//!   decrement_max_forwards, remove_top_route; remove_top_via on its own, as for a response).
//!
//! And that these properties hold:
//! - a parsed message's bytes are the datagram's, less leading line breaks and trailing bytes;
//! - URI equivalence is reflexive for every URI the message holds;
//! - every message written from a parsed one parses again; when the input validated, the response
//!   and the forwarded request validate too, and carry what was written into them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipshard_net::{
    ErrorAction, ForwardEdits, HeaderName, MAX_HEADERS, Message, NameAddr, ParseError, Uri,
    response_to,
};

const NEW_URI: &str = "sip:fuzz@192.0.2.1:5060";
const BRANCH: &str = "z9hG4bKfuzz";

fuzz_target!(|data: &[u8]| {
    let _ = Message::parse_stream(data).map_err(|e| check_error(&e));
    let msg = match Message::parse_datagram(data) {
        Ok(msg) => msg,
        Err(e) => return check_error(&e),
    };
    let skipped = data
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    assert!(data[skipped..].starts_with(msg.as_bytes()));
    let valid = msg.validate().map_err(|e| check_error(&e)).is_ok();
    read_everything(&msg);

    let mut out = Vec::new();
    response_to(&mut out, &msg, 404, "Not Found", Some("fuzztag")).finish(None, b"");
    let resp = reparse(&out);
    if valid && msg.is_request() {
        resp.validate()
            .expect("the response to a valid request validates");
        assert_eq!(resp.call_id(), msg.call_id());
        assert_eq!(resp.vias().count(), msg.vias().count());
    }

    ForwardEdits::new(&msg).remove_top_via().write(&mut out);
    reparse(&out);

    // Forwarding adds up to 3 header lines; validate() keeps that room, so only requests that
    // did not validate may be too close to MAX_HEADERS to forward.
    if msg.is_request() && (valid || msg.header_lines().len() + 3 <= MAX_HEADERS) {
        ForwardEdits::new(&msg)
            .set_request_uri(NEW_URI)
            .push_via(&format!("SIP/2.0/UDP 192.0.2.9;branch={BRANCH}"))
            .prepend_record_route("<sip:192.0.2.9;lr>")
            .decrement_max_forwards()
            .remove_top_route()
            .write(&mut out);
        let fwd = reparse(&out);
        assert_eq!(fwd.request_uri().map(|u| u.as_str()), Some(NEW_URI));
        if valid {
            fwd.validate().expect("a forwarded valid request validates");
            assert_eq!(fwd.top_via().unwrap().branch(), Some(BRANCH));
            let hops = msg
                .max_forwards()
                .unwrap()
                .map_or(70, |n| n.saturating_sub(1));
            assert_eq!(fwd.max_forwards().unwrap(), Some(hops));
            assert_eq!(fwd.body(), msg.body());
        }
    }
});

/// Every error maps to an action, and a response's error is never answered.
fn check_error(e: &ParseError) {
    let action = e.action();
    if e.in_response {
        assert_eq!(action, ErrorAction::Drop);
    }
    if let ErrorAction::Respond { status, reason } = action {
        assert!((400..=599).contains(&status) && !reason.is_empty());
    }
    let _ = e.to_string();
}

fn reparse(out: &[u8]) -> Message<'_> {
    Message::parse_datagram(out).unwrap_or_else(|e| {
        panic!(
            "written message does not parse ({e}):\n{}",
            String::from_utf8_lossy(out)
        )
    })
}

fn reflexive(uri: &Uri<'_>) {
    assert!(uri.equivalent(uri), "URI not equivalent to itself: {uri:?}");
}

fn name_addr(a: &NameAddr<'_>) {
    reflexive(&a.uri);
    let _ = (a.tag(), a.params.iter().count());
}

/// Calls every accessor, iterating lists to the end.
fn read_everything(msg: &Message<'_>) {
    let _ = (msg.method(), msg.status(), msg.body(), msg.content_length());
    if let Some(uri) = msg.request_uri() {
        reflexive(uri);
        if let Some(sip) = uri.as_sip() {
            let _ = (
                sip.transport(),
                sip.is_loose_router(),
                sip.params.iter().count(),
            );
        }
    }
    for h in msg.headers() {
        let _ = (
            h.name.canonical(),
            h.name.is_list(),
            msg.other_value("X-Fuzz"),
        );
    }
    let _ = (
        msg.call_id(),
        msg.cseq(),
        msg.max_forwards(),
        msg.expires_s(),
    );
    let _ = (
        msg.min_expires_s(),
        msg.content_type()
            .map(|t| t.map(|t| t.is("application", "sdp"))),
    );
    for a in [msg.from(), msg.to()].iter().flatten() {
        name_addr(a);
    }
    for via in msg.vias().flatten() {
        assert!(via.host.equivalent(&via.host));
        let _ = (
            via.branch(),
            via.received(),
            via.rport(),
            via.params.iter().count(),
        );
    }
    let _ = msg.top_via();
    for contact in msg.contacts().flatten() {
        let _ = (
            contact.q_millis(),
            contact.expires_s(),
            contact.instance(),
            contact.reg_id(),
        );
        if let Some(a) = contact.address() {
            name_addr(a);
        }
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        msg.name_addrs(name).flatten().for_each(|a| name_addr(&a));
    }
    for name in [
        HeaderName::Require,
        HeaderName::Supported,
        HeaderName::Allow,
    ] {
        msg.tokens(name).for_each(drop);
    }
    for name in [HeaderName::Authorization, HeaderName::WwwAuthenticate] {
        for auth in msg.auth_headers(name).flatten() {
            let _ = (auth.params().count(), auth.param("nonce"));
        }
    }
}
