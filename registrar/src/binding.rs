//! A binding: one contact of an AOR, with what is needed to reach it (RFC 3261 §10, RFC 3327,
//! RFC 5626, RFC 3581).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use sipshard_net::{HostKind, Transport, Uri};

use crate::request::{RequestContact, Source};

/// Identifies a binding within its shard for as long as the shard runs; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingId(pub(crate) u64);

impl BindingId {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One registered contact of an AOR. Only the [`crate::BindingStore`] creates and changes them;
/// everyone else reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub(crate) id: BindingId,
    /// Order of the last add or refresh in the store: eviction takes the smallest, lookup lists
    /// the largest first among equal q.
    pub(crate) update_seq: u64,
    /// The contact URI as registered (escapes and URI parameters kept).
    pub uri: Box<str>,
    /// The Contact value without `expires`, for the 200 OK ([`crate::ContactEcho`]).
    pub echo_value: Box<str>,
    /// `q` in thousandths, `None` when the UA gave none (ranked as 1.0).
    pub q_millis: Option<u16>,
    /// `+sip.instance` (RFC 5626 §4.1).
    pub instance: Option<Box<str>>,
    /// `reg-id`, present only when outbound applies (RFC 5626 §6).
    pub reg_id: Option<u32>,
    /// Call-ID and CSeq of the last REGISTER that changed this binding (§10.3 step 7).
    pub call_id: Box<str>,
    pub cseq: u32,
    /// The Path of that REGISTER: requests to this contact carry it as Route (RFC 3327 §5.3).
    pub path: Vec<Box<str>>,
    /// Where that REGISTER came from (RFC 3581: the address after NAT; RFC 5626: the flow).
    pub source: Source,
    /// That REGISTER's top Via named its source address: no NAT in between
    /// ([`crate::RegisterRequest::via_matches_source`]).
    pub via_matches_source: bool,
    pub user_agent: Option<Box<str>>,
    /// When the binding was first created (kept across refreshes).
    pub registered_at: Instant,
    /// When it was last added or refreshed.
    pub updated_at: Instant,
    /// When it stops existing; it is live while `now < expires_at`.
    pub expires_at: Instant,
}

/// Where to send a request for a binding's contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Resolve the contact URI as usual (RFC 3263): the UA is where it says, or the contact is
    /// not a SIP URI (`tel:`, `mailto:`).
    ContactUri,
    /// Send to the address the REGISTER came from, over its transport: the UA is behind a NAT
    /// (the contact names an address the REGISTER did not come from, RFC 3581), or the REGISTER
    /// came through a proxy (Path), which is then the next hop.
    Address {
        transport: Transport,
        addr: SocketAddr,
    },
    /// Send on the connection the REGISTER arrived on (RFC 5626 §5.3; a UA behind NAT or a
    /// browser cannot accept a new one); if it is gone, open one to `fallback`.
    Connection {
        transport: Transport,
        connection: u64,
        fallback: SocketAddr,
    },
}

impl Binding {
    pub fn id(&self) -> BindingId {
        self.id
    }

    /// Still registered at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Seconds left, for `Contact: <uri>;expires=N` in a 200 OK. Rounded down, but at least 1
    /// while live: 0 would tell the UA the binding is gone.
    pub fn remaining_s(&self, now: Instant) -> u32 {
        if !self.is_live(now) {
            return 0;
        }
        let s = self.expires_at.saturating_duration_since(now).as_secs();
        u32::try_from(s).unwrap_or(u32::MAX).max(1)
    }

    /// `q` for ranking: absent counts as 1.0 (RFC 3261 §16.6 leaves unranked contacts first).
    pub fn rank_q_millis(&self) -> u16 {
        self.q_millis.unwrap_or(1000)
    }

    /// Where requests for this contact go: the stream connection it registered on (the source
    /// address as fallback); for UDP the source address when a NAT stood between the UA and us
    /// (its Via and its Contact both name another address than the source, RFC 3581) or a proxy
    /// relayed the REGISTER; otherwise the contact URI itself.
    pub fn next_hop(&self) -> NextHop {
        let Ok(Uri::Sip(uri)) = Uri::parse(&self.uri) else {
            return NextHop::ContactUri;
        };
        let source = self.source;
        if source.transport.is_stream() {
            return match source.connection {
                Some(connection) => NextHop::Connection {
                    transport: source.transport,
                    connection,
                    fallback: source.remote,
                },
                None => NextHop::Address {
                    transport: source.transport,
                    addr: source.remote,
                },
            };
        }
        let contact_ip = match uri.host.kind {
            HostKind::Ipv4(ip) => Some(IpAddr::V4(ip)),
            HostKind::Ipv6(ip) => ip.map(IpAddr::V6),
            HostKind::Domain => None,
        };
        let contact_port = uri.port.unwrap_or(if uri.secure { 5061 } else { 5060 });
        let contact_is_source = contact_ip.is_some_and(|ip| same_ip(ip, source.remote.ip()))
            && contact_port == source.remote.port();
        let reached_directly =
            self.path.is_empty() && (contact_is_source || self.via_matches_source);
        if reached_directly {
            NextHop::ContactUri
        } else {
            NextHop::Address {
                transport: source.transport,
                addr: source.remote,
            }
        }
    }

    /// RFC 3261 §10.3 step 7 and RFC 5626 §6: whether a contact of a REGISTER updates this
    /// binding.
    ///
    /// - with `+sip.instance` and `reg-id`: same instance and reg-id, or same instance and no
    ///   reg-id stored (the device now uses outbound; its old binding is replaced, not doubled);
    /// - with `+sip.instance` only: same instance, whatever the reg-id (Flexisip: the instance
    ///   names the device, whatever its contact URI);
    /// - otherwise: equivalent URIs (§19.1.4).
    pub fn matches(&self, contact: &RequestContact) -> bool {
        match (&contact.instance, contact.reg_id) {
            (Some(instance), reg_id) => {
                let same_instance = self
                    .instance
                    .as_deref()
                    .is_some_and(|mine| mine.eq_ignore_ascii_case(instance));
                same_instance
                    && (reg_id.is_none() || self.reg_id.is_none() || self.reg_id == reg_id)
            }
            (None, _) => uris_equivalent(&self.uri, &contact.uri),
        }
    }
}

/// §19.1.4 equivalence of two stored URI texts (both were parsed when registered).
pub(crate) fn uris_equivalent(a: &str, b: &str) -> bool {
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(a), Ok(b)) => a.equivalent(&b),
        _ => a == b,
    }
}

/// IP equality that sees through IPv4-mapped IPv6 (a dual-stack socket reports IPv4 peers so).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}
