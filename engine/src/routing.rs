//! Routing decisions of the proxy (RFC 3261 §16.3–§16.5), as pure functions of a validated
//! request and who we are. No I/O: the core carries the decision out.
//!
//! A Route of ours may carry a flow token as its user part (this node's Path and Record-Route
//! in a cluster, [`crate::cluster`]): when no other Route remains, the request is for the client
//! connection the token names ([`Decision::Flow`]). Checking the token needs the node's key, so
//! the core does it; a request that arrived over that very flow is routed again with
//! [`decide_without_flows`].

use sipshard_net::{HeaderName, Message, Method, SipUri, Uri};

/// The names and ports under which this node is addressed, and the domains it serves.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// Host names and IP literals of this node (lowercase): listen addresses, aliases.
    pub hosts: Vec<String>,
    /// Ports this node listens on.
    pub ports: Vec<u16>,
    /// Domains whose users register here (lowercase); empty with `any_domain`.
    pub domains: Vec<String>,
    /// `reg-domains=*`: every domain is ours.
    pub any_domain: bool,
    /// Forward requests for other domains when the Request-URI host is an IP literal.
    pub allow_foreign_domains: bool,
}

impl LocalIdentity {
    /// True when the URI names this node itself (a Route or Request-URI we put there).
    pub fn is_this_node(&self, uri: &SipUri<'_>) -> bool {
        let port = uri.port.unwrap_or(if uri.secure { 5061 } else { 5060 });
        self.hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(uri.host.text))
            && self.ports.contains(&port)
    }

    /// True when the host is a domain served here.
    pub fn serves_domain(&self, host: &str) -> bool {
        self.any_domain || self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }
}

/// What to do with a request after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer it here with this status (and, for 420, the Unsupported option tags).
    Reply {
        status: u16,
        reason: &'static str,
        unsupported: Vec<String>,
    },
    /// An ACK addressed to this node: nothing to do (§17.2.1: ACKs are absorbed).
    Absorb,
    /// A REGISTER for a domain served here: the registrar handles it.
    Register,
    /// Route to the bindings of a user of a domain served here (§16.5).
    LookupAor,
    /// Forward to the next hop named by the topmost remaining Route, or by the Request-URI.
    Forward,
    /// Our own Routes, now removed, were the last and carried flow tokens
    /// ([`RouteEdits::flow_tokens`]): send over the client connection one of them names (RFC
    /// 5626 §5.3), keeping the Request-URI.
    Flow,
}

/// Preprocessing of Route information (§16.4) that the forwarded request must reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEdits {
    /// How many of the topmost Route values name this node: remove them.
    pub pop_top_routes: usize,
    /// The Request-URI was placed by this node in a Record-Route and the previous hop is a strict
    /// router: the last Route value becomes the Request-URI and is removed (§16.4).
    pub strict_request_uri: Option<String>,
    /// The user parts of the removed Routes of ours: flow tokens (our own URIs have no user
    /// part otherwise). At most two: this node Record-Routes twice at most.
    pub flow_tokens: Vec<String>,
}

/// The §16.3 checks and §16.4/§16.5 routing of a validated request.
pub fn decide(msg: &Message<'_>, me: &LocalIdentity) -> (Decision, RouteEdits) {
    decide_inner(msg, me, true)
}

/// [`decide`] for a request that arrived over the flow its Route's tokens name (the client
/// itself sent it): the tokens are not where it goes, the Request-URI is.
pub fn decide_without_flows(msg: &Message<'_>, me: &LocalIdentity) -> (Decision, RouteEdits) {
    decide_inner(msg, me, false)
}

fn decide_inner(msg: &Message<'_>, me: &LocalIdentity, flows: bool) -> (Decision, RouteEdits) {
    let method = msg.method().unwrap_or(Method::Options);
    let mut edits = RouteEdits::default();
    let reply = |status, reason| Decision::Reply {
        status,
        reason,
        unsupported: Vec::new(),
    };
    let Some(request_uri) = msg.request_uri() else {
        return (reply(400, "Not A Request"), edits);
    };

    // §16.4: a Request-URI that is ours while Routes remain means a strict router sent this.
    let routes: Vec<_> = msg
        .name_addrs(HeaderName::Route)
        .filter_map(Result::ok)
        .collect();
    let mut effective_uri = *request_uri;
    if let (Some(ruri), Some(last)) = (request_uri.as_sip(), routes.last()) {
        if me.is_this_node(ruri)
            && !routes
                .iter()
                .any(|r| r.uri.as_sip().is_some_and(|u| me.is_this_node(u)))
        {
            edits.strict_request_uri = Some(last.uri.as_str().to_owned());
            effective_uri = last.uri;
        }
    }
    if edits.strict_request_uri.is_none() {
        // Our own entries on top of the route set: one, or two when this node Record-Routed
        // twice for a change of transport (RFC 5658).
        edits.pop_top_routes = routes
            .iter()
            .take_while(|r| r.uri.as_sip().is_some_and(|u| me.is_this_node(u)))
            .count();
        edits.flow_tokens = routes[..edits.pop_top_routes]
            .iter()
            .filter_map(|r| r.uri.as_sip().and_then(|u| u.user))
            .take(2)
            .map(str::to_owned)
            .collect();
    }
    let remaining_routes =
        routes.len() - edits.pop_top_routes - usize::from(edits.strict_request_uri.is_some());

    // A URI without a user part names this node (or its domain); with one, it names a user.
    let addressed_to_node = effective_uri
        .as_sip()
        .is_some_and(|u| u.user.is_none() && (me.is_this_node(u) || me.serves_domain(u.host.text)));

    // §16.3 step 3 (OPTIONS exception: a proxy may answer OPTIONS to itself even at zero).
    if msg.max_forwards().ok().flatten() == Some(0) {
        if method == Method::Options && addressed_to_node && remaining_routes == 0 {
            return (reply(200, "OK"), edits);
        }
        return (reply(483, "Too Many Hops"), edits);
    }
    // §16.3 step 5: Proxy-Require lists extensions this proxy must support; it supports none.
    let unsupported: Vec<String> = msg
        .tokens(HeaderName::ProxyRequire)
        .filter_map(Result::ok)
        .map(str::to_owned)
        .collect();
    if !unsupported.is_empty() {
        return (
            Decision::Reply {
                status: 420,
                reason: "Bad Extension",
                unsupported,
            },
            edits,
        );
    }
    if flows && remaining_routes == 0 && !edits.flow_tokens.is_empty() {
        return (Decision::Flow, edits);
    }
    if remaining_routes > 0 {
        return (Decision::Forward, edits);
    }
    let Uri::Sip(target) = effective_uri else {
        // §16.3 step 2 / RFC 4475 §3.3.2: a scheme this proxy cannot route.
        return (reply(416, "Unsupported URI Scheme"), edits);
    };
    if method == Method::Register && me.serves_domain(target.host.text) {
        return (Decision::Register, edits);
    }
    if addressed_to_node {
        return match method {
            Method::Options => (reply(200, "OK"), edits),
            Method::Ack => (Decision::Absorb, edits),
            _ => (reply(405, "Method Not Allowed"), edits),
        };
    }
    // An in-dialog request (To tag) targets the remote party's contact, which its Request-URI
    // names: forward it there, as the route set says, without consulting the registrar.
    let in_dialog = msg.to().ok().and_then(|to| to.tag()).is_some();
    if in_dialog && !me.is_this_node(&target) {
        let ip_literal = !matches!(target.host.kind, sipshard_net::HostKind::Domain);
        if ip_literal {
            return (Decision::Forward, edits);
        }
    }
    if me.serves_domain(target.host.text) || me.is_this_node(&target) {
        return (Decision::LookupAor, edits);
    }
    let ip_literal = !matches!(target.host.kind, sipshard_net::HostKind::Domain);
    if me.allow_foreign_domains && ip_literal {
        return (Decision::Forward, edits);
    }
    (reply(403, "Domain Not Served"), edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> LocalIdentity {
        LocalIdentity {
            hosts: vec!["127.0.0.1".into(), "proxy.example.org".into()],
            ports: vec![5060],
            domains: vec!["example.org".into()],
            any_domain: false,
            allow_foreign_domains: false,
        }
    }

    fn request(first_line: &str, extra: &str) -> Vec<u8> {
        format!(
            "{first_line}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>\r\nCall-ID: x\r\nCSeq: 1 {}\r\n{extra}Content-Length: 0\r\n\r\n",
            first_line.split(' ').next().unwrap()
        )
        .into_bytes()
    }

    fn decide_bytes(bytes: &[u8]) -> (Decision, RouteEdits) {
        let msg = Message::parse_datagram(bytes).unwrap();
        msg.validate().unwrap();
        decide(&msg, &me())
    }

    fn status(d: &Decision) -> u16 {
        match d {
            Decision::Reply { status, .. } => *status,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn users_of_our_domain_are_looked_up_and_registers_handled() {
        assert_eq!(
            decide_bytes(&request("INVITE sip:b@example.org SIP/2.0", "")).0,
            Decision::LookupAor
        );
        assert_eq!(
            decide_bytes(&request("REGISTER sip:example.org SIP/2.0", "")).0,
            Decision::Register
        );
        assert_eq!(
            status(&decide_bytes(&request("OPTIONS sip:127.0.0.1 SIP/2.0", "")).0),
            200
        );
        assert_eq!(
            status(&decide_bytes(&request("OPTIONS sip:example.org SIP/2.0", "")).0),
            200
        );
    }

    #[test]
    fn both_of_a_double_record_route_are_popped() {
        let (d, edits) = decide_bytes(&request(
            "BYE sip:b@192.0.2.9 SIP/2.0",
            "Route: <sip:127.0.0.1;transport=tcp;lr>, <sip:127.0.0.1;lr>, <sip:next.example.net;lr>\r\n",
        ));
        assert_eq!(d, Decision::Forward);
        assert_eq!(edits.pop_top_routes, 2);
    }

    #[test]
    fn a_user_at_this_nodes_own_address_is_a_user() {
        let (d, _) = decide_bytes(&request("INVITE sip:b@127.0.0.1 SIP/2.0", ""));
        assert_eq!(d, Decision::LookupAor);
    }

    #[test]
    fn in_dialog_requests_go_to_the_contact_in_their_request_uri() {
        let bye = request(
            "BYE sip:b@127.0.0.1:6031 SIP/2.0",
            "Route: <sip:127.0.0.1;lr>\r\n",
        );
        let bye = String::from_utf8_lossy(&bye)
            .replace("To: <sip:b@example.org>", "To: <sip:b@example.org>;tag=x");
        let (d, edits) = decide_bytes(bye.as_bytes());
        assert_eq!(d, Decision::Forward);
        assert_eq!(edits.pop_top_routes, 1);
        // Out of a dialog, the same Request-URI is an address in no domain we serve.
        let (d, _) = decide_bytes(&request("INVITE sip:b@127.0.0.1:6031 SIP/2.0", ""));
        assert_eq!(status(&d), 403);
    }

    #[test]
    fn section_16_3_checks() {
        let zero = request("INVITE sip:b@example.org SIP/2.0", "")
            .replace_ascii("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(status(&decide_bytes(&zero).0), 483);
        let options_zero = request("OPTIONS sip:127.0.0.1 SIP/2.0", "")
            .replace_ascii("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(status(&decide_bytes(&options_zero).0), 200);
        let (d, _) = decide_bytes(&request(
            "INVITE sip:b@example.org SIP/2.0",
            "Proxy-Require: foo, bar\r\n",
        ));
        assert_eq!(
            d,
            Decision::Reply {
                status: 420,
                reason: "Bad Extension",
                unsupported: vec!["foo".into(), "bar".into()]
            }
        );
        assert_eq!(
            status(&decide_bytes(&request("INVITE tel:+123 SIP/2.0", "")).0),
            416
        );
        assert_eq!(
            status(&decide_bytes(&request("INVITE sip:b@elsewhere.net SIP/2.0", "")).0),
            403
        );
    }

    #[test]
    fn loose_and_strict_routing() {
        let (d, edits) = decide_bytes(&request(
            "BYE sip:b@192.0.2.9 SIP/2.0",
            "Route: <sip:127.0.0.1;lr>, <sip:next.example.net;lr>\r\n",
        ));
        assert_eq!(d, Decision::Forward);
        assert_eq!(edits.pop_top_routes, 1);

        let (d, edits) = decide_bytes(&request(
            "BYE sip:b@192.0.2.9 SIP/2.0",
            "Route: <sip:127.0.0.1;lr>\r\n",
        ));
        assert_eq!(edits.pop_top_routes, 1);
        assert_eq!(
            status(&d),
            403,
            "foreign IP literal without allow-foreign-domains"
        );

        // A strict router put our Record-Route URI in the Request-URI.
        let (d, edits) = decide_bytes(&request(
            "BYE sip:127.0.0.1 SIP/2.0",
            "Route: <sip:b@192.0.2.9>\r\n",
        ));
        assert_eq!(edits.strict_request_uri.as_deref(), Some("sip:b@192.0.2.9"));
        assert_eq!(status(&d), 403);
    }

    #[test]
    fn flow_tokens_in_our_last_routes() {
        let invite = "INVITE sip:a@192.0.2.9:5070;transport=tcp SIP/2.0";
        let (d, edits) = decide_bytes(&request(
            invite,
            "Route: <sip:tok1@127.0.0.1;transport=tcp;lr>, <sip:127.0.0.1;lr>\r\n",
        ));
        assert_eq!(d, Decision::Flow);
        assert_eq!(edits.pop_top_routes, 2);
        assert_eq!(edits.flow_tokens, ["tok1"]);
        // Routes remain: the token is noted, the request follows the route.
        let (d, edits) = decide_bytes(&request(
            invite,
            "Route: <sip:tok1@127.0.0.1;lr>, <sip:192.0.2.20;lr>\r\n",
        ));
        assert_eq!(d, Decision::Forward);
        assert_eq!(edits.flow_tokens, ["tok1"]);
        // Sent over the flow itself: routed by its Request-URI, as without a token.
        let bytes = request(invite, "Route: <sip:tok1@127.0.0.1;lr>\r\n");
        let msg = Message::parse_datagram(&bytes).unwrap();
        assert_eq!(status(&decide_without_flows(&msg, &me()).0), 403);
        // §16.3 checks come first.
        let zero = request(invite, "Route: <sip:tok1@127.0.0.1;lr>\r\n")
            .replace_ascii("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(status(&decide_bytes(&zero).0), 483);
    }

    trait ReplaceAscii {
        fn replace_ascii(&self, from: &str, to: &str) -> Vec<u8>;
    }

    impl ReplaceAscii for Vec<u8> {
        fn replace_ascii(&self, from: &str, to: &str) -> Vec<u8> {
            String::from_utf8_lossy(self).replace(from, to).into_bytes()
        }
    }
}
