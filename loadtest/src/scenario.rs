//! The requests of each scenario, written with `sipshard_net::MessageWriter`, and for `call` the
//! in-dialog requests (ACK, BYE) built from what the 2xx to the INVITE said (RFC 3261 §12.1.2,
//! §13.2.2.4, §15), or for the ACK to a 3xx–6xx, from that response (§17.1.1.3).
//!
//! A request resent with credentials after a 401/407 (§22.2, §8.1.3.5) keeps the first one's
//! Call-ID, From and To, gets the next CSeq and a new branch. With passwords, MESSAGE and INVITE
//! come from a user of the run (the next one in turn after the callee) instead of from
//! `sipshard-load@<local address>`: a proxy authenticates the From identity (§22.3), so the
//! credentials must be that user's.

use std::net::SocketAddr;

use sipshard_net::{HeaderName, Message, MessageWriter};

use crate::conn::Transport;
use crate::users::Users;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// OPTIONS to the target.
    Options,
    /// REGISTER of users taken in turn from `users`, each with its own contact.
    Register {
        users: Users,
        /// The `Expires` header (0 unregisters).
        expires: u32,
        /// `HOST:PORT` of the Contact (each user's name at it), when not the generator's own
        /// address: e.g. a `sipshard-load uas`, so that `call` through the node reaches it.
        contact: Option<String>,
    },
    /// MESSAGE (RFC 3428) with a text/plain `body` to users taken in turn from `users`.
    /// `from_users`: see [`caller`].
    Message {
        users: Users,
        body: String,
        from_users: bool,
    },
    /// INVITE to users taken in turn from `users` (with an SDP offer), ACK the 2xx, hold for
    /// `hold_ms`, BYE. `from_users`: see [`caller`].
    Call {
        users: Users,
        hold_ms: u64,
        from_users: bool,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Options => "options",
            Scenario::Register { .. } => "register",
            Scenario::Message { .. } => "message",
            Scenario::Call { .. } => "call",
        }
    }

    /// The users the requests are for (all but `options`).
    pub fn users(&self) -> Option<&Users> {
        match self {
            Scenario::Options => None,
            Scenario::Register { users, .. }
            | Scenario::Message { users, .. }
            | Scenario::Call { users, .. } => Some(users),
        }
    }

    /// The method of the scenario's requests (of the INVITEs, for `call`).
    pub fn method(&self) -> &'static str {
        match self {
            Scenario::Options => "OPTIONS",
            Scenario::Register { .. } => "REGISTER",
            Scenario::Message { .. } => "MESSAGE",
            Scenario::Call { .. } => "INVITE",
        }
    }
}

/// Whose credentials request `j` carries, and the index of that user in the run's users (for
/// its password): REGISTER `j` is user `j`'s own (§10.2: the AOR is in To); with `from_users`,
/// MESSAGE and INVITE `j` (to user `j`) come from user `j + 1`, cyclically (a proxy
/// authenticates the From identity, §22.3). `None`: requests from the generator itself, which
/// has no credentials.
pub fn caller(scenario: &Scenario, j: u64) -> Option<(String, u64)> {
    match scenario {
        Scenario::Register { users, .. } => Some((users.user(j), j)),
        Scenario::Message {
            users,
            from_users: true,
            ..
        }
        | Scenario::Call {
            users,
            from_users: true,
            ..
        } => {
            let k = j.wrapping_add(1);
            Some((users.user(k), k))
        }
        _ => None,
    }
}

/// The largest MESSAGE body: a request must fit a datagram with room to spare (RFC 3261
/// §18.1.1 wants congestion-controlled transport above 1300 bytes; RFC 3428 keeps MESSAGE small).
pub const MAX_BODY: usize = 1024;

/// The SDP offer of every INVITE (an audio stream that is never sent: the generator measures
/// signalling).
fn sdp_offer(local: SocketAddr) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=sipshard-load 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Where requests come from and go to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub target: SocketAddr,
    /// The domain of Request-URIs and AORs (for REGISTER).
    pub domain: String,
    /// The transport requests go over (Via, Contact's `transport` parameter).
    pub transport: Transport,
}

/// Writes request `j` with top Via branch `branch` into `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    scenario: &Scenario,
    ends: &Endpoints,
    j: u64,
    branch: &str,
) {
    write_request_with(out, scenario, ends, j, branch, &Authenticated::No);
}

/// Writes request `j` with top Via branch `branch` into `out`, with credentials or not.
pub fn write_request_with(
    out: &mut Vec<u8>,
    scenario: &Scenario,
    ends: &Endpoints,
    j: u64,
    branch: &str,
    auth: &Authenticated<'_>,
) {
    if let Scenario::Register { .. } = scenario {
        return write_register(out, scenario, ends, j, branch, auth);
    }
    let local = ends.local;
    let via = format!(
        "SIP/2.0/{} {local};branch={branch};rport",
        ends.transport.via()
    );
    let (call_id, cseq) = match auth {
        Authenticated::No => (call_id(ends, j, branch), 1),
        Authenticated::Yes { first_branch, .. } => (call_id(ends, j, first_branch), 2),
    };
    let cseq = format!("{cseq} {}", scenario.method());
    let credentials = |w: &mut MessageWriter<'_>| {
        if let Authenticated::Yes { header, value, .. } = auth {
            w.header(header, value);
        }
    };
    match scenario {
        Scenario::Options => {
            let uri = format!("sip:{}", ends.target);
            let mut w = MessageWriter::request(out, "OPTIONS", &uri);
            w.header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &format!("<sip:sipshard-load@{local}>;tag={j}"))
                .header("To", &format!("<{uri}>"))
                .header("Call-ID", &call_id)
                .header("CSeq", &cseq)
                .header("Accept", "application/sdp");
            w.finish(None, b"");
        }
        Scenario::Message { users, body, .. } => {
            let uri = user_uri(users, ends, j);
            let mut w = MessageWriter::request(out, "MESSAGE", &uri);
            w.header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &from_of(scenario, ends, j))
                .header("To", &format!("<{uri}>"))
                .header("Call-ID", &call_id)
                .header("CSeq", &cseq);
            credentials(&mut w);
            w.finish(Some("text/plain"), body.as_bytes());
        }
        Scenario::Call { users, .. } => {
            let uri = user_uri(users, ends, j);
            let mut w = MessageWriter::request(out, "INVITE", &uri);
            w.header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &from_of(scenario, ends, j))
                .header("To", &format!("<{uri}>"))
                .header("Call-ID", &call_id)
                .header("CSeq", &cseq)
                .header("Contact", &format!("<sip:sipshard-load@{local}>"));
            credentials(&mut w);
            w.finish(Some("application/sdp"), sdp_offer(local).as_bytes());
        }
        // Written above.
        Scenario::Register { .. } => {}
    }
}

/// Whether a request carries credentials.
pub enum Authenticated<'a> {
    No,
    /// The request resent after a challenge (RFC 3261 §22.2): the same Call-ID (that of the
    /// first request, sent with `first_branch`), CSeq 2, and `header: value` answering it.
    Yes {
        first_branch: &'a str,
        header: &'a str,
        value: &'a str,
    },
}

/// The Request-URI of request `j` (the digest-uri of its credentials).
pub fn request_uri(scenario: &Scenario, ends: &Endpoints, j: u64) -> String {
    match scenario {
        Scenario::Options => format!("sip:{}", ends.target),
        Scenario::Register { users, .. } => {
            format!("sip:{}", users.domain(j).unwrap_or(&ends.domain))
        }
        Scenario::Message { users, .. } | Scenario::Call { users, .. } => user_uri(users, ends, j),
    }
}

/// REGISTER `j` with top Via branch `branch` (a no-op for other scenarios).
fn write_register(
    out: &mut Vec<u8>,
    scenario: &Scenario,
    ends: &Endpoints,
    j: u64,
    branch: &str,
    auth: &Authenticated<'_>,
) {
    let Scenario::Register {
        users,
        expires,
        contact,
    } = scenario
    else {
        return;
    };
    let local = ends.local;
    let via = format!(
        "SIP/2.0/{} {local};branch={branch};rport",
        ends.transport.via()
    );
    let (user, uri) = (users.user(j), request_uri(scenario, ends, j));
    let domain = uri.strip_prefix("sip:").unwrap_or(&ends.domain);
    let aor = format!("<sip:{user}@{domain}>");
    let (call_id, cseq) = match auth {
        Authenticated::No => (call_id(ends, j, branch), "1 REGISTER"),
        Authenticated::Yes { first_branch, .. } => (call_id(ends, j, first_branch), "2 REGISTER"),
    };
    // Over TCP or TLS the binding is reached over the same transport (RFC 3261 §19.1.1's
    // transport parameter). A --contact is another UA (a `sipshard-load uas`, UDP): no parameter.
    let contact = match contact {
        Some(at) => format!("<sip:{user}@{at}>"),
        None => format!("<sip:{user}@{local}{}>", ends.transport.uri_param()),
    };
    let mut w = MessageWriter::request(out, "REGISTER", &uri);
    w.header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &format!("{aor};tag={j}"))
        .header("To", &aor)
        .header("Call-ID", &call_id)
        .header("CSeq", cseq)
        // Unique per user: the user's name at this generator's (or --contact's) address.
        .header("Contact", &contact)
        .header("Expires", &expires.to_string());
    if let Authenticated::Yes { header, value, .. } = auth {
        w.header(header, value);
    }
    w.finish(None, b"");
}

/// The Call-ID of request `j` first sent with `branch`: an in-dialog request recomputes it from
/// the INVITE's branch instead of storing it.
fn call_id(ends: &Endpoints, j: u64, branch: &str) -> String {
    format!("{j}-{branch}@{}", ends.local.ip())
}

/// The From of MESSAGE or INVITE `j`: its caller (see [`caller`]) or the generator, tag `j`.
fn from_of(scenario: &Scenario, ends: &Endpoints, j: u64) -> String {
    match (scenario, caller(scenario, j)) {
        (Scenario::Message { users, .. } | Scenario::Call { users, .. }, Some((user, k))) => {
            format!(
                "<sip:{user}@{}>;tag={j}",
                users.domain(k).unwrap_or(&ends.domain)
            )
        }
        _ => format!("<sip:sipshard-load@{}>;tag={j}", ends.local),
    }
}

/// What a UAC keeps of a dialog (§12.1.2): the To value with the remote tag, the remote target
/// (the 2xx's Contact), the route set (the 2xx's Record-Route, reversed), and from the 2xx's
/// echo of the INVITE its Call-ID, From (with the local tag) and CSeq number (the INVITE's:
/// 2 when it was resent with credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub to: String,
    pub target: String,
    pub routes: Vec<String>,
    pub call_id: String,
    pub from: String,
    pub cseq: u32,
}

/// A header's value as text (the first such header).
fn header_text(msg: &Message<'_>, name: HeaderName) -> Option<String> {
    msg.headers()
        .find(|h| h.name == name)
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_owned)
}

impl Dialog {
    /// From a 2xx to an INVITE; `Err` says what it lacks.
    pub fn from_2xx(response: &Message<'_>) -> Result<Dialog, &'static str> {
        let to = response.to().map_err(|_| "bad To")?;
        to.tag().ok_or("no To tag")?;
        let to = header_text(response, HeaderName::To).ok_or("bad To")?;
        let target = match response.contacts().next() {
            Some(Ok(sipshard_net::Contact::Address(a))) => a.uri.as_str().to_owned(),
            _ => return Err("no Contact"),
        };
        let mut routes = response
            .name_addrs(HeaderName::RecordRoute)
            .map(|r| r.map(|r| format!("<{}>", r.uri.as_str())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "bad Record-Route")?;
        routes.reverse();
        Ok(Dialog {
            to,
            target,
            routes,
            call_id: response.call_id().map_err(|_| "bad Call-ID")?.to_owned(),
            from: header_text(response, HeaderName::From).ok_or("bad From")?,
            cseq: response.cseq().map_err(|_| "bad CSeq")?.seq,
        })
    }
}

/// Which ACK `write_ack` writes.
pub enum Ack<'a> {
    /// To a 2xx (§13.2.2.4): a new transaction with its own `branch`, sent to the remote target
    /// along the route set, CSeq the INVITE's.
    Success { dialog: &'a Dialog, branch: &'a str },
    /// To a 3xx–6xx (§17.1.1.3): part of the INVITE's transaction, so the INVITE's branch,
    /// Call-ID, From and CSeq number (all echoed in `response`), the response's To.
    Failure { response: &'a Message<'a> },
}

/// The ACK for call `j`; `None` when a failure response lacks what the ACK must copy.
pub fn write_ack(
    out: &mut Vec<u8>,
    scenario: &Scenario,
    ends: &Endpoints,
    j: u64,
    ack: Ack<'_>,
) -> Option<()> {
    let (uri, branch, call_id, from, to, cseq, routes): (_, _, _, _, _, _, &[String]) = match ack {
        Ack::Success { dialog, branch } => (
            dialog.target.clone(),
            branch.to_owned(),
            dialog.call_id.clone(),
            dialog.from.clone(),
            dialog.to.clone(),
            dialog.cseq,
            &dialog.routes,
        ),
        Ack::Failure { response } => (
            request_uri(scenario, ends, j),
            response.top_via().ok()?.branch()?.to_owned(),
            response.call_id().ok()?.to_owned(),
            header_text(response, HeaderName::From)?,
            header_text(response, HeaderName::To)?,
            response.cseq().ok()?.seq,
            &[],
        ),
    };
    let local = ends.local;
    let mut w = MessageWriter::request(out, "ACK", &uri);
    w.header(
        "Via",
        &format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            ends.transport.via()
        ),
    )
    .header("Max-Forwards", "70");
    for route in routes {
        w.header("Route", route);
    }
    w.header("From", &from)
        .header("To", &to)
        .header("Call-ID", &call_id)
        .header("CSeq", &format!("{cseq} ACK"));
    w.finish(None, b"");
    Some(())
}

/// A BYE ending `dialog` (§15.1.1), with its own `branch` and CSeq `cseq` (above the INVITE's,
/// §12.2.1.1), and `credentials` (header, value) when it answers a challenge.
pub fn write_bye(
    out: &mut Vec<u8>,
    ends: &Endpoints,
    branch: &str,
    dialog: &Dialog,
    cseq: u32,
    credentials: Option<(&str, &str)>,
) {
    let local = ends.local;
    let mut w = MessageWriter::request(out, "BYE", &dialog.target);
    w.header(
        "Via",
        &format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            ends.transport.via()
        ),
    )
    .header("Max-Forwards", "70");
    for route in &dialog.routes {
        w.header("Route", route);
    }
    w.header("From", &dialog.from)
        .header("To", &dialog.to)
        .header("Call-ID", &dialog.call_id)
        .header("CSeq", &format!("{cseq} BYE"));
    if let Some((name, value)) = credentials {
        w.header(name, value);
    }
    w.finish(None, b"");
}

/// The Request-URI (and To) of MESSAGE or INVITE `j`: its user at its domain (the CSV's, or
/// the run's).
fn user_uri(users: &Users, ends: &Endpoints, j: u64) -> String {
    format!(
        "sip:{}@{}",
        users.user(j),
        users.domain(j).unwrap_or(&ends.domain)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::UserPattern;
    use sipshard_net::{Message, Method};

    fn ends() -> Endpoints {
        Endpoints {
            local: "127.0.0.1:5070".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
            domain: "example.org".into(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn register_with_another_contact_and_credentials() {
        let register = Scenario::Register {
            users: UserPattern::parse("u%d", 0, 10).unwrap().into(),
            expires: 60,
            contact: Some("127.0.0.9:5080".into()),
        };
        let mut out = Vec::new();
        write_request(&mut out, &register, &ends(), 3, "z9hG4bK-x-3");
        let first = String::from_utf8(out.clone()).unwrap();
        assert!(
            first.contains("Contact: <sip:u3@127.0.0.9:5080>\r\n"),
            "{first}"
        );
        assert!(
            first.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;"),
            "{first}"
        );
        assert!(first.contains("CSeq: 1 REGISTER\r\n"), "{first}");
        let auth = Authenticated::Yes {
            first_branch: "z9hG4bK-x-3",
            header: "Authorization",
            value: "Digest username=\"u3\"",
        };
        write_register(&mut out, &register, &ends(), 3, "z9hG4bK-y-3", &auth);
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        let second = String::from_utf8(out.clone()).unwrap();
        assert!(second.contains("CSeq: 2 REGISTER\r\n"), "{second}");
        assert!(second.contains("branch=z9hG4bK-y-3;"), "{second}");
        assert!(
            second.contains("Authorization: Digest username=\"u3\"\r\n"),
            "{second}"
        );
        let call_id = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("Call-ID"))
                .map(str::to_owned)
        };
        assert_eq!(call_id(&first), call_id(&second));
    }

    #[test]
    fn a_listed_users_domain_is_its_aor_and_request_uri() {
        let users = Users::parse_csv("alice,pw,example.org:5070\nbob,pw\n").unwrap();
        let register = Scenario::Register {
            users: users.clone(),
            expires: 60,
            contact: None,
        };
        let mut out = Vec::new();
        write_request(&mut out, &register, &ends(), 0, "z9hG4bK-x-0");
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("REGISTER sip:example.org:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:alice@example.org:5070>\r\n"),
            "{text}"
        );
        assert_eq!(request_uri(&register, &ends(), 1), "sip:example.org");
        assert_eq!(caller(&register, 1), Some(("bob".to_owned(), 1)));
        let message = Scenario::Message {
            users,
            body: "hi".into(),
            from_users: false,
        };
        write_request(&mut out, &message, &ends(), 2, "z9hG4bK-x-2");
        let msg = Message::parse_datagram(&out).unwrap();
        assert_eq!(
            msg.request_uri().unwrap().as_str(),
            "sip:alice@example.org:5070"
        );
    }

    #[test]
    fn requests_parse_and_validate() {
        let mut out = Vec::new();
        write_request(&mut out, &Scenario::Options, &ends(), 7, "z9hG4bK-x-7");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Options));
        assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK-x-7"));

        let users = UserPattern::parse("user%06d", 0, 1000).unwrap().into();
        let register = Scenario::Register {
            users,
            expires: 120,
            contact: None,
        };
        write_request(&mut out, &register, &ends(), 1001, "z9hG4bK-x-1001");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Register));
        assert_eq!(msg.expires_s().unwrap(), Some(120));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("REGISTER sip:example.org SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:user000001@example.org>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:user000001@127.0.0.1:5070>\r\n"),
            "{text}"
        );

        let users: Users = UserPattern::parse("u%d", 0, 10).unwrap().into();
        let message = Scenario::Message {
            users: users.clone(),
            body: "hi".into(),
            from_users: false,
        };
        write_request(&mut out, &message, &ends(), 12, "z9hG4bK-x-12");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Message));
        assert_eq!(msg.request_uri().unwrap().as_str(), "sip:u2@example.org");
        assert!(msg.content_type().unwrap().unwrap().is("text", "plain"));
        assert_eq!(msg.body(), b"hi");

        let call = Scenario::Call {
            users,
            hold_ms: 0,
            from_users: false,
        };
        write_request(&mut out, &call, &ends(), 3, "z9hG4bK-x-3");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Invite));
        assert!(
            msg.content_type()
                .unwrap()
                .unwrap()
                .is("application", "sdp")
        );
        assert!(msg.contacts().next().is_some());
    }
    /// With passwords, MESSAGE and INVITE `j` come from user `j + 1` (whose credentials answer a
    /// proxy's challenge); resent with credentials: the same Call-ID, From and To, CSeq 2.
    #[test]
    fn requests_from_users_resent_with_credentials() {
        let users = Users::parse_csv("alice,a,example.org\nbob,b\n").unwrap();
        let call = Scenario::Call {
            users: users.clone(),
            hold_ms: 0,
            from_users: true,
        };
        assert_eq!(caller(&call, 0), Some(("bob".to_owned(), 1)));
        assert_eq!(caller(&call, 1), Some(("alice".to_owned(), 2)));
        let mut first = Vec::new();
        write_request(&mut first, &call, &ends(), 0, "z9hG4bK-x-0");
        let auth = Authenticated::Yes {
            first_branch: "z9hG4bK-x-0",
            header: "Proxy-Authorization",
            value: "Digest username=\"bob\"",
        };
        let mut second = Vec::new();
        write_request_with(&mut second, &call, &ends(), 0, "z9hG4bK-y-0", &auth);
        let (a, b) = (
            Message::parse_datagram(&first).unwrap(),
            Message::parse_datagram(&second).unwrap(),
        );
        b.validate().unwrap();
        assert_eq!(a.call_id().unwrap(), b.call_id().unwrap());
        assert_eq!((a.cseq().unwrap().seq, b.cseq().unwrap().seq), (1, 2));
        assert_eq!(b.method(), Some(Method::Invite));
        assert_eq!(b.top_via().unwrap().branch(), Some("z9hG4bK-y-0"));
        let text = String::from_utf8(second.clone()).unwrap();
        assert!(
            text.contains("From: <sip:bob@example.org>;tag=0\r\n"),
            "{text}"
        );
        assert!(text.contains("To: <sip:alice@example.org>\r\n"), "{text}");
        assert!(
            text.contains("Proxy-Authorization: Digest username=\"bob\"\r\n"),
            "{text}"
        );
        assert_eq!(request_uri(&call, &ends(), 0), "sip:alice@example.org");

        let message = Scenario::Message {
            users,
            body: "hi".into(),
            from_users: true,
        };
        write_request_with(&mut second, &message, &ends(), 1, "z9hG4bK-y-1", &auth);
        let text = String::from_utf8(second).unwrap();
        assert!(text.contains("CSeq: 2 MESSAGE\r\n"), "{text}");
        // bob's line names no domain: the run's.
        assert!(
            text.contains("From: <sip:alice@example.org>;tag=1\r\n"),
            "{text}"
        );
        assert!(text.contains("To: <sip:bob@example.org>\r\n"), "{text}");
        // Without passwords, from the generator.
        let plain = Scenario::Message {
            users: Users::parse_csv("alice,\n").unwrap(),
            body: "hi".into(),
            from_users: false,
        };
        assert_eq!(caller(&plain, 0), None);
        let mut out = Vec::new();
        write_request(&mut out, &plain, &ends(), 0, "z9hG4bK-x-0");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("From: <sip:sipshard-load@127.0.0.1:5070>;tag=0\r\n"),
            "{text}"
        );
    }
}
