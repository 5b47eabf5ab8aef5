//! Addresses of record: the key of the location service, and which shard owns each one.
//!
//! RFC 3261 §10.3 step 5 has the registrar derive the AOR from the To header, convert it to
//! "canonical form" and use that as the index into the bindings. §10.3 leaves the canonical form to
//! the implementation but names its ingredients: a SIPS AOR is the same record as its SIP twin, the
//! comparison rules of §19.1.4 apply, and the key is `user@domain`. So the key here is
//! `sip:user@host` where:
//!
//! - the scheme is always `sip` (a SIPS registration and a SIP one reach the same bindings);
//! - the user part is unescaped and then re-escaped canonically, so `%61lice` and `alice` are one
//!   AOR while `Alice` is another (users compare case-sensitively, §19.1.4). Re-escaping keeps the
//!   key printable even when the user holds `%00` (RFC 4475 §3.1.1.4, escnull);
//! - the host is lowercased (IPv4 and IPv6 addresses written in their canonical form);
//! - password, port, URI parameters and headers are dropped.
//!
//! [`owner_shard`] maps an AOR to the shard that owns its bindings. The hash is FNV-1a with a
//! fixed finaliser, written out here rather than borrowed from a hashing crate, because its value
//! must never change: every process of a cluster, every release and every CPU must agree on which
//! shard owns an AOR (ahash, for instance, picks AES or fallback code by CPU and documents that its
//! output may change between versions).

use std::fmt;

use sipshard_net::{Host, HostKind, SipUri, Uri};

/// A canonical address of record, `sip:user@host` (see the module documentation).
///
/// It is owned (no borrow of the receive buffer) because it travels between shards inside a
/// [`crate::RegisterRequest`] and is the key of a shard's binding store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aor(Box<str>);

/// The text is not a SIP or SIPS URI, so it names no AOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAor;

impl fmt::Display for BadAor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a SIP or SIPS URI")
    }
}

impl std::error::Error for BadAor {}

impl Aor {
    /// The canonical AOR of a SIP or SIPS URI (the To URI of a REGISTER, RFC 3261 §10.3 step 5).
    pub fn from_sip_uri(uri: &SipUri<'_>) -> Aor {
        let mut key = String::with_capacity(uri.text.len() + 4);
        key.push_str("sip:");
        if let Some(user) = uri.user {
            push_canonical_user(&mut key, user);
            key.push('@');
        }
        push_canonical_host(&mut key, &uri.host);
        Aor(key.into_boxed_str())
    }

    /// Parses a URI and returns its AOR; for configuration, the admin endpoint and tests.
    pub fn parse(text: &str) -> Result<Aor, BadAor> {
        match Uri::parse(text.trim()) {
            Ok(Uri::Sip(uri)) => Ok(Aor::from_sip_uri(&uri)),
            _ => Err(BadAor),
        }
    }

    /// The canonical text, `sip:user@host`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical host part (lowercase; IPv6 in brackets).
    pub fn host(&self) -> &str {
        let rest = &self.0["sip:".len()..];
        // The canonical user part escapes every '@', so the last one separates user and host.
        rest.rsplit_once('@').map_or(rest, |(_, host)| host)
    }

    /// A 64-bit hash of the canonical text that is the same in every process, release and CPU
    /// (FNV-1a, then the MurmurHash3 `fmix64` finaliser so that the high bits are well mixed).
    pub fn stable_hash(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = FNV_OFFSET;
        for &b in self.0.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        fmix64(h)
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shard, in `0..shards`, that owns the bindings of `aor`.
///
/// Stable across processes, releases and machines (see [`Aor::stable_hash`]), so any node can
/// compute where an AOR lives. `shards == 0` is treated as 1.
pub fn owner_shard(aor: &Aor, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // Lemire's multiply-shift: uniform over 0..shards without a division, using the high bits.
    ((u128::from(aor.stable_hash()) * shards as u128) >> 64) as usize
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `unreserved` and `user-unreserved` of RFC 3261 §25.1: the bytes a user part holds unescaped.
fn is_plain_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b';'
                | b'?'
                | b'/'
        )
}

/// Decodes the user part's escapes and writes every byte back either plain (when the grammar
/// allows it) or as an uppercase `%HH`: one spelling per user.
fn push_canonical_user(out: &mut String, user: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in unescape(user.as_bytes()) {
        if is_plain_user_byte(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// `%HH` decoding; the URI parser has already checked that every `%` starts a valid escape, and a
/// stray one is kept as written.
fn unescape(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *s.get(i)?;
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(b)
    })
}

/// The canonical text of a host: domains lowercased, addresses in their standard notation.
pub(crate) fn canonical_host(host: &Host<'_>) -> String {
    let mut s = String::with_capacity(host.text.len());
    push_canonical_host(&mut s, host);
    s
}

fn push_canonical_host(out: &mut String, host: &Host<'_>) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = match host.kind {
        HostKind::Ipv4(ip) => write!(out, "{ip}"),
        HostKind::Ipv6(Some(ip)) => write!(out, "[{ip}]"),
        HostKind::Domain | HostKind::Ipv6(None) => {
            out.extend(host.text.chars().map(|c| c.to_ascii_lowercase()));
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(s: &str) -> String {
        Aor::parse(s).unwrap().as_str().to_owned()
    }

    #[test]
    fn canonical_form() {
        assert_eq!(aor("sip:alice@atlanta.com"), "sip:alice@atlanta.com");
        // sips → sip, host lowercased, port, params and headers dropped.
        assert_eq!(
            aor("sips:alice@AtLanTa.CoM:5061;transport=tcp?subject=x"),
            "sip:alice@atlanta.com"
        );
        // Escapes decoded, user case kept.
        assert_eq!(aor("sip:%61lice@atlanta.com"), "sip:alice@atlanta.com");
        assert_eq!(aor("sip:Alice@atlanta.com"), "sip:Alice@atlanta.com");
        // Bytes that must stay escaped are re-escaped in uppercase.
        assert_eq!(
            aor("sip:null-%00-null@example.com"),
            "sip:null-%00-null@example.com"
        );
        assert_eq!(aor("sip:a%2fb%40c@example.com"), "sip:a/b%40c@example.com");
        assert_eq!(aor("sip:a%7e%7E@example.com"), "sip:a~~@example.com");
        // Password dropped; IPv6 canonical; no user part.
        assert_eq!(
            aor("sip:bob:secret@[2001:DB8:0::1]"),
            "sip:bob@[2001:db8::1]"
        );
        assert_eq!(aor("sip:Example.COM"), "sip:example.com");
        assert_eq!(Aor::parse("tel:+123"), Err(BadAor));
        assert_eq!(Aor::parse("sip:@x"), Err(BadAor));
    }

    #[test]
    fn host_accessor() {
        assert_eq!(
            Aor::parse("sip:a%40b@Example.com").unwrap().host(),
            "example.com"
        );
        assert_eq!(Aor::parse("sip:example.com").unwrap().host(), "example.com");
        assert_eq!(Aor::parse("sip:u@[::1]:5060").unwrap().host(), "[::1]");
    }

    #[test]
    fn shard_hash_is_stable() {
        // Golden values: if these change, running clusters would disagree about ownership.
        let a = Aor::parse("sip:alice@example.com").unwrap();
        assert_eq!(a.stable_hash(), GOLDEN_ALICE);
        assert_eq!(owner_shard(&a, 8), GOLDEN_ALICE_SHARD_OF_8);
        assert_eq!(owner_shard(&a, 1), 0);
        assert_eq!(owner_shard(&a, 0), 0);
    }

    // FNV-1a 64 of "sip:alice@example.com", then fmix64 (checked against an independent
    // implementation).
    const GOLDEN_ALICE: u64 = 9_940_826_549_658_344_246;
    const GOLDEN_ALICE_SHARD_OF_8: usize = 4;

    #[test]
    fn shards_are_balanced() {
        let shards = 16;
        let mut counts = vec![0usize; shards];
        let n = 64_000;
        for i in 0..n {
            let a = Aor::parse(&format!("sip:user{i}@example.com")).unwrap();
            counts[owner_shard(&a, shards)] += 1;
        }
        let expected = n / shards;
        for c in counts {
            assert!(c.abs_diff(expected) < expected / 10, "{c} vs {expected}");
        }
    }
}
