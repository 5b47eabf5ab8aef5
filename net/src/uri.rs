//! SIP, SIPS and other URIs (RFC 3261 §19.1, §25.1; IPv6 references per RFC 5118).
//!
//! A [`Uri`] borrows its text. SIP and SIPS URIs are split into user, password, host, port,
//! parameters and headers; every other scheme (`tel:`, `urn:`, …) is carried as scheme plus opaque
//! text so a proxy can forward it untouched. Escapes (`%HH`) are validated but kept: comparison
//! decodes them on the fly (§19.1.4), so nothing is allocated.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::params::Params;
use crate::scan::{
    CLASSES, DIGIT_DOT, HOST, HOSTPORT_END, OPAQUE, SCHEME, URI_HEADER, URI_PARAM, URI_PASSWORD,
    URI_USER, classes_of, find_byte, hex_value, is, unescaped,
};

/// A parsed URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// Any other absolute URI, carried as written.
    Other(OtherUri<'a>),
}

/// A `sip:`/`sips:` URI split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// The whole URI as written.
    pub text: &'a str,
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, escapes kept.
    pub user: Option<&'a str>,
    /// The password, escapes kept (RFC 3261 §19.1.1 discourages it, but it is legal).
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// `uri-parameters`, the text after the first `;` of the host part.
    pub params: Params<'a>,
    /// `headers`, the text after `?` (without the `?`), empty if none.
    pub headers: &'a str,
}

/// A URI of a scheme sipshard does not interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherUri<'a> {
    pub text: &'a str,
    pub scheme: &'a str,
    /// Everything after `scheme:`.
    pub opaque: &'a str,
}

/// A host as written, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    /// The text as written; IPv6 references keep their brackets.
    pub text: &'a str,
    pub kind: HostKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Domain,
    Ipv4(Ipv4Addr),
    /// An IPv6 reference. The address is `None` for references that are tolerated but do not parse
    /// as an address, such as the `[2001:db8:::192.0.2.1]` of RFC 5118 §4.10.
    Ipv6(Option<Ipv6Addr>),
}

/// The URI text is not a valid URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUri;

impl<'a> Uri<'a> {
    /// Parses an absolute URI. The text must not contain LWS (callers trim around it).
    pub fn parse(text: &'a str) -> Result<Uri<'a>, BadUri> {
        let t = text.as_bytes();
        if !t.first().is_some_and(u8::is_ascii_alphabetic) {
            return Err(BadUri);
        }
        let mut colon = 1;
        while colon < t.len() && t[colon] != b':' {
            if !is(t[colon], SCHEME) {
                return Err(BadUri);
            }
            colon += 1;
        }
        if colon == t.len() {
            return Err(BadUri);
        }
        let (scheme, rest) = (&text[..colon], &text[colon + 1..]);
        let secure = match scheme.as_bytes() {
            [s, i, p] if [*s, *i, *p].map(|b| b | 0x20) == *b"sip" => false,
            [s, i, p, s2] if [*s, *i, *p, *s2].map(|b| b | 0x20) == *b"sips" => true,
            _ => {
                let opaque_ok = !rest.is_empty() && classes_of(rest.as_bytes()) & OPAQUE != 0;
                return if opaque_ok {
                    Ok(Uri::Other(OtherUri {
                        text,
                        scheme,
                        opaque: rest,
                    }))
                } else {
                    Err(BadUri)
                };
            }
        };
        parse_sip(text, secure, rest).map(Uri::Sip)
    }

    /// The URI as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.text,
            Uri::Other(u) => u.text,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }

    /// URI equivalence: RFC 3261 §19.1.4 for SIP/SIPS; exact, case-insensitive-scheme text match
    /// for other schemes (their own comparison rules are not sipshard's business).
    pub fn equivalent(&self, other: &Uri<'_>) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Other(a), Uri::Other(b)) => {
                a.scheme.eq_ignore_ascii_case(b.scheme) && a.opaque == b.opaque
            }
            _ => false,
        }
    }
}

fn parse_sip<'a>(text: &'a str, secure: bool, rest: &'a str) -> Result<SipUri<'a>, BadUri> {
    let r = rest.as_bytes();
    // '@' may appear only as the end of userinfo: no other component's grammar allows it.
    let (user, password, hostpart) = match find_byte(r, b'@') {
        None => (None, None, rest),
        Some(at) => {
            // One pass over the user: where it ends (the first ':') and its byte classes.
            let mut user_end = 0;
            let mut classes = u16::MAX;
            while user_end < at && r[user_end] != b':' {
                classes &= CLASSES[r[user_end] as usize];
                user_end += 1;
            }
            let user = &r[..user_end];
            if user.is_empty() || (classes & URI_USER == 0 && !valid_chars_escaped(user, URI_USER))
            {
                return Err(BadUri);
            }
            let password = if user_end < at {
                if !valid_chars(&r[user_end + 1..at], URI_PASSWORD) {
                    return Err(BadUri);
                }
                Some(&rest[user_end + 1..at])
            } else {
                None
            };
            (Some(&rest[..user_end]), password, &rest[at + 1..])
        }
    };
    let h = hostpart.as_bytes();
    // hostport, in one pass unless it is an IPv6 reference.
    let (host, port, mut i) = if h.first() == Some(&b'[') {
        let end = h
            .iter()
            .position(|&b| b == b';' || b == b'?')
            .unwrap_or(h.len());
        let (host, port) = parse_hostport(&hostpart[..end])?;
        (host, port, end)
    } else {
        let mut i = 0;
        let mut classes = u16::MAX;
        while i < h.len() {
            let c = CLASSES[h[i] as usize];
            if c & HOSTPORT_END != 0 {
                break;
            }
            classes &= c;
            i += 1;
        }
        let host = Host::classified(&hostpart[..i], classes)?;
        let port = if h.get(i) == Some(&b':') {
            i += 1;
            let start = i;
            let mut port: u32 = 0;
            while i < h.len() && h[i].is_ascii_digit() {
                port = port * 10 + u32::from(h[i] - b'0');
                if port > u32::from(u16::MAX) {
                    return Err(BadUri);
                }
                i += 1;
            }
            if i == start || !matches!(h.get(i), None | Some(b';' | b'?')) {
                return Err(BadUri);
            }
            Some(port as u16)
        } else {
            None
        };
        (host, port, i)
    };
    // `;params` up to the first `?`, then `?headers`.
    let params_start = i;
    if h.get(i) == Some(&b';') {
        i += memchr::memchr(b'?', &h[i..]).unwrap_or(h.len() - i);
    }
    let params = &h[params_start..i];
    if !params.is_empty() && (!valid_chars(params, URI_PARAM) || !uri_params_well_formed(params)) {
        return Err(BadUri);
    }
    let headers = hostpart.get(i + 1..).unwrap_or("");
    if !valid_chars(headers.as_bytes(), URI_HEADER) {
        return Err(BadUri);
    }
    Ok(SipUri {
        text,
        secure,
        user,
        password,
        host,
        port,
        params: Params::validated(params),
        headers,
    })
}

/// `*( ";" pname [ "=" pvalue ] )` for text already made of [`URI_PARAM`] bytes and escapes:
/// every name before an `=` and every value after it is then made of legal bytes, so what is left
/// to check is that none is empty. This is [`Params::parse`]'s grammar for such text.
fn uri_params_well_formed(params: &[u8]) -> bool {
    let Some(rest) = params.strip_prefix(b";") else {
        return params.is_empty();
    };
    rest.split(|&b| b == b';')
        .all(|param| match param.iter().position(|&b| b == b'=') {
            None => !param.is_empty(),
            Some(eq) => eq > 0 && eq + 1 < param.len(),
        })
}

/// `hostport = host [ ":" port ]` (§25.1), shared with Via's sent-by.
pub(crate) fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), BadUri> {
    let b = s.as_bytes();
    let (host, port_text) = if b.first() == Some(&b'[') {
        let close = s.find(']').ok_or(BadUri)?;
        let after = &s[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(BadUri),
        };
        (Host::parse(&s[..=close])?, port)
    } else {
        // One pass over the host: its end and the classes of its bytes.
        let mut classes = u16::MAX;
        let mut end = 0;
        while end < b.len() && b[end] != b':' {
            classes &= CLASSES[b[end] as usize];
            end += 1;
        }
        let host = Host::classified(&s[..end], classes)?;
        (host, s.get(end + 1..))
    };
    let port = match port_text {
        None => None,
        Some(p) => Some(
            crate::scan::parse_decimal_u32(p.as_bytes())
                .and_then(|v| u16::try_from(v).ok())
                .ok_or(BadUri)?,
        ),
    };
    Ok((host, port))
}

impl<'a> Host<'a> {
    /// `host = hostname / IPv4address / IPv6reference` (§25.1). Hostnames may contain `_`, which
    /// real deployments use even though the grammar does not.
    pub fn parse(text: &'a str) -> Result<Host<'a>, BadUri> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let ok = inner.contains(':')
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return Err(BadUri);
            }
            return Ok(Host {
                text,
                kind: HostKind::Ipv6(inner.parse().ok()),
            });
        }
        Host::classified(text, classes_of(text.as_bytes()))
    }

    /// A hostname or IPv4 address, given the classes all its bytes are in.
    fn classified(text: &'a str, classes: u16) -> Result<Host<'a>, BadUri> {
        if text.is_empty() || classes & HOST == 0 {
            return Err(BadUri);
        }
        if classes & DIGIT_DOT != 0 {
            let ip = parse_ipv4(text.as_bytes()).ok_or(BadUri)?;
            return Ok(Host {
                text,
                kind: HostKind::Ipv4(ip),
            });
        }
        Ok(Host {
            text,
            kind: HostKind::Domain,
        })
    }

    /// Host equality of §19.1.4: domains case-insensitively, addresses by value.
    pub fn equivalent(&self, other: &Host<'_>) -> bool {
        match (self.kind, other.kind) {
            (HostKind::Ipv4(a), HostKind::Ipv4(b)) => a == b,
            (HostKind::Ipv6(Some(a)), HostKind::Ipv6(Some(b))) => a == b,
            _ => self.text.eq_ignore_ascii_case(other.text),
        }
    }
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT` (§25.1), each part at most
/// 255. Leading zeros are allowed (`010.000.002.001` is 10.0.2.1), unlike `Ipv4Addr`'s parser.
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut part = 0;
    let (mut value, mut digits) = (0u32, 0);
    for &b in s {
        if b == b'.' {
            if digits == 0 || part == 3 {
                return None;
            }
            octets[part] = value as u8;
            part += 1;
            (value, digits) = (0, 0);
        } else {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u32::from(digit);
            digits += 1;
            if digits > 3 || value > 255 {
                return None;
            }
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

impl<'a> SipUri<'a> {
    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get_str("transport")
    }

    /// The `lr` parameter that marks a loose router (§19.1.1).
    pub fn is_loose_router(&self) -> bool {
        self.params.contains("lr")
    }

    /// RFC 3261 §19.1.4: same scheme; user and password equal case-sensitively after unescaping;
    /// host case-insensitively; port present in both or neither and equal; `user`, `ttl`, `method`,
    /// `maddr` and `transport` present in both or neither and equal; other parameters compared only
    /// when present in both; headers all present in both and equal.
    pub fn equivalent(&self, other: &SipUri<'_>) -> bool {
        const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
        self.secure == other.secure
            && opt_eq_unescaped(self.user, other.user, false)
            && opt_eq_unescaped(self.password, other.password, false)
            && self.host.equivalent(&other.host)
            && self.port == other.port
            && MUST_MATCH
                .iter()
                .all(|name| param_values_match(self.params.get(name), other.params.get(name)))
            // A repeated parameter name counts by its first occurrence, on both sides, so that
            // every URI is equivalent to itself.
            && self.params.iter().all(|p| match other.params.get(p.name) {
                Some(theirs) => param_values_match(self.params.get(p.name), Some(theirs)),
                None => true,
            })
            && headers_equivalent(self.headers, other.headers)
            && headers_equivalent(other.headers, self.headers)
    }
}

fn opt_eq_unescaped(a: Option<&str>, b: Option<&str>, ignore_case: bool) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => eq_unescaped(a.as_bytes(), b.as_bytes(), ignore_case),
        _ => false,
    }
}

fn eq_unescaped(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        unescaped(a)
            .map(|c| c.to_ascii_lowercase())
            .eq(unescaped(b).map(|c| c.to_ascii_lowercase()))
    } else {
        unescaped(a).eq(unescaped(b))
    }
}

/// Parameter values compare case-insensitively after unescaping; a missing value equals only a
/// missing value.
fn param_values_match(a: Option<Option<&[u8]>>, b: Option<Option<&[u8]>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(None), Some(None)) => true,
        (Some(Some(a)), Some(Some(b))) => eq_unescaped(a, b, true),
        _ => false,
    }
}

/// Every header of `a` is in `b` with an equal value (names case-insensitive, values
/// case-sensitive after unescaping).
fn headers_equivalent(a: &str, b: &str) -> bool {
    fn pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
        s.split('&')
            .filter(|h| !h.is_empty())
            .map(|h| h.split_once('=').unwrap_or((h, "")))
    }
    pairs(a).all(|(name, value)| {
        pairs(b).any(|(n, v)| {
            eq_unescaped(n.as_bytes(), name.as_bytes(), true)
                && eq_unescaped(v.as_bytes(), value.as_bytes(), false)
        })
    })
}

/// Every byte of `s` is in `class` or part of an escape (`%` HEX HEX).
fn valid_chars(s: &[u8], class: u16) -> bool {
    classes_of(s) & class != 0 || valid_chars_escaped(s, class)
}

#[cold]
fn valid_chars_escaped(b: &[u8], class: u16) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let escape_ok = b.get(i + 1).and_then(|&c| hex_value(c)).is_some()
                && b.get(i + 2).and_then(|&c| hex_value(c)).is_some();
            if !escape_ok {
                return false;
            }
            i += 3;
        } else if is(b[i], class) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parts_of_a_full_sip_uri() {
        let u = sip(
            "sips:alice:secret@[2001:db8::10]:5071;transport=tcp;lr?Subject=hi&Priority=urgent",
        );
        assert!(u.secure);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host.text, "[2001:db8::10]");
        assert_eq!(
            u.host.kind,
            HostKind::Ipv6(Some("2001:db8::10".parse().unwrap()))
        );
        assert_eq!(u.port, Some(5071));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_router());
        assert_eq!(u.headers, "Subject=hi&Priority=urgent");
    }

    #[test]
    fn ipv6_port_must_be_outside_the_brackets() {
        // RFC 5118 §4.3: [2001:db8::10:5070] is one address, no port.
        let u = sip("sip:user@[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert_eq!(sip("sip:user@[2001:db8::10]:5070").port, Some(5070));
        // §4.2: an IPv6 address without brackets is invalid.
        assert_eq!(Uri::parse("sip:user@2001:db8::10"), Err(BadUri));
    }

    #[test]
    fn user_part_may_hold_semicolons_and_question_marks() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host.text, "example.com");
    }

    #[test]
    fn ipv4_octets_are_one_to_three_digits_up_to_255() {
        for (text, addr) in [
            ("192.168.001.001", [192, 168, 1, 1]),
            ("010.000.002.001", [10, 0, 2, 1]),
            ("0.0.0.0", [0, 0, 0, 0]),
            ("255.255.255.255", [255, 255, 255, 255]),
        ] {
            assert_eq!(
                Host::parse(text).map(|h| h.kind),
                Ok(HostKind::Ipv4(Ipv4Addr::from(addr))),
                "{text}"
            );
        }
        for bad in [
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            ".1.2.3",
            "1..2.3",
            "0001.2.3.4",
            "1.2.3.0004",
            "999.1.1.1",
        ] {
            assert_eq!(Host::parse(bad), Err(BadUri), "{bad}");
        }
    }

    #[test]
    fn other_schemes_are_carried() {
        let u = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert!(matches!(u, Uri::Other(OtherUri { scheme: "tel", .. })));
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:a@b c").is_err());
        assert!(Uri::parse("sip:a@b%4").is_err());
    }

    #[test]
    fn equivalence_per_rfc3261_19_1_4() {
        // The examples of §19.1.4.
        let equal = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;newparam=5",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ];
        for (a, b) in equal {
            assert!(sip(a).equivalent(&sip(b)), "{a} == {b}");
            assert!(sip(b).equivalent(&sip(a)), "{b} == {a}");
        }
        let repeated = sip("sip:a@b;x=1;x=2");
        assert!(repeated.equivalent(&repeated));
        assert!(repeated.equivalent(&sip("sip:a@b;x=1")));
        assert!(!repeated.equivalent(&sip("sip:a@b;x=2")));
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;security=off",
            ),
        ];
        for (a, b) in different {
            assert!(!sip(a).equivalent(&sip(b)), "{a} != {b}");
            assert!(!sip(b).equivalent(&sip(a)), "{b} != {a}");
        }
    }
}
