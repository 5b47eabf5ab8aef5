//! Several nodes serving one domain (`[cluster]`, the Flexisip HA deployment): what a node needs
//! to know about the others, and the flow tokens that let any node reach a client whose
//! connection another node holds.
//!
//! Why flow tokens: a client on TCP, TLS or WebSocket can be reached only over the connection it
//! opened (RFC 5626 §3.2: NATs and browsers accept no new one), and that connection lives on the
//! node it registered through. That node adds itself to the binding's Path (RFC 3327) with a
//! user part naming the connection — a flow token in the manner of RFC 5626 §5.2 — and puts the
//! same token in its Record-Route. Another node routes a request for the contact along the Path
//! (Route), so the request comes back to the holding node with the token in its own Route; that
//! node checks the token and sends the request over the connection.
//!
//! A token is the connection id (node-unique: [`crate::core::ConnId`]), the transport and the
//! peer's address, authenticated by an HMAC-SHA-256 tag under a key drawn at start-up. Only the
//! node that issued a token reads it back, so the key never leaves the node; after a restart
//! the old tokens fail the check, as they should: their connections are gone. A token that
//! fails the check is answered 403 (RFC 5626 §5.3) — it was forged or altered.
//! Sans-IO: nothing here reads a clock or a socket.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sipshard_net::Transport;
use subtle::ConstantTimeEq;

use crate::core::ConnId;

type HmacSha256 = Hmac<Sha256>;

/// Separates this MAC's inputs from any other use of the same key.
const DOMAIN_SEPARATOR: &[u8] = b"sipshard-flow-v1";
/// Connection id, transport, IPv6 (or IPv4-mapped) address, port.
const PAYLOAD_BYTES: usize = 8 + 1 + 16 + 2;
/// 80 bits of tag: forging one takes 2^80 tries, each a request over the network.
const TAG_BYTES: usize = 10;
/// Length of a token: lowercase hex, a valid SIP user part (RFC 3261 §25.1 `unreserved`).
pub const TOKEN_CHARS: usize = 2 * (PAYLOAD_BYTES + TAG_BYTES);
/// Bytes of key drawn at start-up.
pub const FLOW_KEY_BYTES: usize = 32;

const TRANSPORTS: [Transport; 5] = [
    Transport::Udp,
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
];

/// A stream connection of this node to a client: what a flow token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub conn: ConnId,
    pub transport: Transport,
    /// The client's address (where the connection goes).
    pub remote: SocketAddr,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowTokenError {
    /// Not a token's length or not hex.
    Malformed,
    /// The tag does not match: altered, forged, or issued before this node restarted.
    BadTag,
}

/// The key that signs and checks this node's flow tokens.
#[derive(Clone)]
pub struct FlowKey {
    mac: HmacSha256,
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlowKey(<hidden>)")
    }
}

impl FlowKey {
    /// A key from `secret` (any length; HMAC takes any).
    pub fn new(secret: &[u8]) -> FlowKey {
        // HMAC accepts keys of every length: the error case cannot happen.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        FlowKey { mac }
    }

    fn tag(&self, payload: &[u8; PAYLOAD_BYTES]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN_SEPARATOR);
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The token naming `flow`: [`TOKEN_CHARS`] lowercase hex digits.
    pub fn token(&self, flow: &Flow) -> String {
        let mut payload = [0u8; PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&flow.conn.to_be_bytes());
        payload[8] = TRANSPORTS
            .iter()
            .position(|t| *t == flow.transport)
            .map_or(0, |i| i as u8);
        let ip = match flow.remote.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        payload[9..25].copy_from_slice(&ip.octets());
        payload[25..].copy_from_slice(&flow.remote.port().to_be_bytes());
        let tag = self.tag(&payload);
        let mut out = String::with_capacity(TOKEN_CHARS);
        for b in payload.iter().chain(&tag) {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// The flow a token names, if this key issued it.
    pub fn open(&self, token: &str) -> Result<Flow, FlowTokenError> {
        let bytes = token.as_bytes();
        if bytes.len() != TOKEN_CHARS {
            return Err(FlowTokenError::Malformed);
        }
        let mut raw = [0u8; PAYLOAD_BYTES + TAG_BYTES];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
                return Err(FlowTokenError::Malformed);
            };
            raw[i] = hi << 4 | lo;
        }
        let mut payload = [0u8; PAYLOAD_BYTES];
        payload.copy_from_slice(&raw[..PAYLOAD_BYTES]);
        let expected = self.tag(&payload);
        if !bool::from(expected.ct_eq(&raw[PAYLOAD_BYTES..])) {
            return Err(FlowTokenError::BadTag);
        }
        let mut conn = [0u8; 8];
        conn.copy_from_slice(&payload[..8]);
        let transport = *TRANSPORTS
            .get(usize::from(payload[8]))
            .ok_or(FlowTokenError::Malformed)?;
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&payload[9..25]);
        let v6 = Ipv6Addr::from(octets);
        let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        let port = u16::from_be_bytes([payload[25], payload[26]]);
        Ok(Flow {
            conn: u64::from_be_bytes(conn),
            transport,
            remote: SocketAddr::new(ip, port),
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// What a node of a cluster knows about the cluster, derived once from `[cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `internal-transport`: where the other nodes reach this one. Its host is an IP literal
    /// (brackets around IPv6), so no node needs DNS to reach another.
    pub internal_host: String,
    pub internal_port: u16,
    pub internal_transport: Transport,
    /// `nodes`: requests from them are trusted (no challenge, no rate limit), and no flow
    /// token is made for a connection to one of them (they are reached by address).
    pub nodes: Vec<IpAddr>,
    pub flows: FlowKey,
}

impl ClusterSettings {
    /// True when `ip` is a node of the cluster (IPv4-mapped IPv6 seen through).
    pub fn is_node(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nodes.contains(&ip)
    }

    /// This node's internal URI in angle brackets with `lr` (RFC 3261 §16.6 step 4), and a flow
    /// token as user part when given: a Path (RFC 3327 §4.2) or a Record-Route value.
    pub fn internal_uri(&self, token: Option<&str>) -> String {
        route_uri(
            &self.internal_host,
            self.internal_port,
            self.internal_transport,
            token,
        )
    }

    /// The flow token of a stream connection to a client (none for UDP, for connections to
    /// other nodes, or without a connection id).
    pub fn token_for(
        &self,
        transport: Transport,
        remote: SocketAddr,
        conn: Option<ConnId>,
    ) -> Option<String> {
        let conn = conn?;
        (transport.is_stream() && !self.is_node(remote.ip())).then(|| {
            self.flows.token(&Flow {
                conn,
                transport,
                remote,
            })
        })
    }
}

/// `<sip:[user@]host:port[;transport=x];lr>`: a URI this node puts in Path or Record-Route.
pub fn route_uri(host: &str, port: u16, transport: Transport, user: Option<&str>) -> String {
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    let param = match transport {
        Transport::Udp => String::new(),
        other => format!(";transport={}", other.via_token().to_ascii_lowercase()),
    };
    format!("<sip:{user}{host}:{port}{param};lr>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            conn: (3u64 << 48) | 77,
            transport: Transport::Tcp,
            remote: "192.0.2.7:40123".parse().unwrap(),
        }
    }

    #[test]
    fn a_token_names_its_flow_and_fits_a_user_part() {
        let key = FlowKey::new(b"k1");
        let token = key.token(&flow());
        assert_eq!(token.len(), TOKEN_CHARS);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key.open(&token), Ok(flow()));
        let v6 = Flow {
            remote: "[2001:db8::5]:5061".parse().unwrap(),
            transport: Transport::Tls,
            ..flow()
        };
        assert_eq!(key.open(&key.token(&v6)), Ok(v6));
    }

    #[test]
    fn altered_forged_and_foreign_tokens_are_refused() {
        let key = FlowKey::new(b"k1");
        let token = key.token(&flow());
        // Another connection id with the old tag.
        let mut altered = token.clone().into_bytes();
        altered[15] = if altered[15] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(key.open(&altered), Err(FlowTokenError::BadTag));
        // Issued by another key (another node, or this one before a restart).
        assert_eq!(
            FlowKey::new(b"k2").open(&token),
            Err(FlowTokenError::BadTag)
        );
        assert_eq!(key.open("alice"), Err(FlowTokenError::Malformed));
        assert_eq!(
            key.open(&token.to_ascii_uppercase()),
            Err(FlowTokenError::Malformed)
        );
        assert_eq!(
            key.open(&token[..TOKEN_CHARS - 2]),
            Err(FlowTokenError::Malformed)
        );
    }

    #[test]
    fn tokens_only_for_client_stream_connections() {
        let cluster = ClusterSettings {
            internal_host: "10.0.0.1".into(),
            internal_port: 5060,
            internal_transport: Transport::Tcp,
            nodes: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            flows: FlowKey::new(b"k"),
        };
        let client: SocketAddr = "192.0.2.7:40123".parse().unwrap();
        let node: SocketAddr = "[::ffff:10.0.0.2]:41000".parse().unwrap();
        assert!(cluster.token_for(Transport::Tcp, client, Some(1)).is_some());
        assert!(cluster.token_for(Transport::Udp, client, Some(1)).is_none());
        assert!(cluster.token_for(Transport::Tcp, client, None).is_none());
        assert!(cluster.token_for(Transport::Tcp, node, Some(1)).is_none());
        assert_eq!(
            cluster.internal_uri(Some("ab")),
            "<sip:ab@10.0.0.1:5060;transport=tcp;lr>"
        );
        assert_eq!(
            route_uri("10.0.0.1", 5060, Transport::Udp, None),
            "<sip:10.0.0.1:5060;lr>"
        );
    }
}
