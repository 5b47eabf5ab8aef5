//! Typed views of the header values a proxy and registrar read (RFC 3261 §20, §25.1).
//!
//! Each view borrows the message buffer. The `Message` accessors at the bottom parse on demand and
//! turn any grammar violation into `ErrorKind::BadHeader(name)`, so the caller can answer 400 with a
//! reason phrase naming the header.

use crate::error::{ErrorKind, ParseError};
use crate::params::{Params, strip_quotes};
use crate::scan::{
    GRAPHIC, ascii_str, checked_str, classes_of, comma_split, is_lws_byte, is_token, is_token_byte,
    parse_decimal_u32, parse_decimal_u64, quoted_string_end, trim_lws,
};
use crate::uri::{Host, Uri, parse_hostport};
use crate::{HeaderName, Message, Method};

/// Header lines [`Message::validate`] leaves free under [`crate::MAX_HEADERS`] for a forwarding
/// proxy to add.
const FORWARDING_HEADROOM: usize = 4;

/// A value that does not follow its header's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadValue;

impl From<crate::uri::BadUri> for BadValue {
    fn from(_: crate::uri::BadUri) -> BadValue {
        BadValue
    }
}

impl From<crate::params::BadParams> for BadValue {
    fn from(_: crate::params::BadParams) -> BadValue {
        BadValue
    }
}

impl From<crate::scan::Unbalanced> for BadValue {
    fn from(_: crate::scan::Unbalanced) -> BadValue {
        BadValue
    }
}

/// `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route, Record-Route, Path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: a quoted string (quotes kept) or space-separated tokens.
    pub display_name: Option<&'a [u8]>,
    pub uri: Uri<'a>,
    /// Header parameters after the address (`tag`, `q`, `expires`, …).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one `(name-addr / addr-spec) *(SEMI param)` element (§20.10, §20.20, §20.39).
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, BadValue> {
        let v = trim_lws(value);
        let (display_name, rest) = if v.first() == Some(&b'"') {
            let end = quoted_string_end(v).ok_or(BadValue)?;
            (Some(&v[..end]), trim_lws(&v[end..]))
        } else {
            let stop = v
                .iter()
                .position(|&b| !(is_token_byte(b) || is_lws_byte(b)))
                .unwrap_or(v.len());
            if v.get(stop) == Some(&b'<') {
                let name = trim_lws(&v[..stop]);
                ((!name.is_empty()).then_some(name), &v[stop..])
            } else {
                return Self::parse_addr_spec(v);
            }
        };
        let inner = rest.strip_prefix(b"<").ok_or(BadValue)?;
        let close = memchr::memchr(b'>', inner).ok_or(BadValue)?;
        // A URI is ASCII; `Uri::parse` refuses any other byte.
        let uri_text = checked_str(&inner[..close]).ok_or(BadValue)?;
        let params = Params::parse(&inner[close + 1..])?;
        Ok(NameAddr {
            display_name,
            uri: Uri::parse(uri_text)?,
            params,
        })
    }

    /// An `addr-spec` without brackets: its URI ends at the first `;` or whitespace, and may not
    /// hold `?` headers (§20: such URIs must be bracketed; RFC 4475 §3.1.2.13).
    fn parse_addr_spec(v: &'a [u8]) -> Result<NameAddr<'a>, BadValue> {
        let end = v
            .iter()
            .position(|&b| b == b';' || is_lws_byte(b))
            .unwrap_or(v.len());
        let uri_text = checked_str(&v[..end]).ok_or(BadValue)?;
        if uri_text.contains('?') {
            return Err(BadValue);
        }
        Ok(NameAddr {
            display_name: None,
            uri: Uri::parse(uri_text)?,
            params: Params::parse(&v[end..])?,
        })
    }

    /// The `tag` parameter (From/To, §19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get_str("tag")
    }
}

/// A Contact value (§20.10): `*` or an address with its registration parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *`, used only to remove all bindings (§10.2.2).
    Star,
    Address(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    pub fn parse(value: &'a [u8]) -> Result<Contact<'a>, BadValue> {
        if trim_lws(value) == b"*" {
            return Ok(Contact::Star);
        }
        let addr = NameAddr::parse(value)?;
        // Check the parameters whose grammar a registrar relies on (the first of each name is the
        // one the accessors read), in one pass.
        let (mut q_seen, mut reg_id_seen) = (false, false);
        for (name, value) in addr.params.pairs() {
            if !q_seen && name.eq_ignore_ascii_case(b"q") {
                q_seen = true;
                value.map(strip_quotes).and_then(q_millis).ok_or(BadValue)?;
            } else if !reg_id_seen && name.eq_ignore_ascii_case(b"reg-id") {
                reg_id_seen = true;
                value.map(strip_quotes).and_then(reg_id).ok_or(BadValue)?;
            }
        }
        Ok(Contact::Address(addr))
    }

    pub fn address(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Star => None,
            Contact::Address(a) => Some(a),
        }
    }

    /// `q` in thousandths (`qvalue = "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]`, §25.1).
    pub fn q_millis(&self) -> Option<u16> {
        q_millis(strip_quotes(self.address()?.params.get("q")??))
    }

    /// The `expires` parameter in seconds; values beyond 2^32-1 saturate (§10.2.1.1 lets the
    /// registrar shorten any interval).
    pub fn expires_s(&self) -> Option<u32> {
        delta_seconds(strip_quotes(self.address()?.params.get("expires")??))
    }

    /// The `+sip.instance` parameter without its quotes, e.g. `<urn:uuid:…>` (RFC 5626 §4.1).
    pub fn instance(&self) -> Option<&'a str> {
        self.address()?.params.get_str("+sip.instance")
    }

    /// The `reg-id` parameter (RFC 5626 §4.2).
    pub fn reg_id(&self) -> Option<u32> {
        reg_id(strip_quotes(self.address()?.params.get("reg-id")??))
    }
}

/// `qvalue` in thousandths (the parameter's value, quotes removed).
fn q_millis(q: &[u8]) -> Option<u16> {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &q[q.len()..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let millis = frac
        .iter()
        .copied()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        b"0" => Some(millis),
        b"1" if millis == 0 => Some(1000),
        _ => None,
    }
}

/// `reg-id` (the parameter's value, quotes removed).
fn reg_id(v: &[u8]) -> Option<u32> {
    parse_decimal_u32(v)
}

/// `delta-seconds = 1*DIGIT`, saturating at 2^32-1.
fn delta_seconds(v: &[u8]) -> Option<u32> {
    if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
        Some(parse_decimal_u64(v).map_or(u32::MAX, |x| x.min(u64::from(u32::MAX)) as u32))
    } else {
        None
    }
}

/// One Via value (§20.42): `sent-protocol LWS sent-by *(SEMI via-params)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    pub protocol: &'a str,
    pub version: &'a str,
    /// The transport token as written (`UDP`, `TLS`, `WSS`, or an unknown one, RFC 4475
    /// §3.1.1.10).
    pub transport: &'a str,
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, BadValue> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, i: 0 };
        let protocol = cursor.token_span()?;
        cursor.separator(b'/')?;
        let version = cursor.token_span()?;
        cursor.separator(b'/')?;
        let transport = cursor.token_span()?;
        if !cursor.skip_lws() {
            return Err(BadValue);
        }
        let sent_by = cursor.sent_by_span()?;
        // Tokens, separators and sent-by are ASCII (`parse_hostport` refuses any other byte in
        // sent-by): one conversion for all of them.
        let text = checked_str(&v[..sent_by.end]).ok_or(BadValue)?;
        let (host, port) = parse_hostport(&text[sent_by])?;
        let params = Params::parse(&v[cursor.i..])?;
        Ok(Via {
            protocol: &text[protocol],
            version: &text[version],
            transport: &text[transport],
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter, the transaction key of RFC 3261 §17.2.3.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get_str("branch")
    }

    /// The `received` parameter (§18.2.1).
    pub fn received(&self) -> Option<&'a str> {
        self.params.get_str("received")
    }

    /// `rport` (RFC 3581): `None` if absent, `Some(None)` if requested, `Some(Some(port))` if
    /// filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        match self.params.get("rport")? {
            None => Some(None),
            Some(v) => Some(parse_decimal_u32(v).and_then(|p| u16::try_from(p).ok())),
        }
    }
}

/// A tiny cursor for the few grammars that are sequences rather than lists.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Skips LWS; reports whether there was any.
    fn skip_lws(&mut self) -> bool {
        let start = self.i;
        while self.i < self.s.len() && is_lws_byte(self.s[self.i]) {
            self.i += 1;
        }
        self.i > start
    }

    fn token(&mut self) -> Result<&'a str, BadValue> {
        let span = self.token_span()?;
        checked_str(&self.s[span]).ok_or(BadValue)
    }

    /// Where the token at the cursor lies (not empty).
    fn token_span(&mut self) -> Result<std::ops::Range<usize>, BadValue> {
        let start = self.i;
        while self.i < self.s.len() && is_token_byte(self.s[self.i]) {
            self.i += 1;
        }
        if self.i == start {
            return Err(BadValue);
        }
        Ok(start..self.i)
    }

    /// `SWS sep SWS`.
    fn separator(&mut self, sep: u8) -> Result<(), BadValue> {
        self.skip_lws();
        if self.s.get(self.i) != Some(&sep) {
            return Err(BadValue);
        }
        self.i += 1;
        self.skip_lws();
        Ok(())
    }

    /// `sent-by = host [ COLON port ]`, returned as compact `host:port` text. LWS around the colon
    /// is legal but never seen; it is refused rather than carried.
    fn sent_by_span(&mut self) -> Result<std::ops::Range<usize>, BadValue> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'[') {
            let close = memchr::memchr(b']', &self.s[self.i..]).ok_or(BadValue)?;
            self.i += close + 1;
        }
        let s = self.s;
        let mut end = self.i;
        while end < s.len() && !matches!(s[end], b';' | b' ' | b'\t' | b'\r' | b'\n') {
            end += 1;
        }
        self.i = end;
        let span = start..end;
        self.skip_lws();
        Ok(span)
    }
}

/// `CSeq = 1*DIGIT LWS Method` (§20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    pub fn parse(value: &'a [u8]) -> Result<CSeq<'a>, BadValue> {
        let v = trim_lws(value);
        let digits = v.iter().position(|b| !b.is_ascii_digit()).ok_or(BadValue)?;
        let seq = parse_decimal_u32(&v[..digits]).ok_or(BadValue)?;
        let method = trim_lws(&v[digits..]);
        if method.len() == v.len() - digits || !is_token(method) {
            // No LWS between number and method, or a method that is not a token.
            return Err(BadValue);
        }
        let method = match Method::known(method) {
            Some(known) => known,
            None => Method::from_token(checked_str(method).ok_or(BadValue)?),
        };
        Ok(CSeq { seq, method })
    }
}

/// `media-type = m-type SLASH m-subtype *(SEMI m-parameter)` (§20.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub kind: &'a str,
    pub subtype: &'a str,
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    pub fn parse(value: &'a [u8]) -> Result<MediaType<'a>, BadValue> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, i: 0 };
        let kind = cursor.token()?;
        cursor.separator(b'/')?;
        let subtype = cursor.token()?;
        let params = Params::parse(&v[cursor.i..])?;
        Ok(MediaType {
            kind,
            subtype,
            params,
        })
    }

    /// True for `type/subtype`, compared case-insensitively.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

/// Authorization, Proxy-Authorization, WWW-Authenticate, Proxy-Authenticate (§20.7, §20.27,
/// §20.28, §20.44): `auth-scheme LWS auth-param *(COMMA auth-param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    pub scheme: &'a str,
    params: &'a [u8],
}

impl<'a> AuthHeader<'a> {
    pub fn parse(value: &'a [u8]) -> Result<AuthHeader<'a>, BadValue> {
        let v = trim_lws(value);
        let mut cursor = Cursor { s: v, i: 0 };
        let scheme = cursor.token()?;
        if !cursor.skip_lws() && cursor.i != v.len() {
            return Err(BadValue);
        }
        let header = AuthHeader {
            scheme,
            params: &v[cursor.i..],
        };
        for item in comma_split(header.params) {
            auth_param(item?.text)?;
        }
        Ok(header)
    }

    /// The parameters in order, values without quotes.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        comma_split(self.params).filter_map(|item| auth_param(item.ok()?.text).ok())
    }

    /// One parameter's value (name case-insensitive), quotes removed.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// `auth-param = auth-param-name EQUAL ( token / quoted-string )`.
fn auth_param(item: &[u8]) -> Result<(&str, &[u8]), BadValue> {
    let item = trim_lws(item);
    let eq = memchr::memchr(b'=', item).ok_or(BadValue)?;
    let name = ascii_str(trim_lws(&item[..eq]))
        .filter(|n| is_token(n.as_bytes()))
        .ok_or(BadValue)?;
    let value = trim_lws(&item[eq + 1..]);
    let valid = match value.first() {
        Some(b'"') => quoted_string_end(value) == Some(value.len()),
        _ => is_token(value),
    };
    if !valid {
        return Err(BadValue);
    }
    Ok((name, strip_quotes(value)))
}

/// `Call-ID = word [ "@" word ]` (§25.1): printable ASCII without spaces.
fn call_id(value: &[u8]) -> Result<&str, BadValue> {
    if value.is_empty() || classes_of(value) & GRAPHIC == 0 {
        return Err(BadValue);
    }
    checked_str(value).ok_or(BadValue)
}

impl<'a> Message<'a> {
    fn bad(&self, name: HeaderName) -> ParseError {
        self.error(ErrorKind::BadHeader(name))
    }

    /// The only value of a single-valued header; `Ok(None)` when absent. Byte-identical
    /// repetitions are tolerated (real user agents send them); differing ones are an error.
    fn single_value(&self, name: HeaderName) -> Result<Option<&'a [u8]>, ParseError> {
        let mut values = self.values(name);
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.any(|other| other != first) {
            return Err(self.error(ErrorKind::DuplicateHeader(name)));
        }
        Ok(Some(first))
    }

    /// [`Message::single_value`], parsed.
    fn single<T>(
        &self,
        name: HeaderName,
        parse: impl Fn(&'a [u8]) -> Result<T, BadValue>,
    ) -> Result<Option<T>, ParseError> {
        match self.single_value(name)? {
            None => Ok(None),
            Some(value) => parse(value).map(Some).map_err(|_| self.bad(name)),
        }
    }

    /// [`Message::single_value`] of a header that must be present, parsed (without passing the
    /// parsed value through an `Option`).
    fn required<T>(
        &self,
        name: HeaderName,
        parse: impl Fn(&'a [u8]) -> Result<T, BadValue>,
    ) -> Result<T, ParseError> {
        let value = self
            .single_value(name)?
            .ok_or(self.error(ErrorKind::MissingHeader(name)))?;
        parse(value).map_err(|_| self.bad(name))
    }

    /// Every element of a list header across all its lines, in order, with its position in the
    /// message buffer.
    pub(crate) fn list_elements(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<(&'a [u8], usize), ParseError>> + '_ {
        let bytes = self.as_bytes();
        self.header_lines()
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| {
                let start = h.value_span.start as usize;
                comma_split(&bytes[h.value_span.range()]).map(move |item| match item {
                    Ok(e) if !trim_lws(e.text).is_empty() => Ok((e.text, start + e.offset)),
                    _ => Err(self.bad(name)),
                })
            })
    }

    fn list<T>(
        &self,
        name: HeaderName,
        parse: impl Fn(&'a [u8]) -> Result<T, BadValue> + 'a,
    ) -> impl Iterator<Item = Result<T, ParseError>> + '_ {
        self.list_elements(name)
            .map(move |item| parse(item?.0).map_err(|_| self.bad(name)))
    }

    /// Call-ID (required).
    pub fn call_id(&self) -> Result<&'a str, ParseError> {
        self.required(HeaderName::CallId, call_id)
    }

    /// CSeq (required).
    pub fn cseq(&self) -> Result<CSeq<'a>, ParseError> {
        self.required(HeaderName::CSeq, CSeq::parse)
    }

    /// From (required).
    pub fn from(&self) -> Result<NameAddr<'a>, ParseError> {
        self.required(HeaderName::From, NameAddr::parse)
    }

    /// To (required).
    pub fn to(&self) -> Result<NameAddr<'a>, ParseError> {
        self.required(HeaderName::To, NameAddr::parse)
    }

    /// Max-Forwards (§20.22: 0–255); absent in RFC 2543 requests.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.single(HeaderName::MaxForwards, |v| {
            parse_decimal_u32(v)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(BadValue)
        })
    }

    /// Expires (§20.19) in seconds, saturating at 2^32-1.
    pub fn expires_s(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::Expires, |v| delta_seconds(v).ok_or(BadValue))
    }

    /// Min-Expires (§20.23) in seconds.
    pub fn min_expires_s(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::MinExpires, |v| delta_seconds(v).ok_or(BadValue))
    }

    /// Content-Length as declared (the parser has already framed the body with it).
    pub fn content_length(&self) -> Option<u32> {
        self.value(HeaderName::ContentLength)
            .and_then(parse_decimal_u32)
    }

    /// Content-Type (§20.15).
    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, ParseError> {
        self.single(HeaderName::ContentType, MediaType::parse)
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'a>, ParseError>> + '_ {
        self.list(HeaderName::Via, Via::parse)
    }

    /// The topmost Via (required).
    pub fn top_via(&self) -> Result<Via<'a>, ParseError> {
        self.vias()
            .next()
            .unwrap_or(Err(self.error(ErrorKind::MissingHeader(HeaderName::Via))))
    }

    /// Every Contact value in order.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'a>, ParseError>> + '_ {
        self.list(HeaderName::Contact, Contact::parse)
    }

    /// Route, Record-Route or Path values, in order.
    pub fn name_addrs(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'a>, ParseError>> + '_ {
        self.list(name, NameAddr::parse)
    }

    /// Option tags of Require, Proxy-Require, Supported or Unsupported; method names of Allow.
    pub fn tokens(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<&'a str, ParseError>> + '_ {
        self.list(name, |v| {
            let t = trim_lws(v);
            ascii_str(t)
                .filter(|t| is_token(t.as_bytes()))
                .ok_or(BadValue)
        })
    }

    /// Credentials or challenges, one per header line.
    pub fn auth_headers(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<AuthHeader<'a>, ParseError>> + '_ {
        self.values(name)
            .map(move |v| AuthHeader::parse(v).map_err(|_| self.bad(name)))
    }

    /// Parses every header sipshard has a view for and checks the rules every request and
    /// response must meet (§8.1.1 required headers, single-valued headers, CSeq method), so a
    /// caller can refuse the message before acting on any part of it.
    pub fn validate(&self) -> Result<(), ParseError> {
        // Room for the lines a proxy adds (Via, Record-Route, Max-Forwards): a request that
        // validates can be forwarded as one the next hop still parses.
        if self.header_lines().len() > crate::MAX_HEADERS - FORWARDING_HEADROOM {
            return Err(self.error(ErrorKind::TooManyHeaders));
        }
        for line in self.header_lines() {
            let value = &self.as_bytes()[line.value_span.range()];
            if line.name.is_single() && self.values(line.name).any(|v| v != value) {
                return Err(self.error(ErrorKind::DuplicateHeader(line.name)));
            }
        }
        let cseq = self.cseq()?;
        self.call_id()?;
        self.from()?;
        self.to()?;
        self.top_via()?;
        for via in self.vias() {
            via?;
        }
        if let Some(method) = self.method() {
            if cseq.method != method {
                return Err(self.error(ErrorKind::CSeqMethodMismatch));
            }
        }
        self.max_forwards()?;
        self.expires_s()?;
        self.min_expires_s()?;
        self.content_type()?;
        for contact in self.contacts() {
            contact?;
        }
        for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
            for value in self.name_addrs(name) {
                value?;
            }
        }
        for name in [
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Supported,
            HeaderName::Unsupported,
            HeaderName::Allow,
        ] {
            for tag in self.tokens(name) {
                tag?;
            }
        }
        for name in [
            HeaderName::Authorization,
            HeaderName::ProxyAuthorization,
            HeaderName::WwwAuthenticate,
            HeaderName::ProxyAuthenticate,
        ] {
            for auth in self.auth_headers(name) {
                auth?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            br#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display_name, Some(&br#""J Rosenberg \\\"""#[..]));
        assert_eq!(a.uri.as_str(), "sip:jdrosen@example.com");
        assert_eq!(a.tag(), Some("98asjd8"));

        let b = NameAddr::parse(b"Bob Smith<sip:bob@biloxi.com;transport=tcp>;tag=1").unwrap();
        assert_eq!(b.display_name, Some(&b"Bob Smith"[..]));
        assert_eq!(b.uri.as_sip().unwrap().transport(), Some("tcp"));

        // Without brackets, ;params belong to the header (RFC 4475 §3.3.12).
        let c = NameAddr::parse(b"sip:user@host.example.com;unknownparam").unwrap();
        assert_eq!(c.uri.as_str(), "sip:user@host.example.com");
        assert!(c.params.contains("unknownparam"));

        for bad in [
            &b"Bell, Alexander <sip:a.g.bell@bell-tel.com>"[..],
            b"\"Mr. J. User <sip:j.user@example.com>",
            b"\"Watson\" < sip:t.watson@example.org >",
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"<sip:a@b>;;",
        ] {
            assert!(
                NameAddr::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn contact_parameters() {
        let c = Contact::parse(
            br#"<sip:alice@192.0.2.4:5060;transport=tcp>;q=0.7;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1"#,
        )
        .unwrap();
        assert_eq!(c.q_millis(), Some(700));
        assert_eq!(c.expires_s(), Some(3600));
        assert_eq!(
            c.instance(),
            Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
        );
        assert_eq!(c.reg_id(), Some(1));
        assert_eq!(Contact::parse(b" * "), Ok(Contact::Star));
        assert!(Contact::parse(b"<sip:a@b>;q=1.5").is_err());
        let big = Contact::parse(b"<sip:a@b>;expires=99999999999999").unwrap();
        assert_eq!(big.expires_s(), Some(u32::MAX));
    }

    #[test]
    fn via_with_folds_and_odd_spacing() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!((v.protocol, v.version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!(v.host.text, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));

        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];rport")
            .unwrap();
        assert_eq!(v.host.text, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert_eq!(v.rport(), Some(None));
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
    }

    #[test]
    fn cseq_and_auth() {
        let c = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert!(CSeq::parse(b"36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse(b"1INVITE").is_err());

        let a = AuthHeader::parse(
            br#"Digest username="bob", realm="biloxi.com", nonce="dcd98b, 7102dd2", uri="sip:biloxi.com", response="245f23415f11432b3434341c022", algorithm=MD5"#,
        )
        .unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.param("NONCE"), Some(&b"dcd98b, 7102dd2"[..]));
        assert_eq!(a.param("algorithm"), Some(&b"MD5"[..]));
        assert!(AuthHeader::parse(b"Digest username=\"bob").is_err());
    }
}
