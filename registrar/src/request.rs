//! A REGISTER reduced to what the registrar rules need, owned.
//!
//! The shard that receives a REGISTER is usually not the shard that owns its AOR (bindings are
//! partitioned by [`crate::owner_shard`], sockets by `SO_REUSEPORT`). So the receiving shard checks
//! everything that depends only on the request and the configuration (RFC 3261 §10.3 steps 1, 5
//! and 6; RFC 5626 §6 reg-id rules), and sends the owner a [`RegisterRequest`]: a bounded, owned
//! value with no borrow of the receive buffer. The owner applies the rules that depend on stored
//! bindings (step 7) in [`crate::BindingStore::register`].

use std::net::{IpAddr, SocketAddr};

use sipshard_net::{
    Contact, ErrorKind, HeaderName, HostKind, Message, Method, NameAddr, ParseError, Transport, Uri,
};

use crate::{Aor, RegisterError, RegistrarConfig};

/// Most contacts one REGISTER may carry. Each is compared with every binding of its AOR, so the
/// bound keeps a request's cost bounded; real user agents send one, sometimes two.
pub const MAX_CONTACTS_PER_REQUEST: usize = 32;

/// Most bytes of User-Agent kept with a binding (it is informational: logs, the admin endpoint).
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Where a REGISTER came from, as the transport layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The codec's transport type; stream transports (`is_stream`) carry `connection`.
    pub transport: Transport,
    /// The peer's address as seen by us: after any NAT (RFC 3581 `received`/`rport`).
    pub remote: SocketAddr,
    /// Our address the request arrived on.
    pub local: SocketAddr,
    /// The stream connection (TCP/TLS/WS/WSS) it arrived on, `None` for UDP. The id must be
    /// unique in the node, not only in the shard that holds the connection (the shard index in
    /// its high bits, say): the binding is stored on the AOR's shard, which may be another one.
    pub connection: Option<u64>,
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContact {
    /// The contact URI as written (escapes and URI parameters kept: RFC 4475 §3.3.13/§3.3.14).
    pub uri: Box<str>,
    /// The Contact value to echo in the 200 OK: display name, `<uri>` and every header parameter
    /// as written except `expires`, which the response writes with the granted interval.
    pub echo_value: Box<str>,
    /// `q` in thousandths (RFC 3261 §20.10); `None` when absent.
    pub q_millis: Option<u16>,
    /// The `expires` parameter (§10.2.1.1).
    pub expires_s: Option<u32>,
    /// `+sip.instance` without its quotes, e.g. `<urn:uuid:…>` (RFC 5626 §4.1).
    pub instance: Option<Box<str>>,
    /// `reg-id` (RFC 5626 §4.2); cleared when outbound does not apply to the request (§6).
    pub reg_id: Option<u32>,
}

/// An owned summary of a REGISTER (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The canonical AOR from the To URI (§10.3 step 5).
    pub aor: Aor,
    pub call_id: Box<str>,
    pub cseq: u32,
    /// The contacts in order; empty for a fetch or `Contact: *`.
    pub contacts: Vec<RequestContact>,
    /// `Contact: *` (with `Expires: 0`, checked): remove every binding (§10.2.2).
    pub star: bool,
    /// The Expires header, the interval of contacts without their own `expires`.
    pub expires_s: Option<u32>,
    /// The Path header values in order (RFC 3327), each as `<uri>;params`.
    pub path: Vec<Box<str>>,
    /// The UA listed `path` in Supported: the 200 OK echoes Path (RFC 3327 §5.3).
    pub path_supported: bool,
    /// The UA listed `outbound` in Supported (RFC 5626 §6).
    pub outbound_supported: bool,
    pub source: Source,
    /// The topmost Via names the address the request came from: no NAT rewrote it on the way
    /// (RFC 3581 §4; the test Flexisip and Kamailio's nathelper apply). The Contact can then be
    /// trusted even when it names another port (a UA sending from one socket and listening on
    /// another, or a registration made on a device's behalf).
    pub via_matches_source: bool,
    /// User-Agent, at most [`MAX_USER_AGENT_BYTES`] bytes.
    pub user_agent: Option<Box<str>>,
}

impl RegisterRequest {
    /// Checks a parsed REGISTER against the rules that need no stored binding and summarises it.
    ///
    /// In order: the method; the Request-URI scheme (416) and domain (§10.3 step 1, 403); CSeq,
    /// Call-ID; the To URI as AOR (step 5: 400 when not SIP/SIPS, 404 when its domain is not
    /// served); Expires; the Contacts (step 6: `*` alone and only with `Expires: 0`; RFC 5626
    /// §6: `reg-id` needs `+sip.instance`, and outbound needs a first hop that supports it);
    /// Path and Supported (RFC 3327). Values that are not UTF-8 in a Contact or Path are answered
    /// with 400 naming the header, since they are echoed and stored as text.
    ///
    /// Steps 2–4 (Require, authentication, authorisation of third-party registrations) are the
    /// shell's and come before this.
    pub fn from_message(
        msg: &Message<'_>,
        source: Source,
        cfg: &RegistrarConfig,
    ) -> Result<RegisterRequest, RegisterError> {
        if msg.method() != Some(Method::Register) {
            return Err(RegisterError::NotRegister);
        }
        let Some(Uri::Sip(request_uri)) = msg.request_uri() else {
            return Err(RegisterError::UnsupportedUriScheme);
        };
        if !cfg.domains.serves(&request_uri.host) {
            return Err(RegisterError::NotOurDomain);
        }

        let cseq = msg.cseq()?;
        if cseq.method != Method::Register {
            return Err(malformed(ErrorKind::CSeqMethodMismatch));
        }
        let call_id = msg.call_id()?;
        let to = msg.to()?;
        let Uri::Sip(to_uri) = to.uri else {
            return Err(RegisterError::AorNotSip);
        };
        if !cfg.domains.serves(&to_uri.host) {
            return Err(RegisterError::AorNotServed);
        }
        let aor = Aor::from_sip_uri(&to_uri);
        let expires_s = msg.expires_s()?;

        let mut contacts = Vec::new();
        let mut stars = 0usize;
        for contact in msg.contacts() {
            match contact? {
                Contact::Star => stars += 1,
                contact @ Contact::Address(addr) => {
                    if contacts.len() == MAX_CONTACTS_PER_REQUEST {
                        return Err(RegisterError::TooManyContacts);
                    }
                    contacts.push(
                        RequestContact::new(&contact, &addr)
                            .ok_or(malformed(ErrorKind::BadHeader(HeaderName::Contact)))?,
                    );
                }
            }
        }
        // §10.3 step 6: "*" only alone, once, and with Expires: 0.
        if stars > 0 && (stars > 1 || !contacts.is_empty() || expires_s != Some(0)) {
            return Err(RegisterError::InvalidStar);
        }
        // RFC 5626 §6: a reg-id without an instance is invalid.
        if contacts
            .iter()
            .any(|c| c.reg_id.is_some() && c.instance.is_none())
        {
            return Err(RegisterError::RegIdWithoutInstance);
        }

        let mut path = Vec::new();
        let mut first_path_has_ob = false;
        for value in msg.name_addrs(HeaderName::Path) {
            let value = value?;
            if path.is_empty() {
                first_path_has_ob = value.uri.as_sip().is_some_and(|u| u.params.contains("ob"));
            }
            path.push(
                name_addr_text(&value, |_| true)
                    .ok_or(malformed(ErrorKind::BadHeader(HeaderName::Path)))?,
            );
        }
        let (mut path_supported, mut outbound_supported) = (false, false);
        for tag in msg.tokens(HeaderName::Supported) {
            let tag = tag?;
            path_supported |= tag.eq_ignore_ascii_case("path");
            outbound_supported |= tag.eq_ignore_ascii_case("outbound");
        }

        // RFC 5626 §6: outbound applies when we are the first hop (one Via) or the first hop
        // said it keeps the flow (";ob" on the first Path URI). Otherwise a UA that insists gets
        // 439, and the reg-id of one that does not is ignored.
        msg.top_via()?;
        let mut hops = 0usize;
        for via in msg.vias() {
            via?;
            hops += 1;
        }
        let outbound_possible = hops <= 1 || first_path_has_ob;
        if !outbound_possible && contacts.iter().any(|c| c.reg_id.is_some()) {
            if outbound_supported {
                return Err(RegisterError::FirstHopLacksOutboundSupport);
            }
            for c in &mut contacts {
                c.reg_id = None;
            }
        }

        let user_agent = msg.value(HeaderName::UserAgent).map(|v| {
            let v = &v[..v.len().min(MAX_USER_AGENT_BYTES)];
            String::from_utf8_lossy(v).into_owned().into_boxed_str()
        });

        let via_matches_source = msg.top_via().is_ok_and(|via| {
            let sent_by_ip = match via.host.kind {
                HostKind::Ipv4(ip) => Some(IpAddr::V4(ip)),
                HostKind::Ipv6(ip) => ip.map(IpAddr::V6),
                HostKind::Domain => None,
            };
            sent_by_ip == Some(source.remote.ip())
                && via.port.unwrap_or(source.transport.default_port()) == source.remote.port()
        });

        Ok(RegisterRequest {
            aor,
            call_id: call_id.into(),
            cseq: cseq.seq,
            contacts,
            star: stars > 0,
            expires_s,
            path,
            path_supported,
            outbound_supported,
            source,
            via_matches_source,
            user_agent,
        })
    }

    /// A fetch: no Contact, so the request changes nothing and the 200 lists the bindings
    /// (§10.2.3).
    pub fn is_fetch(&self) -> bool {
        self.contacts.is_empty() && !self.star
    }
}

impl RequestContact {
    /// `None` when a part that is stored as text is not UTF-8.
    fn new(contact: &Contact<'_>, addr: &NameAddr<'_>) -> Option<RequestContact> {
        Some(RequestContact {
            uri: addr.uri.as_str().into(),
            echo_value: name_addr_text(addr, |name| !name.eq_ignore_ascii_case("expires"))?,
            q_millis: contact.q_millis(),
            expires_s: contact.expires_s(),
            instance: contact.instance().map(Into::into),
            reg_id: contact.reg_id(),
        })
    }
}

/// `[display-name SP] <uri> *(;param)`: the value as written, always bracketed (a URI with
/// parameters must be, RFC 3261 §20), keeping the header parameters that `keep` accepts.
fn name_addr_text(addr: &NameAddr<'_>, keep: impl Fn(&str) -> bool) -> Option<Box<str>> {
    let uri = addr.uri.as_str();
    let mut text = String::with_capacity(uri.len() + addr.params.as_bytes().len() + 2);
    if let Some(name) = addr.display_name {
        text.push_str(std::str::from_utf8(name).ok()?);
        text.push(' ');
    }
    text.push('<');
    text.push_str(uri);
    text.push('>');
    for param in addr.params.iter().filter(|p| keep(p.name)) {
        text.push(';');
        text.push_str(param.name);
        if let Some(value) = param.value {
            text.push('=');
            text.push_str(std::str::from_utf8(value).ok()?);
        }
    }
    Some(text.into_boxed_str())
}

fn malformed(kind: ErrorKind) -> RegisterError {
    RegisterError::Malformed(ParseError {
        kind,
        in_response: false,
    })
}
