//! Stateless nonces: any node of a cluster that shares `nonce-secret` can check a nonce that any
//! other node issued, and none needs to remember what it issued.
//!
//! A nonce is `base64url(issued_at_s ‖ serial ‖ tag)` (43 characters, no padding), where
//! `issued_at_s` and `serial` are big-endian `u64`s and `tag` is the first 16 bytes of
//! `HMAC-SHA256(secret, "sipshard-nonce-v1" ‖ issued_at_s ‖ serial ‖ client IP ‖ realm)`.
//! RFC 7616 §5.4 suggests exactly this shape (a time stamp and a keyed hash of the client's
//! address) so the server can tell its own nonces, their age and their intended client without
//! storing them.
//!
//! - The **client IP** (not the port: NAT rebinding and new TCP connections change ports) binds a
//!   nonce to the address it was issued to, so a nonce and the responses computed with it are
//!   useless from elsewhere.
//! - The **realm** stops a nonce issued for one domain from being used against another.
//! - The **serial** makes every challenge's nonce distinct, even two in the same second for the
//!   same address (two phones behind one NAT), so each gets its own nonce-count sequence. It
//!   counts up from `shard << 48`, so shards of one node never issue the same nonce.
//! - The **age** gives the verdict [`NonceCheck::Stale`] after the nonce lifetime
//!   (`nonce-expires`), which the challenge reports with `stale=true` (RFC 2617 §3.2.1) so a user
//!   agent retries with the new nonce without asking its user for the password again.
//!
//! Replays within the lifetime are the business of [`super::replay::NonceCounts`].

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN_SEPARATOR: &[u8] = b"sipshard-nonce-v1";
const TAG_BYTES: usize = 16;
/// `issued_at_s` (8) + `serial` (8) + tag (16).
pub const NONCE_BYTES: usize = 32;
/// Length of a nonce as text: 32 bytes in unpadded base64url.
pub const NONCE_TEXT_LEN: usize = 43;
/// How far in the future a nonce's time stamp may be: another node's clock may run ahead.
pub const MAX_CLOCK_SKEW_S: u64 = 60;
/// The shortest secret accepted: a 128-bit key.
pub const MIN_SECRET_BYTES: usize = 16;

/// A nonce's identity once its tag has been checked: its raw bytes, unique per issued nonce.
pub type NonceId = [u8; NONCE_BYTES];

/// What [`NonceKey::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this client and realm, within its lifetime.
    Valid { id: NonceId, issued_at_s: u64 },
    /// Ours, for this client and realm, but older than the lifetime: answer with `stale=true`.
    Stale { id: NonceId, issued_at_s: u64 },
    /// Not a nonce we issued for this client and realm (forged, altered, from another address,
    /// another realm, another cluster, or from the future).
    Invalid,
}

/// The secret too short to key nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretTooShort {
    pub len_bytes: usize,
}

impl std::fmt::Display for SecretTooShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nonce-secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
            self.len_bytes
        )
    }
}

impl std::error::Error for SecretTooShort {}

/// Issues and checks nonces. One per shard; every node of a cluster uses the same secret.
#[derive(Clone)]
pub struct NonceKey {
    /// The keyed HMAC state, cloned for each nonce (so the key schedule runs once).
    mac: HmacSha256,
    lifetime_s: u64,
    next_serial: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("secret", &"<hidden>")
            .field("lifetime_s", &self.lifetime_s)
            .finish()
    }
}

impl NonceKey {
    /// `secret` is the cluster's `nonce-secret` (at least [`MIN_SECRET_BYTES`]); `shard` keeps
    /// serials of different shards apart; nonces older than `lifetime_s` are stale.
    pub fn new(secret: &[u8], lifetime_s: u64, shard: u16) -> Result<NonceKey, SecretTooShort> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort {
                len_bytes: secret.len(),
            });
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| SecretTooShort {
            len_bytes: secret.len(),
        })?;
        Ok(NonceKey {
            mac,
            lifetime_s,
            next_serial: u64::from(shard) << 48,
        })
    }

    pub fn lifetime_s(&self) -> u64 {
        self.lifetime_s
    }

    /// A new nonce for `client` in `realm`, issued at `now_unix_s`.
    pub fn issue(&mut self, realm: &str, client: IpAddr, now_unix_s: u64) -> String {
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&now_unix_s.to_be_bytes());
        raw[8..16].copy_from_slice(&serial.to_be_bytes());
        let tag = self.tag(&raw[..16], realm.as_bytes(), client);
        raw[16..].copy_from_slice(&tag);
        base64url_encode(&raw)
    }

    /// Checks a nonce a client sent back (RFC 2617 §3.2.2: the server must check the nonce is
    /// one it issued and still valid).
    pub fn check(&self, nonce: &[u8], realm: &str, client: IpAddr, now_unix_s: u64) -> NonceCheck {
        let Some(raw) = base64url_decode_32(nonce) else {
            return NonceCheck::Invalid;
        };
        let expected = self.tag(&raw[..16], realm.as_bytes(), client);
        if !bool::from(expected.ct_eq(&raw[16..])) {
            return NonceCheck::Invalid;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let issued_at_s = u64::from_be_bytes(issued);
        if issued_at_s > now_unix_s.saturating_add(MAX_CLOCK_SKEW_S) {
            return NonceCheck::Invalid;
        }
        if now_unix_s.saturating_sub(issued_at_s) > self.lifetime_s {
            NonceCheck::Stale {
                id: raw,
                issued_at_s,
            }
        } else {
            NonceCheck::Valid {
                id: raw,
                issued_at_s,
            }
        }
    }

    fn tag(&self, stamp: &[u8], realm: &[u8], client: IpAddr) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN_SEPARATOR);
        mac.update(stamp);
        // An IPv4 client seen on a dual-stack socket as ::ffff:a.b.c.d is the same client.
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                mac.update(&[4]);
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(&[6]);
                mac.update(&v6.octets());
            }
        }
        // The realm is last, so its length needs no prefix to keep the input unambiguous.
        mac.update(realm);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 §5 base64url without padding. Its alphabet needs no escaping in a quoted string.
fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
    out
}

fn base64url_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes exactly [`NONCE_TEXT_LEN`] base64url characters into 32 bytes. Anything else,
/// including a last character with stray low bits (a second spelling of the same bytes), is
/// refused, so each nonce has one spelling.
fn base64url_decode_32(text: &[u8]) -> Option<[u8; NONCE_BYTES]> {
    if text.len() != NONCE_TEXT_LEN {
        return None;
    }
    let mut out = [0u8; NONCE_BYTES];
    let mut written = 0;
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= base64url_value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let take = chunk.len() - 1;
        // The bits below the last whole byte must be zero.
        let spare_mask = match take {
            1 => 0x0000_ffff,
            2 => 0x0000_00ff,
            _ => 0,
        };
        if n & spare_mask != 0 {
            return None;
        }
        out[written..written + take].copy_from_slice(&bytes[1..1 + take]);
        written += take;
    }
    (written == NONCE_BYTES).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const T0: u64 = 1_700_000_000;

    fn key() -> NonceKey {
        NonceKey::new(SECRET, 300, 0).expect("secret is long enough")
    }

    #[test]
    fn base64url_round_trip() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let text = base64url_encode(&bytes);
            assert_eq!(text.len(), (len * 4).div_ceil(3));
            if len == NONCE_BYTES {
                assert_eq!(
                    base64url_decode_32(text.as_bytes()).map(Vec::from),
                    Some(bytes)
                );
            }
        }
        // RFC 4648 §10 vector, base64url alphabet.
        assert_eq!(base64url_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn valid_then_stale() {
        let mut key = key();
        let nonce = key.issue("example.org", CLIENT, T0);
        assert_eq!(nonce.len(), NONCE_TEXT_LEN);
        assert!(matches!(
            key.check(nonce.as_bytes(), "example.org", CLIENT, T0 + 300),
            NonceCheck::Valid {
                issued_at_s: T0,
                ..
            }
        ));
        assert!(matches!(
            key.check(nonce.as_bytes(), "example.org", CLIENT, T0 + 301),
            NonceCheck::Stale {
                issued_at_s: T0,
                ..
            }
        ));
    }

    #[test]
    fn bound_to_client_realm_and_secret() {
        let mut key = key();
        let nonce = key.issue("example.org", CLIENT, T0);
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(
            key.check(nonce.as_bytes(), "example.org", other, T0),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(nonce.as_bytes(), "example.com", CLIENT, T0),
            NonceCheck::Invalid
        );
        let stranger = NonceKey::new(b"another secret, 16+ bytes", 300, 0).expect("long enough");
        assert_eq!(
            stranger.check(nonce.as_bytes(), "example.org", CLIENT, T0),
            NonceCheck::Invalid
        );
        // The same client seen through an IPv4-mapped IPv6 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped());
        assert!(matches!(
            key.check(nonce.as_bytes(), "example.org", mapped, T0),
            NonceCheck::Valid { .. }
        ));
        assert_eq!(
            key.check(
                nonce.as_bytes(),
                "example.org",
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                T0
            ),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn tampered_nonces_are_invalid() {
        let mut key = key();
        let nonce = key.issue("example.org", CLIENT, T0);
        for i in 0..nonce.len() {
            let mut bytes = nonce.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                key.check(&bytes, "example.org", CLIENT, T0),
                NonceCheck::Invalid,
                "changed character {i}"
            );
        }
        assert_eq!(
            key.check(&nonce.as_bytes()[1..], "example.org", CLIENT, T0),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(b"", "example.org", CLIENT, T0),
            NonceCheck::Invalid
        );
        let padded = format!("{nonce}=");
        assert_eq!(
            key.check(padded.as_bytes(), "example.org", CLIENT, T0),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn future_time_stamps_beyond_skew_are_invalid() {
        let mut key = key();
        let ahead = key.issue("example.org", CLIENT, T0 + MAX_CLOCK_SKEW_S);
        assert!(matches!(
            key.check(ahead.as_bytes(), "example.org", CLIENT, T0),
            NonceCheck::Valid { .. }
        ));
        let too_far = key.issue("example.org", CLIENT, T0 + MAX_CLOCK_SKEW_S + 1);
        assert_eq!(
            key.check(too_far.as_bytes(), "example.org", CLIENT, T0),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn every_nonce_is_distinct_and_shards_differ() {
        let mut a = NonceKey::new(SECRET, 300, 0).expect("long enough");
        let mut b = NonceKey::new(SECRET, 300, 1).expect("long enough");
        let first = a.issue("example.org", CLIENT, T0);
        assert_ne!(first, a.issue("example.org", CLIENT, T0));
        assert_ne!(first, b.issue("example.org", CLIENT, T0));
        // Another shard (or node) with the same secret accepts it.
        assert!(matches!(
            b.check(first.as_bytes(), "example.org", CLIENT, T0),
            NonceCheck::Valid { .. }
        ));
    }

    #[test]
    fn short_secret_refused() {
        assert_eq!(
            NonceKey::new(b"short", 300, 0).map(|_| ()),
            Err(SecretTooShort { len_bytes: 5 })
        );
    }
}
