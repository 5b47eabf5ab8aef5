//! The message parser: start line, header lines and body, all as positions in the receive buffer.
//!
//! Parsing does the least a transport needs: it finds the start line, every header line (name
//! classified, value located, folds left in place) and the body, and checks Content-Length. Typed
//! views of header values ([`crate::values`]) are parsed only when asked for, so a header nobody reads
//! costs one line scan. [`Message::validate`] parses every header sipshard understands, for
//! callers that must not act on a malformed request.

use smallvec::SmallVec;

use crate::error::{ErrorKind, ParseError};
use crate::scan::{checked_str, is_lws_byte, is_token, parse_decimal_u32};
use crate::{HeaderName, Method, Uri};

/// Header lines kept per message; more is refused with 513 (real user agents send 10–30).
pub const MAX_HEADERS: usize = 256;

/// A byte range of the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Messages are limited to far less than 4 GiB before any Span is made.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One header line: where its name and (trimmed) value lie, and where the line ends (after its
/// line terminator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: HeaderName,
    pub name_span: Span,
    pub value_span: Span,
    pub line_end: u32,
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request {
        method: Method<'a>,
        uri: Uri<'a>,
        uri_span: Span,
    },
    Response {
        status: u16,
        /// The reason phrase as sent; it may be UTF-8 (RFC 4475 §3.1.1.12) or empty.
        reason: &'a [u8],
    },
}

/// How the end of the message is found (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A UDP datagram: Content-Length is optional (the body runs to the datagram's end), bytes past
    /// Content-Length are discarded, and the end of the datagram may end the header section.
    Datagram,
    /// A message cut from a stream by [`crate::StreamFramer`]: Content-Length is required and the
    /// buffer holds exactly one message.
    Stream,
}

/// A parsed SIP message borrowing its buffer.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The message's own bytes (trailing datagram bytes excluded).
    bytes: &'a [u8],
    start_line: StartLine<'a>,
    headers: SmallVec<[HeaderLine; 24]>,
    /// Where the first header line starts (just after the start line's terminator).
    headers_start: u32,
    /// Where the body starts (after the empty line), or the end when the datagram ended the headers.
    body_start: u32,
}

/// A header as the caller sees it: classified name, name as written, trimmed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName,
    pub name_bytes: &'a [u8],
    /// The value without surrounding whitespace; folds inside it are kept.
    pub value: &'a [u8],
}

/// Largest datagram or framed message the parser takes: a UDP datagram cannot exceed it, and the
/// stream framer's limit is configured well below it.
const MAX_PARSE_BYTES: usize = 1 << 24;

impl<'a> Message<'a> {
    /// Parses one UDP datagram (RFC 3261 §18.3 rules for Content-Length).
    pub fn parse_datagram(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        parse(buf, Framing::Datagram)
    }

    /// Parses one message that [`crate::StreamFramer`] cut from a TCP/TLS/WebSocket stream.
    pub fn parse_stream(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        parse(buf, Framing::Stream)
    }

    /// The message's bytes, exactly as received (line breaks before the start line and trailing
    /// datagram bytes excluded).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start_line
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start_line, StartLine::Request { .. })
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start_line {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, `None` for a response.
    pub fn request_uri(&self) -> Option<&Uri<'a>> {
        match &self.start_line {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start_line {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// Header lines in order, as positions.
    pub fn header_lines(&self) -> &[HeaderLine] {
        &self.headers
    }

    pub(crate) fn headers_start(&self) -> usize {
        self.headers_start as usize
    }

    pub fn header_at(&self, line: &HeaderLine) -> Header<'a> {
        Header {
            name: line.name,
            name_bytes: &self.bytes[line.name_span.range()],
            value: &self.bytes[line.value_span.range()],
        }
    }

    /// Every header in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        self.headers.iter().map(|h| self.header_at(h))
    }

    /// The values of every header line with this name, in order. For list headers each item is a
    /// whole line, which may hold several comma-separated values.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        let bytes = self.bytes;
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(move |h| &bytes[h.value_span.range()])
    }

    /// The first value of a header, if present.
    pub fn value(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// Looks up a header without a typed name (case-insensitive), e.g. `X-Custom`.
    pub fn other_value(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|h| h.name_bytes.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value)
    }

    /// The body: exactly Content-Length bytes, or the rest of the datagram when it had none.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.body_start as usize..]
    }

    pub(crate) fn error(&self, kind: ErrorKind) -> ParseError {
        ParseError {
            kind,
            in_response: !self.is_request(),
        }
    }
}

/// Finds the next line terminator at or after `from`: returns (end of line content, start of the
/// next line). Accepts CRLF and, for robustness, a bare LF.
pub(crate) fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let lf = from + memchr::memchr(b'\n', &buf[from..])?;
    let content_end = if lf > from && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some((content_end, lf + 1))
}

fn parse(buf: &[u8], framing: Framing) -> Result<Message<'_>, ParseError> {
    if buf.len() > MAX_PARSE_BYTES {
        return Err(ParseError::request(ErrorKind::TooLarge));
    }
    // Line breaks before the start line are ignored (§7.5 for streams; harmless for datagrams,
    // where some user agents send them too).
    let leading = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = &buf[leading..];
    let Some((start_end, headers_start)) = line_end(buf, 0) else {
        return Err(ParseError::request(ErrorKind::NotSip));
    };
    let start_line = parse_start_line(buf, start_end)?;
    let in_response = matches!(start_line, StartLine::Response { .. });
    let fail = |kind| ParseError { kind, in_response };

    // Header lines go straight into the message that is returned, so they are not moved again.
    let mut msg = Message {
        bytes: buf,
        start_line,
        headers: SmallVec::new(),
        headers_start: headers_start as u32,
        body_start: 0,
    };
    let headers = &mut msg.headers;
    let mut content_length: Option<u32> = None;
    let mut pos = headers_start;
    let body_start = loop {
        match buf.get(pos) {
            Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => break pos + 2,
            Some(b'\n') => break pos + 1,
            None if framing == Framing::Datagram => break pos,
            _ => {}
        }
        let line = header_line(buf, pos).map_err(fail)?;
        if line.name == HeaderName::ContentLength {
            let value = parse_decimal_u32(&buf[line.value_span.range()])
                .ok_or(fail(ErrorKind::BadContentLength))?;
            if content_length.is_some_and(|previous| previous != value) {
                return Err(fail(ErrorKind::BadContentLength));
            }
            content_length = Some(value);
        }
        if headers.len() == MAX_HEADERS {
            return Err(fail(ErrorKind::TooManyHeaders));
        }
        pos = line.line_end as usize;
        headers.push(line);
    };

    let available = buf.len() - body_start;
    let body_len = match (content_length, framing) {
        (Some(len), _) if len as usize > available => {
            return Err(fail(ErrorKind::TruncatedBody));
        }
        (Some(len), _) => len as usize,
        (None, Framing::Datagram) => available,
        (None, Framing::Stream) => return Err(fail(ErrorKind::MissingContentLength)),
    };
    msg.bytes = &buf[..body_start + body_len];
    msg.body_start = body_start as u32;
    Ok(msg)
}

/// The end of the line starting at `pos` and of its continuation lines: (end of the content,
/// start of the next line), or `None` when a line terminator is missing.
fn folded_line(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let mut search = pos;
    loop {
        let (content_end, next) = line_end(buf, search)?;
        match buf.get(next) {
            Some(b' ' | b'\t') => search = next,
            _ => return Some((content_end, next)),
        }
    }
}

/// Where the next line after a (possibly folded) line starting at `pos` begins.
pub(crate) fn folded_line_end(buf: &[u8], pos: usize) -> Option<usize> {
    folded_line(buf, pos).map(|(_, next)| next)
}

/// Scans one header line starting at `pos`, following folds (a line break followed by SP or HT
/// continues the value, §7.3.1).
///
/// One pass over the name (token bytes, optional SP/HT, the colon), one search for the line end.
/// A line that does not start that way takes [`header_line_slow`], which reports its error.
#[inline(always)]
pub(crate) fn header_line(buf: &[u8], pos: usize) -> Result<HeaderLine, ErrorKind> {
    let name_end = name_end(buf, pos);
    let name = &buf[pos..name_end];
    // A name sipshard knows is a token (it equals a canonical name); any other must be checked.
    let known = HeaderName::from_bytes(name);
    if name.is_empty() || (known == HeaderName::Other && !is_token(name)) {
        return header_line_slow(buf, pos);
    }
    let mut i = name_end;
    while i < buf.len() && matches!(buf[i], b' ' | b'\t') {
        i += 1;
    }
    if buf.get(i) != Some(&b':') {
        return header_line_slow(buf, pos);
    }
    let colon = i;
    let (content_end, next) = folded_line(buf, colon + 1).ok_or(ErrorKind::UnterminatedHeaders)?;
    let mut value_start = colon + 1;
    let mut value_end = content_end;
    while value_start < value_end && is_lws_byte(buf[value_start]) {
        value_start += 1;
    }
    while value_end > value_start && is_lws_byte(buf[value_end - 1]) {
        value_end -= 1;
    }
    Ok(HeaderLine {
        name: known,
        name_span: Span::new(pos, name_end),
        value_span: Span::new(value_start, value_end),
        line_end: next as u32,
    })
}

/// Where a header name that starts at `pos` ends: at the first `:`, SP, HT or LF (what follows a
/// name, or what shows the line is not a header). Eight bytes at a time: a byte of a word equals
/// `b` where the word XOR `b` repeated has a zero byte, and the lowest such byte is the first.
#[inline(always)]
fn name_end(buf: &[u8], pos: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    let mut i = pos;
    while let Some(chunk) = buf.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stops = zero_bytes(w ^ (ONES * u64::from(b':')))
            | zero_bytes(w ^ (ONES * u64::from(b' ')))
            | zero_bytes(w ^ (ONES * u64::from(b'\t')))
            | zero_bytes(w ^ (ONES * u64::from(b'\n')));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < buf.len() && !matches!(buf[i], b':' | b' ' | b'\t' | b'\n') {
        i += 1;
    }
    i
}

/// [`header_line`] the long way: the whole (folded) line first, then its first colon, then the
/// name. Reached only by lines that are not `token *(SP/HT) ":"`, so it mostly reports which
/// error a malformed line has.
#[cold]
fn header_line_slow(buf: &[u8], pos: usize) -> Result<HeaderLine, ErrorKind> {
    match buf.get(pos) {
        None => return Err(ErrorKind::UnterminatedHeaders),
        // A continuation line with no header to continue.
        Some(b' ' | b'\t') => return Err(ErrorKind::BadHeaderLine),
        Some(_) => {}
    }
    let (content_end, next) = folded_line(buf, pos).ok_or(ErrorKind::UnterminatedHeaders)?;
    let line = &buf[pos..content_end];
    let colon = memchr::memchr(b':', line).ok_or(ErrorKind::BadHeaderLine)?;
    let mut name_end = colon;
    while name_end > 0 && matches!(line[name_end - 1], b' ' | b'\t') {
        name_end -= 1;
    }
    let name = &line[..name_end];
    if !is_token(name) {
        return Err(ErrorKind::BadHeaderLine);
    }
    let mut value_start = colon + 1;
    let mut value_end = line.len();
    while value_start < value_end && is_lws_byte(line[value_start]) {
        value_start += 1;
    }
    while value_end > value_start && is_lws_byte(line[value_end - 1]) {
        value_end -= 1;
    }
    Ok(HeaderLine {
        name: HeaderName::from_bytes(name),
        name_span: Span::new(pos, pos + name_end),
        value_span: Span::new(pos + value_start, pos + value_end),
        line_end: next as u32,
    })
}

/// Request-Line (§7.1) or Status-Line (§7.2). Separators are exactly one SP: RFC 4475 §3.1.2.9 and
/// §3.1.2.10 allow rejecting extra or trailing SP, and a proxy must never forward them.
fn parse_start_line(buf: &[u8], end: usize) -> Result<StartLine<'_>, ParseError> {
    let line = &buf[..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return parse_status_line(line).map_err(|kind| ParseError {
            kind,
            in_response: true,
        });
    }
    let fail = |kind| Err(ParseError::request(kind));
    let Some(sp1) = memchr::memchr(b' ', line) else {
        return fail(ErrorKind::NotSip);
    };
    if !is_token(&line[..sp1]) {
        return fail(ErrorKind::BadRequestLine);
    }
    let rest = &line[sp1 + 1..];
    let Some(sp2) = memchr::memchr(b' ', rest) else {
        return fail(ErrorKind::BadRequestLine);
    };
    let (uri_bytes, version) = (&rest[..sp2], &rest[sp2 + 1..]);
    match sip_version(version) {
        Some(true) => {}
        Some(false) => return fail(ErrorKind::VersionNotSupported),
        None => return fail(ErrorKind::BadRequestLine),
    }
    if uri_bytes.is_empty() {
        return fail(ErrorKind::BadRequestLine);
    }
    // The method is a token and a URI is ASCII (`Uri::parse` refuses any other byte): one
    // conversion for both. The method converts, so a failure lies in the URI.
    let uri_start = sp1 + 1;
    let uri_end = uri_start + uri_bytes.len();
    let Some(text) = checked_str(&line[..uri_end]) else {
        return fail(ErrorKind::BadRequestUri);
    };
    let method = &text[..sp1];
    let uri = Uri::parse(&text[uri_start..])
        .map_err(|_| ParseError::request(ErrorKind::BadRequestUri))?;
    // Headers are not allowed in a Request-URI (§19.1.1 table 1; RFC 4475 §3.1.2.11).
    if uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        return fail(ErrorKind::BadRequestUri);
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri,
        uri_span: Span::new(uri_start, uri_end),
    })
}

fn parse_status_line(line: &[u8]) -> Result<StartLine<'_>, ErrorKind> {
    let sp1 = memchr::memchr(b' ', line).ok_or(ErrorKind::BadStatusLine)?;
    if sip_version(&line[..sp1]) != Some(true) {
        return Err(ErrorKind::BadStatusLine);
    }
    let rest = &line[sp1 + 1..];
    let (code, reason) = match rest.get(3) {
        Some(b' ') => (&rest[..3], &rest[4..]),
        // Tolerate a missing SP before an empty reason phrase.
        None => (rest, &rest[rest.len()..]),
        Some(_) => return Err(ErrorKind::BadStatusLine),
    };
    let status = (code.len() == 3)
        .then(|| parse_decimal_u32(code))
        .flatten()
        .filter(|c| (100..=699).contains(c))
        .ok_or(ErrorKind::BadStatusLine)?;
    Ok(StartLine::Response {
        status: status as u16,
        reason,
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`: `Some(true)` for 2.0, `Some(false)` for another
/// well-formed version, `None` for something else.
fn sip_version(v: &[u8]) -> Option<bool> {
    if v == b"SIP/2.0" {
        return Some(true);
    }
    if v.len() < 4 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let (major, minor) = v[4..].split_at(v[4..].iter().position(|&b| b == b'.')?);
    let minor = &minor[1..];
    let major = crate::scan::parse_decimal_u64(major)?;
    let minor = crate::scan::parse_decimal_u64(minor)?;
    Some(major == 2 && minor == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776\r\n\
From: <sip:alice@example.com>;tag=456\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: abc@192.0.2.1\r\n\
CSeq: 1 REGISTER\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn a_plain_request() {
        let m = Message::parse_datagram(REGISTER).unwrap();
        assert_eq!(m.method(), Some(Method::Register));
        assert_eq!(m.request_uri().unwrap().as_str(), "sip:example.com");
        assert_eq!(m.header_lines().len(), 6);
        assert_eq!(m.value(HeaderName::CallId), Some(&b"abc@192.0.2.1"[..]));
        assert_eq!(m.body(), b"");
        assert_eq!(m.as_bytes(), REGISTER);
    }

    #[test]
    fn folded_values_keep_their_folds() {
        let msg = b"OPTIONS sip:x SIP/2.0\r\nSubject: one\r\n two\r\n\tthree \r\nl: 0\r\n\r\n";
        let m = Message::parse_datagram(msg).unwrap();
        assert_eq!(
            m.value(HeaderName::Subject),
            Some(&b"one\r\n two\r\n\tthree"[..])
        );
    }

    #[test]
    fn datagram_content_length_rules() {
        let base = "OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabcdef";
        let m = Message::parse_datagram(base.as_bytes()).unwrap();
        assert_eq!(m.body(), b"abc", "bytes past Content-Length are discarded");
        let short = b"OPTIONS sip:x SIP/2.0\r\nl: 9\r\n\r\nabc";
        let e = Message::parse_datagram(short).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TruncatedBody);
        let none = b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\nabc";
        assert_eq!(Message::parse_datagram(none).unwrap().body(), b"abc");
        assert_eq!(
            Message::parse_stream(none).unwrap_err().kind,
            ErrorKind::MissingContentLength
        );
    }

    #[test]
    fn start_line_errors() {
        let cases: [(&[u8], ErrorKind); 6] = [
            (b"INVITE  sip:x SIP/2.0\r\n\r\n", ErrorKind::BadRequestLine),
            (b"INVITE sip:x SIP/2.0 \r\n\r\n", ErrorKind::BadRequestLine),
            (
                b"INVITE sip:x SIP/7.0\r\n\r\n",
                ErrorKind::VersionNotSupported,
            ),
            (b"INVITE <sip:x> SIP/2.0\r\n\r\n", ErrorKind::BadRequestUri),
            (b"garbage\r\n\r\n", ErrorKind::NotSip),
            (b"SIP/2.0 1000 Big\r\n\r\n", ErrorKind::BadStatusLine),
        ];
        for (bytes, kind) in cases {
            let e = Message::parse_datagram(bytes).unwrap_err();
            assert_eq!(e.kind, kind, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn responses_and_their_reason_phrases() {
        let m = Message::parse_datagram(b"SIP/2.0 200 \r\nl: 0\r\n\r\n").unwrap();
        assert!(matches!(
            m.start_line(),
            StartLine::Response {
                status: 200,
                reason: b""
            }
        ));
        let m = Message::parse_datagram("SIP/2.0 180 Звонит\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(m.status(), Some(180));
    }

    #[test]
    fn header_line_fast_and_slow_paths_agree() {
        let lines: [&[u8]; 20] = [
            b"Via@: x\r\n",
            b"Via\r: x\r\n",
            b"Contact\t : x\r\n",
            b"Content-Length-Extra: 1\r\n",
            b"X-Long-Header-Name-Beyond-Eight: v\r\n",
            b"X-Long-Header-Name\xc3\xa9: v\r\n",
            b"Via: x\r\n",
            b"Via : x \r\n",
            b"Via\t:\r\n y\r\n",
            b"v:x\n",
            b"X-Empty:\r\n",
            b"Na me: x\r\n",
            b"Na\t me: x\r\n",
            b": x\r\n",
            b" Via: x\r\n",
            b"Via x\r\n",
            b"Via: x",
            b"Via",
            b"",
            b"Via\r\n : x\r\n",
        ];
        for line in lines {
            let mut buf = line.to_vec();
            buf.extend_from_slice(b"\r\n");
            for b in [line, &buf[..]] {
                assert_eq!(
                    header_line(b, 0),
                    header_line_slow(b, 0),
                    "{:?}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    #[test]
    fn header_count_is_bounded() {
        let mut msg = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            msg.extend_from_slice(b"X: y\r\n");
        }
        msg.extend_from_slice(b"\r\n");
        let e = Message::parse_datagram(&msg).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooManyHeaders);
    }
}
