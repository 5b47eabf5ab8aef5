//! Digest authentication from the client's side (RFC 3261 §22.2, §22.4 with RFC 2617; the SHA-2
//! algorithms of RFC 7616 brought to SIP by RFC 8760): picks the strongest challenge it can answer
//! among a 401's `WWW-Authenticate` (or a 407's `Proxy-Authenticate`) headers and writes the
//! `Authorization` (or `Proxy-Authorization`) value.
//!
//! `HA1 = H(username:realm:password)`, `HA2 = H(method:digest-uri)`, and with `qop=auth`
//! `response = H(HA1:nonce:nc:cnonce:auth:HA2)` (without a qop, the RFC 2069 form
//! `H(HA1:nonce:HA2)`); every `H` as lowercase hex. The `-sess` variants and `auth-int` are not
//! answered. (The node's own verifier is `engine/src/auth/digest.rs`; this one is written again so
//! that the load generator does not depend on the node.)

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use sipshard_net::{HeaderName, Message};

/// The hash algorithms answered, weakest first (`Ord`: the strongest is the greatest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512_256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// From an `algorithm` parameter (case-insensitive); `-sess` and unknown ones are `None`.
    pub fn from_name(name: &[u8]) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// `H(parts[0] ":" parts[1] ":" …)` as lowercase hex.
    pub fn hash(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => hash_joined::<Md5>(parts),
            Algorithm::Sha256 => hash_joined::<Sha256>(parts),
            Algorithm::Sha512_256 => hash_joined::<Sha512_256>(parts),
        }
    }
}

fn hash_joined<D: Digest>(parts: &[&[u8]]) -> String {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a request's digest response covers.
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
}

/// The digest `response` (RFC 2617 §3.2.2.1): with `qop = Some((nc, cnonce))` the `qop=auth`
/// form, else the RFC 2069 one.
pub fn response(
    algorithm: Algorithm,
    c: &Credentials<'_>,
    realm: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha1 = algorithm.hash(&[
        c.username.as_bytes(),
        realm.as_bytes(),
        c.password.as_bytes(),
    ]);
    let ha2 = algorithm.hash(&[c.method.as_bytes(), c.uri.as_bytes()]);
    match qop {
        Some((nc, cnonce)) => algorithm.hash(&[
            ha1.as_bytes(),
            nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]),
        None => algorithm.hash(&[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// A challenge this client can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub algorithm: Algorithm,
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `qop` offered `auth` (else no qop was offered: the RFC 2069 form).
    pub qop_auth: bool,
    /// From a 407: the answer goes in `Proxy-Authorization`.
    pub proxy: bool,
}

/// The strongest answerable Digest challenge of a 401 or 407; `None` when it has none (no
/// challenge, another scheme, only `-sess` or unknown algorithms, or a qop without `auth`).
pub fn strongest_challenge(response: &Message<'_>) -> Option<Challenge> {
    let proxy = match response.status() {
        Some(401) => false,
        Some(407) => true,
        _ => return None,
    };
    let name = if proxy {
        HeaderName::ProxyAuthenticate
    } else {
        HeaderName::WwwAuthenticate
    };
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_owned);
    response
        .auth_headers(name)
        .filter_map(Result::ok)
        .filter(|h| h.scheme.eq_ignore_ascii_case("Digest"))
        .filter_map(|h| {
            // RFC 2617 §3.2.1: no algorithm means MD5.
            let algorithm = match h.param("algorithm") {
                Some(name) => Algorithm::from_name(name)?,
                None => Algorithm::Md5,
            };
            let qop_auth = match h.param("qop") {
                None => false,
                Some(qop) => {
                    if !qop
                        .split(|&b| b == b',')
                        .any(|q| q.trim_ascii().eq_ignore_ascii_case(b"auth"))
                    {
                        return None;
                    }
                    true
                }
            };
            Some(Challenge {
                algorithm,
                realm: text(h.param("realm")?)?,
                nonce: text(h.param("nonce")?)?,
                opaque: h.param("opaque").and_then(text),
                qop_auth,
                proxy,
            })
        })
        .max_by_key(|c| c.algorithm)
}

impl Challenge {
    /// The header answering this challenge: its name and value. `cnonce` is the client's nonce;
    /// the nonce count is always 1 (each nonce is used once).
    pub fn answer(&self, c: &Credentials<'_>, cnonce: &str) -> (&'static str, String) {
        let nc = "00000001";
        let qop = self.qop_auth.then_some((nc, cnonce));
        let digest = response(self.algorithm, c, &self.realm, &self.nonce, qop);
        let mut value = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{digest}\", algorithm={}",
            c.username,
            self.realm,
            self.nonce,
            c.uri,
            self.algorithm.name()
        );
        if self.qop_auth {
            value.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            value.push_str(&format!(", opaque=\"{opaque}\""));
        }
        let name = if self.proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        (name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the `Mufasa` example (MD5, `qop=auth`).
    #[test]
    fn rfc2617_md5_example() {
        let c = Credentials {
            username: "Mufasa",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
        };
        assert_eq!(
            response(
                Algorithm::Md5,
                &c,
                "testrealm@host.com",
                "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                Some(("00000001", "0a4f113b"))
            ),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    /// RFC 7616 §3.9.1: the same exchange with MD5 and with SHA-256.
    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        let c = Credentials {
            username: "Mufasa",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
        };
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let qop = Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"));
        let realm = "http-auth@example.org";
        assert_eq!(
            response(Algorithm::Md5, &c, realm, nonce, qop),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            response(Algorithm::Sha256, &c, realm, nonce, qop),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// SHA-512/256, against the value the node's tests computed with Python's `hashlib`.
    #[test]
    fn sha512_256() {
        let c = Credentials {
            username: "alice",
            password: "secret",
            method: "REGISTER",
            uri: "sip:example.org",
        };
        assert_eq!(
            response(
                Algorithm::Sha512_256,
                &c,
                "example.org",
                "abc",
                Some(("00000001", "xyz"))
            ),
            "6e6e276b2e048fd77ec6d18cb1a94c495195bcf6f09edb0b80ae0f8a76d2f9ef"
        );
    }

    fn challenge_response(status: u16, headers: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
{headers}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_strongest_answerable_challenge_is_chosen() {
        let bytes = challenge_response(
            401,
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256-sess, qop=\"auth\"\r\n\
WWW-Authenticate: Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth,auth-int\", opaque=\"o\"\r\n\
WWW-Authenticate: Digest realm=\"r\", nonce=\"n3\", qop=\"auth\"\r\n\
WWW-Authenticate: Basic realm=\"r\"\r\n",
        );
        let msg = Message::parse_datagram(&bytes).unwrap();
        let c = strongest_challenge(&msg).unwrap();
        assert_eq!(
            (c.algorithm, c.nonce.as_str(), c.qop_auth, c.proxy),
            (Algorithm::Sha256, "n2", true, false)
        );
        let creds = Credentials {
            username: "u",
            password: "p",
            method: "REGISTER",
            uri: "sip:h",
        };
        let (name, value) = c.answer(&creds, "cn");
        assert_eq!(name, "Authorization");
        let expected = response(
            Algorithm::Sha256,
            &creds,
            "r",
            "n2",
            Some(("00000001", "cn")),
        );
        assert!(
            value.contains(&format!("response=\"{expected}\"")),
            "{value}"
        );
        assert!(value.contains("opaque=\"o\""), "{value}");
        assert!(
            value.contains("qop=auth, nc=00000001, cnonce=\"cn\""),
            "{value}"
        );

        let bytes = challenge_response(
            407,
            "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        );
        let c = strongest_challenge(&Message::parse_datagram(&bytes).unwrap()).unwrap();
        assert_eq!(
            (c.algorithm, c.qop_auth, c.proxy),
            (Algorithm::Md5, false, true)
        );
        assert_eq!(c.answer(&creds, "cn").0, "Proxy-Authorization");

        for (status, headers) in [
            (401, ""),
            (
                401,
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1\r\n",
            ),
            (
                401,
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"\r\n",
            ),
            (403, "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n"),
        ] {
            let bytes = challenge_response(status, headers);
            let msg = Message::parse_datagram(&bytes).unwrap();
            assert_eq!(strongest_challenge(&msg), None, "{headers}");
        }
    }
}
