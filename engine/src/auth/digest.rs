//! The digest computations of RFC 3261 §22.4 (which defers to RFC 2617), for `qop=auth` only,
//! with the hash algorithms RFC 8760 brings to SIP from RFC 7616.
//!
//! - `HA1 = H(username ":" realm ":" password)` (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2); for the
//!   `-sess` variants, `HA1 = H(H(username ":" realm ":" password) ":" nonce ":" cnonce)`.
//! - `HA2 = H(method ":" digest-uri)` (RFC 2617 §3.2.2.3, `qop=auth`).
//! - `response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)` (RFC 2617 §3.2.2.1), every
//!   `H` written as lowercase hex.
//!
//! `auth-int` (a hash of the body) is not offered: no SIP user agent in use depends on it and it
//! would make the verdict depend on the body. The hash functions are RustCrypto's `md-5` and
//! `sha2`; responses are compared in constant time ([`DigestHex::matches`]) so the time taken to
//! reject a guess says nothing about how many of its leading characters were right.

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

/// The hash function under an [`Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestHash {
    Md5,
    Sha256,
    /// SHA-512/256 (FIPS 180-4 §6.7: SHA-512 with its own initial values, truncated).
    Sha512_256,
}

impl DigestHash {
    /// Length of the hash written as hex: 32 for MD5, 64 for the SHA-2 functions.
    pub fn hex_len(self) -> usize {
        match self {
            DigestHash::Md5 => 32,
            DigestHash::Sha256 | DigestHash::Sha512_256 => 64,
        }
    }

    /// `H(parts[0] ":" parts[1] ":" …)` as lowercase hex.
    pub fn hash_joined(self, parts: &[&[u8]]) -> DigestHex {
        match self {
            DigestHash::Md5 => hash_joined::<Md5>(parts),
            DigestHash::Sha256 => hash_joined::<Sha256>(parts),
            DigestHash::Sha512_256 => hash_joined::<Sha512_256>(parts),
        }
    }
}

fn hash_joined<D: Digest>(parts: &[&[u8]]) -> DigestHex {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    DigestHex::from_bytes(&hasher.finalize())
}

/// A digest algorithm as named in the `algorithm` parameter (RFC 7616 §3.3, RFC 8760 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// Every algorithm, strongest first: the order challenges are offered in (RFC 8760 §2.4).
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Md5,
        Algorithm::Md5Sess,
    ];

    /// The token as written in `algorithm=` (RFC 7616 §6.1's registry).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Parses an `algorithm` token, case-insensitively (RFC 7616 §3.3 compares them so).
    pub fn from_name(name: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn hash(self) -> DigestHash {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => DigestHash::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => DigestHash::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => DigestHash::Sha512_256,
        }
    }

    /// The `-sess` variants fold the nonce and cnonce into HA1 (RFC 7616 §3.4.2).
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Position in [`Algorithm::ALL`]: lower is stronger.
    pub fn rank(self) -> usize {
        Algorithm::ALL
            .iter()
            .position(|a| *a == self)
            .unwrap_or(usize::MAX)
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A hash written as lowercase hex, held inline (at most 64 characters: SHA-256, SHA-512/256).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DigestHex {
    text: [u8; 64],
    len: u8,
}

impl DigestHex {
    fn from_bytes(bytes: &[u8]) -> DigestHex {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        let used = bytes.len().min(32);
        for (i, byte) in bytes[..used].iter().enumerate() {
            text[2 * i] = HEX[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        DigestHex {
            text,
            len: (2 * used) as u8,
        }
    }

    /// Parses a stored hash (a password file's `md5:`/`sha256:` value): exactly
    /// `hash.hex_len()` hex digits, either case; kept in lowercase.
    pub fn parse(text: &[u8], hash: DigestHash) -> Option<DigestHex> {
        if text.len() != hash.hex_len() || !text.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut out = [0u8; 64];
        for (o, c) in out.iter_mut().zip(text) {
            *o = c.to_ascii_lowercase();
        }
        Some(DigestHex {
            text: out,
            len: text.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether `given` (a client's `response`, hex in either case) is this value, compared in
    /// constant time. A length mismatch returns early: lengths are public (fixed per algorithm).
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.as_bytes();
        if given.len() != expected.len() {
            return false;
        }
        let mut lowered = [0u8; 64];
        for (l, c) in lowered.iter_mut().zip(given) {
            *l = c.to_ascii_lowercase();
        }
        expected.ct_eq(&lowered[..given.len()]).into()
    }
}

impl std::fmt::Debug for DigestHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A HA1 is password-equivalent: never print it.
        write!(f, "DigestHex(<{} hex digits>)", self.len)
    }
}

/// `H(username ":" realm ":" password)`, the HA1 of the non-`-sess` algorithms and what a
/// password file stores in place of the password (RFC 2617 §3.2.2.2).
pub fn password_ha1(hash: DigestHash, username: &[u8], realm: &[u8], password: &[u8]) -> DigestHex {
    hash.hash_joined(&[username, realm, password])
}

/// The per-request fields that enter the response besides HA1 (RFC 2617 §3.2.2, `qop=auth`).
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub method: &'a [u8],
    /// The `uri` parameter exactly as the client wrote it (the hash covers its bytes).
    pub digest_uri: &'a [u8],
    pub nonce: &'a [u8],
    /// `nc`, the eight hex digits as written.
    pub nc: &'a [u8],
    pub cnonce: &'a [u8],
    pub qop: &'a [u8],
}

/// The `response` a client holding `ha1` (the password HA1, `H(username:realm:password)`) would
/// send for `request` with `algorithm`.
pub fn expected_response(
    algorithm: Algorithm,
    ha1: &DigestHex,
    request: &DigestRequest<'_>,
) -> DigestHex {
    let hash = algorithm.hash();
    let session_ha1;
    let ha1 = if algorithm.is_session() {
        session_ha1 = hash.hash_joined(&[ha1.as_bytes(), request.nonce, request.cnonce]);
        &session_ha1
    } else {
        ha1
    };
    let ha2 = hash.hash_joined(&[request.method, request.digest_uri]);
    hash.hash_joined(&[
        ha1.as_bytes(),
        request.nonce,
        request.nc,
        request.cnonce,
        request.qop,
        ha2.as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the `Mufasa` example (MD5, `qop=auth`).
    #[test]
    fn rfc2617_md5_example() {
        let ha1 = password_ha1(
            DigestHash::Md5,
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
        );
        let request = DigestRequest {
            method: b"GET",
            digest_uri: b"/dir/index.html",
            nonce: b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc: b"00000001",
            cnonce: b"0a4f113b",
            qop: b"auth",
        };
        let response = expected_response(Algorithm::Md5, &ha1, &request);
        assert_eq!(response.as_str(), "6629fae49393a05397450978507c4ef1");
        assert!(response.matches(b"6629fae49393a05397450978507c4ef1"));
        assert!(response.matches(b"6629FAE49393A05397450978507C4EF1"));
        assert!(!response.matches(b"6629fae49393a05397450978507c4ef0"));
        assert!(!response.matches(b"6629fae49393a05397450978507c4e"));
    }

    /// RFC 7616 §3.9.1 (the example RFC 8760 points to): the same exchange with MD5 and with
    /// SHA-256.
    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        let request = DigestRequest {
            method: b"GET",
            digest_uri: b"/dir/index.html",
            nonce: b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc: b"00000001",
            cnonce: b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            qop: b"auth",
        };
        let credentials: (&[u8], &[u8], &[u8]) =
            (b"Mufasa", b"http-auth@example.org", b"Circle of Life");
        let md5 = password_ha1(DigestHash::Md5, credentials.0, credentials.1, credentials.2);
        assert_eq!(
            expected_response(Algorithm::Md5, &md5, &request).as_str(),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        let sha256 = password_ha1(
            DigestHash::Sha256,
            credentials.0,
            credentials.1,
            credentials.2,
        );
        assert_eq!(
            expected_response(Algorithm::Sha256, &sha256, &request).as_str(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// SHA-512/256 and a `-sess` variant, against values computed independently with Python's
    /// `hashlib` (OpenSSL's `sha512_256`); see the test for the recipe. (RFC 7616 §3.9.2's own
    /// SHA-512-256 example is not used: its published `response` does not follow from its inputs.)
    #[test]
    fn sha512_256_and_session_variants() {
        // python3 -c 'import hashlib as h; H=lambda s: h.new("sha512_256", s.encode()).hexdigest();
        //   a1=H("alice:example.org:secret"); a2=H("REGISTER:sip:example.org");
        //   print(H(f"{a1}:abc:00000001:xyz:auth:{a2}"))'
        // and likewise with hashlib.md5 and a1 = M(M("alice:example.org:secret") + ":abc:xyz").
        let ha1 = password_ha1(DigestHash::Sha512_256, b"alice", b"example.org", b"secret");
        let request = DigestRequest {
            method: b"REGISTER",
            digest_uri: b"sip:example.org",
            nonce: b"abc",
            nc: b"00000001",
            cnonce: b"xyz",
            qop: b"auth",
        };
        assert_eq!(
            expected_response(Algorithm::Sha512_256, &ha1, &request).as_str(),
            SHA512_256_EXPECTED
        );
        // MD5-sess: HA1 = MD5(MD5(alice:example.org:secret):abc:xyz).
        let md5 = password_ha1(DigestHash::Md5, b"alice", b"example.org", b"secret");
        assert_eq!(
            expected_response(Algorithm::Md5Sess, &md5, &request).as_str(),
            MD5_SESS_EXPECTED
        );
    }

    const SHA512_256_EXPECTED: &str =
        "6e6e276b2e048fd77ec6d18cb1a94c495195bcf6f09edb0b80ae0f8a76d2f9ef";
    const MD5_SESS_EXPECTED: &str = "a711d07641208a39b40ea4821d6fe84e";

    #[test]
    fn algorithm_names_round_trip_and_rank() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name().as_bytes()), Some(a));
        }
        assert_eq!(Algorithm::from_name(b"sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_name(b"SHA-1"), None);
        assert!(Algorithm::Sha512_256.rank() < Algorithm::Sha256.rank());
        assert!(Algorithm::Sha256.rank() < Algorithm::Md5.rank());
    }

    #[test]
    fn stored_hash_parsing() {
        let md5 = "97FFB1C6AF18E5687BF26CDF35E45D30";
        let parsed = DigestHex::parse(md5.as_bytes(), DigestHash::Md5);
        assert_eq!(
            parsed.map(|h| h.as_str().to_owned()),
            Some(md5.to_ascii_lowercase())
        );
        assert!(DigestHex::parse(md5.as_bytes(), DigestHash::Sha256).is_none());
        assert!(DigestHex::parse(b"zz", DigestHash::Md5).is_none());
        assert_eq!(format!("{:?}", parsed), "Some(DigestHex(<32 hex digits>))");
    }
}
