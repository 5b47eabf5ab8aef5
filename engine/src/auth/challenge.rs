//! The wire side of digest authentication: writing challenges (`WWW-Authenticate`,
//! `Proxy-Authenticate`) and reading credentials (`Authorization`, `Proxy-Authorization`).
//!
//! Challenges follow RFC 3261 §22.4 and RFC 8760 §2.4: one header per offered algorithm,
//! strongest first (a user agent uses the first it supports), each with `realm`, `nonce`,
//! `algorithm`, `qop="auth"`, `opaque` when configured and `stale=true` when the nonce the client
//! used had expired (RFC 2617 §3.2.1).
//!
//! Credentials are read from the parsed header ([`AuthHeader`], quotes already removed) into
//! [`Credentials`], checking what does not need the server's state: the scheme, the presence
//! and shape of every directive `qop=auth` requires (RFC 2617 §3.2.2), the `response` length for
//! the algorithm, no directive twice, bounded lengths. What needs state (realm, nonce, URI,
//! password) is the [`super::Authenticator`]'s business.

use sipshard_net::{AuthHeader, HeaderName};

use super::digest::Algorithm;

/// Longest `username` accepted: user names key the throttle's table, so they are bounded.
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest `cnonce`, `realm` or `opaque` accepted.
pub const MAX_TOKEN_BYTES: usize = 256;

/// One challenge's parameters.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeParams<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub opaque: Option<&'a str>,
    pub stale: bool,
}

/// The challenge headers for `algorithms` (already strongest first), all with the same nonce:
/// `(header, value)` pairs to append to a 401 (`WWW-Authenticate`) or 407
/// (`Proxy-Authenticate`).
pub fn challenge_headers(
    header: HeaderName,
    params: &ChallengeParams<'_>,
    algorithms: &[Algorithm],
) -> Vec<(HeaderName, String)> {
    algorithms
        .iter()
        .map(|algorithm| (header, challenge_value(params, *algorithm)))
        .collect()
}

/// One `Digest` challenge value, e.g.
/// `Digest realm="example.org", nonce="…", algorithm=SHA-256, qop="auth"`.
pub fn challenge_value(params: &ChallengeParams<'_>, algorithm: Algorithm) -> String {
    let mut value = String::with_capacity(160);
    value.push_str("Digest realm=");
    push_quoted(&mut value, params.realm);
    value.push_str(", nonce=");
    push_quoted(&mut value, params.nonce);
    if let Some(opaque) = params.opaque {
        value.push_str(", opaque=");
        push_quoted(&mut value, opaque);
    }
    value.push_str(", algorithm=");
    value.push_str(algorithm.name());
    value.push_str(", qop=\"auth\"");
    if params.stale {
        value.push_str(", stale=true");
    }
    value
}

/// `quoted-string` (RFC 3261 §25.1): `"` and `\` escaped, control characters dropped.
fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why a credentials header could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsError {
    /// A scheme other than `Digest`.
    NotDigest,
    /// A directive `qop=auth` requires is absent.
    Missing(&'static str),
    /// A directive given twice (RFC 7616 §3.4: each at most once).
    Duplicate(&'static str),
    UnknownAlgorithm,
    /// A `qop` other than `auth`, or none (RFC 2069 compatibility is not offered).
    UnsupportedQop,
    /// `nc` is not eight hex digits.
    BadNonceCount,
    /// `response` is not hex of the algorithm's length.
    BadResponse,
    /// A directive longer than this module accepts.
    TooLong(&'static str),
    /// A user name that is empty, not UTF-8, or holds control characters or backslashes.
    BadUsername,
    /// `userhash=true` (RFC 7616 §3.4.4): never offered, so never accepted.
    UserHash,
}

/// A `Digest` credentials header with the shape `qop=auth` requires.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub realm: &'a [u8],
    pub nonce: &'a [u8],
    /// The `uri` directive as written (the response covers these bytes).
    pub uri: &'a [u8],
    pub response: &'a [u8],
    /// `MD5` when the directive is absent (RFC 2617 §3.2.1).
    pub algorithm: Algorithm,
    pub qop: &'a [u8],
    /// `nc` as written (eight hex digits; the response covers these bytes) and its value.
    pub nc_text: &'a [u8],
    pub nc: u32,
    pub cnonce: &'a [u8],
    pub opaque: Option<&'a [u8]>,
}

impl<'a> Credentials<'a> {
    /// Reads `header` (one `Authorization`/`Proxy-Authorization` value).
    pub fn parse(header: &AuthHeader<'a>) -> Result<Credentials<'a>, CredentialsError> {
        if !header.scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut fields = Fields::default();
        for (name, value) in header.params() {
            fields.set(name, value)?;
        }
        let required = |name: &'static str| fields.get(name).ok_or(CredentialsError::Missing(name));
        let username = parse_username(required("username")?)?;
        let realm = bounded(required("realm")?, "realm")?;
        let nonce = bounded(required("nonce")?, "nonce")?;
        let uri = required("uri")?;
        let response = required("response")?;
        let algorithm = match fields.get("algorithm") {
            None => Algorithm::Md5,
            Some(name) => Algorithm::from_name(name).ok_or(CredentialsError::UnknownAlgorithm)?,
        };
        let qop = fields.get("qop").ok_or(CredentialsError::UnsupportedQop)?;
        if !qop.eq_ignore_ascii_case(b"auth") {
            return Err(CredentialsError::UnsupportedQop);
        }
        let nc_text = required("nc")?;
        let nc = parse_nc(nc_text).ok_or(CredentialsError::BadNonceCount)?;
        let cnonce = bounded(required("cnonce")?, "cnonce")?;
        if cnonce.is_empty() {
            return Err(CredentialsError::Missing("cnonce"));
        }
        if response.len() != algorithm.hash().hex_len()
            || !response.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(CredentialsError::BadResponse);
        }
        if fields
            .get("userhash")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"true"))
        {
            return Err(CredentialsError::UserHash);
        }
        let opaque = fields
            .get("opaque")
            .map(|o| bounded(o, "opaque"))
            .transpose()?;
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            qop,
            nc_text,
            nc,
            cnonce,
            opaque,
        })
    }
}

/// The directives read, in the order of [`Fields::NAMES`].
#[derive(Default)]
struct Fields<'a> {
    values: [Option<&'a [u8]>; 11],
}

impl<'a> Fields<'a> {
    const NAMES: [&'static str; 11] = [
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "qop",
        "nc",
        "cnonce",
        "opaque",
        "userhash",
    ];

    fn set(&mut self, name: &str, value: &'a [u8]) -> Result<(), CredentialsError> {
        // Extensions are ignored (RFC 7616 §3.4: unrecognised directives are ignored).
        let Some(index) = Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
        else {
            return Ok(());
        };
        if self.values[index].replace(value).is_some() {
            return Err(CredentialsError::Duplicate(Self::NAMES[index]));
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&'a [u8]> {
        let index = Self::NAMES.iter().position(|n| *n == name)?;
        self.values[index]
    }
}

fn bounded<'a>(value: &'a [u8], name: &'static str) -> Result<&'a [u8], CredentialsError> {
    if value.len() > MAX_TOKEN_BYTES {
        return Err(CredentialsError::TooLong(name));
    }
    Ok(value)
}

fn parse_username(value: &[u8]) -> Result<&str, CredentialsError> {
    if value.len() > MAX_USERNAME_BYTES {
        return Err(CredentialsError::TooLong("username"));
    }
    let text = std::str::from_utf8(value).map_err(|_| CredentialsError::BadUsername)?;
    if text.is_empty() || text.chars().any(|c| c.is_control() || c == '\\') {
        return Err(CredentialsError::BadUsername);
    }
    Ok(text)
}

/// `nc-value = 8LHEX` (RFC 2617 §3.2.2); either case is accepted.
fn parse_nc(text: &[u8]) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    text.iter().try_fold(0u32, |acc, c| {
        let digit = char::from(*c).to_digit(16)?;
        Some((acc << 4) | digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"abc\", \
        uri=\"sip:biloxi.com\", response=\"0123456789abcdef0123456789ABCDEF\", \
        algorithm=MD5, qop=auth, nc=0000000a, cnonce=\"xyz\", opaque=\"op\"";

    fn parse(text: &str) -> Result<(), CredentialsError> {
        let header = AuthHeader::parse(text.as_bytes()).map_err(|_| CredentialsError::NotDigest)?;
        Credentials::parse(&header).map(|_| ())
    }

    #[test]
    fn reads_a_full_header() {
        let header = AuthHeader::parse(GOOD.as_bytes()).expect("valid header");
        let c = Credentials::parse(&header).expect("valid credentials");
        assert_eq!(c.username, "bob");
        assert_eq!(c.realm, b"biloxi.com");
        assert_eq!(c.uri, b"sip:biloxi.com");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc, 10);
        assert_eq!(c.nc_text, b"0000000a");
        assert_eq!(c.opaque, Some(&b"op"[..]));
    }

    #[test]
    fn refuses_what_qop_auth_cannot_verify() {
        use CredentialsError as E;
        assert_eq!(parse(&GOOD.replace("Digest", "Basic")), Err(E::NotDigest));
        assert_eq!(
            parse(&GOOD.replace("qop=auth, ", "")),
            Err(E::UnsupportedQop)
        );
        assert_eq!(
            parse(&GOOD.replace("qop=auth", "qop=auth-int")),
            Err(E::UnsupportedQop)
        );
        assert_eq!(
            parse(&GOOD.replace("nc=0000000a", "nc=a")),
            Err(E::BadNonceCount)
        );
        assert_eq!(
            parse(&GOOD.replace("nc=0000000a", "nc=0000000g")),
            Err(E::BadNonceCount)
        );
        assert_eq!(
            parse(&GOOD.replace("cnonce=\"xyz\"", "cnonce=\"\"")),
            Err(E::Missing("cnonce"))
        );
        assert_eq!(
            parse(&GOOD.replace("algorithm=MD5", "algorithm=SHA-256")),
            Err(E::BadResponse),
            "an MD5-length response for SHA-256"
        );
        assert_eq!(
            parse(&GOOD.replace("algorithm=MD5", "algorithm=SHA-1")),
            Err(E::UnknownAlgorithm)
        );
        assert_eq!(
            parse(&format!("{GOOD}, nc=00000001")),
            Err(E::Duplicate("nc"))
        );
        assert_eq!(parse(&format!("{GOOD}, userhash=true")), Err(E::UserHash));
        assert_eq!(
            parse(&GOOD.replace("bob", &"b".repeat(MAX_USERNAME_BYTES + 1))),
            Err(E::TooLong("username"))
        );
        assert_eq!(
            parse(&GOOD.replace("username=\"bob\", ", "")),
            Err(E::Missing("username"))
        );
        // Absent algorithm means MD5; unknown extensions are ignored.
        assert_eq!(parse(&GOOD.replace("algorithm=MD5, ", "x-ext=1, ")), Ok(()));
    }

    #[test]
    fn challenge_values() {
        let params = ChallengeParams {
            realm: "example.org",
            nonce: "n0nce",
            opaque: None,
            stale: false,
        };
        let headers = challenge_headers(
            HeaderName::WwwAuthenticate,
            &params,
            &[Algorithm::Sha256, Algorithm::Md5],
        );
        assert_eq!(
            headers,
            vec![
                (
                    HeaderName::WwwAuthenticate,
                    "Digest realm=\"example.org\", nonce=\"n0nce\", algorithm=SHA-256, \
                     qop=\"auth\""
                        .to_owned()
                ),
                (
                    HeaderName::WwwAuthenticate,
                    "Digest realm=\"example.org\", nonce=\"n0nce\", algorithm=MD5, qop=\"auth\""
                        .to_owned()
                ),
            ]
        );
        let stale = ChallengeParams {
            opaque: Some("o\"p"),
            stale: true,
            ..params
        };
        assert_eq!(
            challenge_value(&stale, Algorithm::Md5),
            "Digest realm=\"example.org\", nonce=\"n0nce\", opaque=\"o\\\"p\", algorithm=MD5, \
             qop=\"auth\", stale=true"
        );
        // What we write, our parser reads back.
        for (_, value) in &headers {
            let parsed = AuthHeader::parse(value.as_bytes()).expect("parses");
            assert_eq!(parsed.param("realm"), Some(&b"example.org"[..]));
        }
    }
}
