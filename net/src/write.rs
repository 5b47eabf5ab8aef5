//! Writing messages: new requests and responses, responses built from a request (RFC 3261
//! §8.2.6), and the edits a proxy makes when it forwards a request (§16.6) — each edit splices
//! the original bytes, so nothing the proxy did not touch is re-serialised.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use crate::message::{Span, header_line, line_end};
use crate::{ErrorAction, ParseError};
use crate::{HeaderName, HostKind, Message, StartLine};

/// Writes a message into a caller-owned buffer (reused across messages on the hot path).
///
/// Names and values are written as given; they come from sipshard's own code and configuration,
/// never straight from a peer. CR and LF in them are replaced by spaces so that no caller can
/// inject a header line by mistake.
pub struct MessageWriter<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> MessageWriter<'o> {
    /// Starts `METHOD uri SIP/2.0`.
    pub fn request(out: &'o mut Vec<u8>, method: &str, uri: &str) -> MessageWriter<'o> {
        out.clear();
        let mut w = MessageWriter { out };
        w.put(method);
        w.out.push(b' ');
        w.put(uri);
        w.out.extend_from_slice(b" SIP/2.0\r\n");
        w
    }

    /// Starts `SIP/2.0 status reason`.
    pub fn response(out: &'o mut Vec<u8>, status: u16, reason: &str) -> MessageWriter<'o> {
        out.clear();
        let mut w = MessageWriter { out };
        // Writing into a Vec cannot fail.
        let _ = write!(Adapter(w.out), "SIP/2.0 {status} ");
        w.put(reason);
        w.out.extend_from_slice(b"\r\n");
        w
    }

    /// Appends `name: value`.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.put(name);
        self.out.extend_from_slice(b": ");
        self.put(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header line copied verbatim from a parsed message.
    pub fn raw_line(&mut self, line: &[u8]) -> &mut Self {
        self.out.extend_from_slice(line);
        self
    }

    /// Appends Content-Length, the empty line and the body; Content-Type too when the body is
    /// not empty.
    pub fn finish(self, content_type: Option<&str>, body: &[u8]) {
        if let (Some(ct), false) = (content_type, body.is_empty()) {
            self.out.extend_from_slice(b"Content-Type: ");
            self.out.extend_from_slice(ct.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        let _ = write!(Adapter(self.out), "Content-Length: {}\r\n\r\n", body.len());
        self.out.extend_from_slice(body);
    }

    fn put(&mut self, text: &str) {
        self.out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    }
}

/// A byte buffer that formatted text can be written into.
trait ByteSink {
    fn put_bytes(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl<A: smallvec::Array<Item = u8>> ByteSink for SmallVec<A> {
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// `fmt::Write` for a byte buffer.
struct Adapter<'a, B: ByteSink>(&'a mut B);

impl<B: ByteSink> std::fmt::Write for Adapter<'_, B> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_bytes(s.as_bytes());
        Ok(())
    }
}

/// The text of one stamp edit (`;received=` and an address, or `rport=` and a port): always
/// fits inline.
type StampText = SmallVec<[u8; 64]>;

/// Starts a response to `request` per RFC 3261 §8.2.6.2: Via (all values, in order), From,
/// Call-ID and CSeq are copied byte for byte; To is copied and given `to_tag` when it has no tag
/// and the status is not 100; a 100 Trying echoes Timestamp (§8.2.6.1). The caller adds its own
/// headers and calls [`MessageWriter::finish`].
pub fn response_to<'o>(
    out: &'o mut Vec<u8>,
    request: &Message<'_>,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> MessageWriter<'o> {
    stamped_response_to(out, request, &ViaStamp::default(), status, reason, to_tag)
}

/// [`response_to`] for a request whose topmost Via gets `stamp` (§18.2.1, RFC 3581): the
/// response carries the Via as the server saw it, with `received` and `rport` filled in.
pub fn stamped_response_to<'o>(
    out: &'o mut Vec<u8>,
    request: &Message<'_>,
    stamp: &ViaStamp,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> MessageWriter<'o> {
    let mut w = MessageWriter::response(out, status, reason);
    let bytes = request.as_bytes();
    let via_edits = stamp.edits(request);
    let mut line_start = request.headers_start();
    let mut first_via = true;
    for line in request.header_lines() {
        let whole = &bytes[line_start..line.line_end as usize];
        line_start = line.line_end as usize;
        let copy = match line.name {
            HeaderName::Via if first_via && !via_edits.is_empty() => {
                first_via = false;
                let start = line.name_span.start as usize;
                splice(w.out, bytes, start..line.line_end as usize, &via_edits);
                if !whole.ends_with(b"\n") {
                    w.out.extend_from_slice(b"\r\n");
                }
                false
            }
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::Timestamp => status == 100,
            HeaderName::To => {
                let tagged = request.to().ok().and_then(|to| to.tag()).is_some();
                match to_tag {
                    Some(tag) if !tagged && status != 100 => {
                        w.raw_line(
                            &bytes[line.name_span.start as usize..line.value_span.end as usize],
                        );
                        w.out.extend_from_slice(b";tag=");
                        w.put(tag);
                        w.out.extend_from_slice(b"\r\n");
                        false
                    }
                    _ => true,
                }
            }
            _ => false,
        };
        if copy {
            w.raw_line(whole);
            if !whole.ends_with(b"\n") {
                // The datagram ended the header section without a final line break.
                w.out.extend_from_slice(b"\r\n");
            }
        }
    }
    w
}

/// What a server adds to the topmost Via of a request it receives: `received` when the sent-by
/// host is not the packet's source address (§18.2.1) or when `rport` asks for it, and the source
/// port as the value of an empty `rport` (RFC 3581 §4). Responses then go back to where the
/// request really came from, through NATs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViaStamp {
    pub received: Option<IpAddr>,
    pub rport: Option<u16>,
}

impl ViaStamp {
    /// The stamp for a request received from `source`.
    pub fn for_request(request: &Message<'_>, source: SocketAddr) -> ViaStamp {
        let Ok(via) = request.top_via() else {
            return ViaStamp::default();
        };
        let sent_by_is_source = match via.host.kind {
            HostKind::Ipv4(a) => IpAddr::V4(a) == source.ip(),
            HostKind::Ipv6(Some(a)) => IpAddr::V6(a) == source.ip(),
            _ => false,
        };
        let rport_requested = via.rport() == Some(None);
        let received_present = via.received().is_some();
        ViaStamp {
            received: ((!sent_by_is_source || rport_requested) && !received_present)
                .then_some(source.ip()),
            rport: rport_requested.then_some(source.port()),
        }
    }

    /// The address a response to this request goes to (§18.2.2, RFC 3581 §4): the source address
    /// when `rport` was requested, else the `received` (or sent-by) host with the sent-by port.
    pub fn response_destination(request: &Message<'_>, source: SocketAddr) -> SocketAddr {
        match request.top_via() {
            Ok(via) if via.rport() == Some(None) => source,
            Ok(via) => SocketAddr::new(source.ip(), via.port.unwrap_or(5060)),
            Err(_) => source,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.received.is_none() && self.rport.is_none()
    }

    /// The splices that apply this stamp to the request's bytes.
    fn edits(&self, request: &Message<'_>) -> SmallVec<[(Span, StampText); 2]> {
        let mut edits = SmallVec::new();
        if self.is_empty() {
            return edits;
        }
        let bytes = request.as_bytes();
        let (Some(Ok((text, at))), Ok(via)) = (
            request.list_elements(HeaderName::Via).next(),
            request.top_via(),
        ) else {
            return edits;
        };
        if let Some(port) = self.rport {
            if let Some(param) = via
                .params
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case("rport"))
            {
                let start = param.name.as_ptr() as usize - bytes.as_ptr() as usize;
                let span = Span {
                    start: start as u32,
                    end: (start + param.name.len()) as u32,
                };
                let mut text = StampText::new();
                let _ = write!(Adapter(&mut text), "rport={port}");
                edits.push((span, text));
            }
        }
        if let Some(ip) = self.received {
            let end = (at + text.trim_ascii_end().len()) as u32;
            let mut text = StampText::new();
            let _ = write!(Adapter(&mut text), ";received={ip}");
            edits.push((Span { start: end, end }, text));
        }
        edits.sort_by_key(|(span, _)| span.start);
        edits
    }
}

/// Copies `bytes[range]` into `out`, replacing the sorted, non-overlapping `edits` inside it.
fn splice(
    out: &mut Vec<u8>,
    bytes: &[u8],
    range: std::ops::Range<usize>,
    edits: &[(Span, StampText)],
) {
    let mut copied = range.start;
    for (span, text) in edits {
        let (start, end) = (span.start as usize, span.end as usize);
        if start < copied || end > range.end {
            continue;
        }
        out.extend_from_slice(&bytes[copied..start]);
        out.extend_from_slice(text);
        copied = end;
    }
    out.extend_from_slice(&bytes[copied..range.end]);
}

/// Writes the error response for a request that failed to parse — the 505 for `SIP/7.0`, the
/// 400 for a malformed Request-URI — when one may and can be sent: the error's
/// [`ParseError::action`] must be `Respond`, and Via, From, To, Call-ID and CSeq lines must be
/// found to copy (§8.2.6.2; without them no client could match the response). Returns false,
/// writing nothing useful, when the datagram must be dropped instead.
///
/// For errors found after parsing (from [`Message::validate`]), use [`response_to`] on the parsed
/// message instead.
pub fn error_response(out: &mut Vec<u8>, datagram: &[u8], error: &ParseError) -> bool {
    let ErrorAction::Respond { status, reason } = error.action() else {
        return false;
    };
    let leading = datagram
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let datagram = &datagram[leading..];
    let Some((_, mut pos)) = line_end(datagram, 0) else {
        return false;
    };
    let mut w = MessageWriter::response(out, status, reason);
    let mut seen = [false; 5];
    const NEEDED: [HeaderName; 5] = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    // Copy what can be read; stop at the first line that cannot.
    while let Ok(line) = header_line(datagram, pos) {
        if let Some(i) = NEEDED.iter().position(|n| *n == line.name) {
            seen[i] = true;
            let whole = &datagram[pos..line.line_end as usize];
            w.raw_line(whole);
            if !whole.ends_with(b"\n") {
                w.out.extend_from_slice(b"\r\n");
            }
        }
        pos = line.line_end as usize;
        if datagram[pos..].starts_with(b"\r\n") || datagram[pos..].starts_with(b"\n") {
            break;
        }
    }
    if seen.contains(&false) {
        return false;
    }
    w.finish(None, b"");
    true
}

/// Edits to a received request before it is forwarded (§16.6), applied by splicing: the output is
/// the original bytes with only the edited ranges replaced.
pub struct ForwardEdits<'m, 'a> {
    msg: &'m Message<'a>,
    edits: SmallVec<[Edit; 8]>,
    /// Text of all insertions and replacements, referenced by range; inline up to 256 bytes (a
    /// Via, a Record-Route and a Request-URI fit), so forwarding does not allocate.
    text: SmallVec<[u8; 256]>,
}

struct Edit {
    /// The bytes of the original replaced by this edit (empty for a pure insertion).
    replaced: Span,
    text: std::ops::Range<usize>,
}

impl<'m, 'a> ForwardEdits<'m, 'a> {
    pub fn new(msg: &'m Message<'a>) -> Self {
        ForwardEdits {
            msg,
            edits: SmallVec::new(),
            text: SmallVec::new(),
        }
    }

    fn push(&mut self, replaced: Span, text: std::fmt::Arguments<'_>) {
        let start = self.text.len();
        let _ = Adapter(&mut self.text).write_fmt(text);
        self.edits.push(Edit {
            replaced,
            text: start..self.text.len(),
        });
    }

    fn push_bytes(&mut self, replaced: Span, text: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(text);
        self.edits.push(Edit {
            replaced,
            text: start..self.text.len(),
        });
    }

    fn top_of_headers(&self) -> Span {
        let at = self.msg.headers_start() as u32;
        Span { start: at, end: at }
    }

    /// Replaces the Request-URI (§16.6 step 2, §16.5 targets). No effect on a response.
    pub fn set_request_uri(&mut self, uri: &str) -> &mut Self {
        if let StartLine::Request { uri_span, .. } = self.msg.start_line() {
            let span = *uri_span;
            self.push(span, format_args!("{uri}"));
        }
        self
    }

    /// Applies a [`ViaStamp`] to the topmost Via (the received request's own, before the proxy
    /// adds its Via above it).
    pub fn stamp_top_via(&mut self, stamp: &ViaStamp) -> &mut Self {
        for (span, text) in stamp.edits(self.msg) {
            self.push_bytes(span, &text);
        }
        self
    }

    /// Adds a Via as the new topmost value (§16.6 step 8).
    pub fn push_via(&mut self, value: &str) -> &mut Self {
        let at = self.top_of_headers();
        self.push(at, format_args!("Via: {value}\r\n"));
        self
    }

    /// Adds a Record-Route above any existing ones (§16.6 step 4).
    pub fn prepend_record_route(&mut self, value: &str) -> &mut Self {
        let at = match self
            .msg
            .header_lines()
            .iter()
            .find(|h| h.name == HeaderName::RecordRoute)
        {
            Some(first) => {
                let at = self.line_start(first);
                Span { start: at, end: at }
            }
            None => self.top_of_headers(),
        };
        self.push(at, format_args!("Record-Route: {value}\r\n"));
        self
    }

    /// Adds a Route above any existing ones: a route set the proxy pushes itself, such as a
    /// binding's Path (RFC 3327 §5.3, RFC 3261 §16.6 step 6 "preloaded" routes).
    pub fn prepend_route(&mut self, value: &str) -> &mut Self {
        let at = match self
            .msg
            .header_lines()
            .iter()
            .find(|h| h.name == HeaderName::Route)
        {
            Some(first) => {
                let at = self.line_start(first);
                Span { start: at, end: at }
            }
            None => self.top_of_headers(),
        };
        self.push(at, format_args!("Route: {value}\r\n"));
        self
    }

    /// Decrements Max-Forwards, or adds `Max-Forwards: 70` when absent (§16.6 step 3). The caller
    /// has already answered 483 to a request whose Max-Forwards is 0 (§16.3 step 3).
    pub fn decrement_max_forwards(&mut self) -> &mut Self {
        let msg = self.msg;
        match msg.max_forwards() {
            Ok(Some(n)) => {
                // Every line: validate() tolerates byte-identical repetitions, and they must
                // stay identical.
                for line in msg
                    .header_lines()
                    .iter()
                    .filter(|h| h.name == HeaderName::MaxForwards)
                {
                    self.push(line.value_span, format_args!("{}", n.saturating_sub(1)));
                }
            }
            _ => {
                let at = self.top_of_headers();
                self.push(at, format_args!("Max-Forwards: 70\r\n"));
            }
        }
        self
    }

    /// Removes the topmost Via value (a proxy does this to a response it forwards, §16.7 step 3).
    pub fn remove_top_via(&mut self) -> &mut Self {
        self.remove_first_values(HeaderName::Via, 1)
    }

    /// Removes the topmost Route value (the proxy's own, §16.4).
    pub fn remove_top_route(&mut self) -> &mut Self {
        self.remove_top_routes(1)
    }

    /// Removes the `count` topmost Route values: a proxy that Record-Routed twice (RFC 5658, a
    /// request changing transport) finds both of its entries on top.
    pub fn remove_top_routes(&mut self, count: usize) -> &mut Self {
        self.remove_first_values(HeaderName::Route, count)
    }

    /// Removes the last Route value: the one a strict router's Request-URI came from (§16.4).
    pub fn remove_last_route(&mut self) -> &mut Self {
        let Some(Ok((text, at))) = self.msg.list_elements(HeaderName::Route).last() else {
            return self;
        };
        let line = self
            .msg
            .header_lines()
            .iter()
            .rfind(|h| h.name == HeaderName::Route)
            .copied();
        let Some(line) = line else { return self };
        let value_start = line.value_span.start as usize;
        let span = if at == value_start {
            // The only value on its line: remove the line.
            Span {
                start: line.name_span.start,
                end: line.line_end,
            }
        } else {
            // Remove ", value" back to the comma before it.
            let bytes = self.msg.as_bytes();
            let comma = bytes[value_start..at]
                .iter()
                .rposition(|&b| b == b',')
                .map_or(at, |i| value_start + i);
            Span {
                start: comma as u32,
                end: (at + text.trim_ascii_end().len()) as u32,
            }
        };
        self.push(span, format_args!(""));
        self
    }

    fn line_start(&self, line: &crate::HeaderLine) -> u32 {
        line.name_span.start
    }

    /// Removes the first `count` values of a list header, across its lines: a line whose values
    /// all go is removed whole; on the line where removal stops, the removed values and their
    /// commas go.
    fn remove_first_values(&mut self, name: HeaderName, count: usize) -> &mut Self {
        let msg = self.msg;
        let mut elements = msg.list_elements(name).map_while(Result::ok).peekable();
        let mut left = count;
        for line in msg.header_lines().iter().filter(|h| h.name == name) {
            if left == 0 {
                break;
            }
            let on_line = |at: usize| at < line.line_end as usize;
            let Some(&(_, first_at)) = elements.peek() else {
                break;
            };
            let before = left;
            while left > 0 && elements.peek().is_some_and(|&(_, at)| on_line(at)) {
                elements.next();
                left -= 1;
            }
            if left == before {
                continue;
            }
            let span = match elements.peek() {
                // Values remain on this line: cut up to the first of them.
                Some(&(text, at)) if on_line(at) => {
                    let leading_ws = text.len() - text.trim_ascii_start().len();
                    Span {
                        start: first_at as u32,
                        end: (at + leading_ws) as u32,
                    }
                }
                _ => Span {
                    start: self.line_start(line),
                    end: line.line_end,
                },
            };
            self.push(span, format_args!(""));
        }
        self
    }

    /// Writes the edited message into `out` (cleared first).
    pub fn write(&mut self, out: &mut Vec<u8>) {
        out.clear();
        // Insertions at the same place keep the order they were made in.
        self.edits
            .sort_by_key(|e| (e.replaced.start, e.replaced.end));
        let bytes = self.msg.as_bytes();
        let mut copied = 0usize;
        for edit in &self.edits {
            let start = edit.replaced.start as usize;
            if start < copied {
                // Overlapping edits (e.g. removing a value twice) are ignored after the first.
                continue;
            }
            out.extend_from_slice(&bytes[copied..start]);
            out.extend_from_slice(&self.text[edit.text.clone()]);
            copied = edit.replaced.end as usize;
        }
        out.extend_from_slice(&bytes[copied..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKold\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Timestamp: 54\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn response_copies_the_transaction_headers() {
        let req = Message::parse_datagram(INVITE).unwrap();
        let mut out = Vec::new();
        response_to(&mut out, &req, 180, "Ringing", Some("a6c85cf")).finish(None, b"");
        let resp = Message::parse_datagram(&out).unwrap();
        resp.validate().unwrap();
        assert_eq!(resp.status(), Some(180));
        assert_eq!(resp.to().unwrap().tag(), Some("a6c85cf"));
        assert_eq!(resp.call_id().unwrap(), "a84b4c76e66710@pc33.atlanta.com");
        assert_eq!(resp.vias().count(), 2);
        assert_eq!(resp.value(HeaderName::Timestamp), None);
        assert_eq!(resp.value(HeaderName::Contact), None);

        response_to(&mut out, &req, 100, "Trying", Some("ignored")).finish(None, b"");
        let trying = Message::parse_datagram(&out).unwrap();
        assert_eq!(trying.to().unwrap().tag(), None);
        assert_eq!(trying.value(HeaderName::Timestamp), Some(&b"54"[..]));
    }

    #[test]
    fn forwarding_edits_splice_the_original() {
        let req = Message::parse_datagram(INVITE).unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req)
            .set_request_uri("sip:bob@192.0.2.4:5060")
            .push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew")
            .prepend_record_route("<sip:proxy.example.com;lr>")
            .decrement_max_forwards()
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        fwd.validate().unwrap();
        assert_eq!(
            fwd.request_uri().unwrap().as_str(),
            "sip:bob@192.0.2.4:5060"
        );
        assert_eq!(fwd.top_via().unwrap().branch(), Some("z9hG4bKnew"));
        assert_eq!(fwd.vias().count(), 3);
        assert_eq!(fwd.max_forwards().unwrap(), Some(69));
        let rr: Vec<_> = fwd
            .name_addrs(HeaderName::RecordRoute)
            .map(|r| r.unwrap().uri.as_str())
            .collect();
        assert_eq!(rr, ["sip:proxy.example.com;lr", "sip:p1.example.com;lr"]);
        assert_eq!(fwd.body(), b"v=0\n");
        // Everything after the inserted Record-Route is byte-identical.
        let tail = |b: &[u8]| b[b.windows(9).position(|w| w == b"Contact: ").unwrap()..].to_vec();
        assert_eq!(tail(fwd.as_bytes()), tail(INVITE));
    }

    #[test]
    fn pushed_routes_go_above_the_remaining_ones_in_order() {
        let with_routes = String::from_utf8_lossy(INVITE).replace(
            "Contact: ",
            "Route: <sip:me.example.com;lr>, <sip:next.example.com;lr>\r\nContact: ",
        );
        let req = Message::parse_datagram(with_routes.as_bytes()).unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req)
            .remove_top_route()
            .prepend_route("<sip:p0.example.com;lr>")
            .prepend_route("<sip:p1.example.com;lr>")
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        fwd.validate().unwrap();
        let routes: Vec<_> = fwd
            .name_addrs(HeaderName::Route)
            .map(|r| r.unwrap().uri.as_str())
            .collect();
        assert_eq!(
            routes,
            [
                "sip:p0.example.com;lr",
                "sip:p1.example.com;lr",
                "sip:next.example.com;lr"
            ]
        );
        // Without a Route, the pushed ones are the route set.
        let plain = Message::parse_datagram(INVITE).unwrap();
        ForwardEdits::new(&plain)
            .prepend_route("<sip:p0.example.com;lr>")
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        assert_eq!(fwd.name_addrs(HeaderName::Route).count(), 1);
    }

    #[test]
    fn removing_the_top_via_value_or_line() {
        let req = Message::parse_datagram(INVITE).unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req).remove_top_via().write(&mut out);
        let once = Message::parse_datagram(&out).unwrap();
        assert_eq!(once.top_via().unwrap().branch(), Some("z9hG4bKold"));
        let mut twice = Vec::new();
        ForwardEdits::new(&once).remove_top_via().write(&mut twice);
        let none = Message::parse_datagram(&twice).unwrap();
        assert!(none.value(HeaderName::Via).is_none());
        assert_eq!(none.header_lines().len(), req.header_lines().len() - 1);
    }

    #[test]
    fn unparseable_requests_are_answered_when_their_transaction_headers_are_readable() {
        let bad_version =
            String::from_utf8_lossy(INVITE).replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        let error = Message::parse_datagram(bad_version.as_bytes()).unwrap_err();
        let mut out = Vec::new();
        assert!(error_response(&mut out, bad_version.as_bytes(), &error));
        let resp = Message::parse_datagram(&out).unwrap();
        resp.validate().unwrap();
        assert_eq!(resp.status(), Some(505));
        assert_eq!(resp.vias().count(), 2);
        assert_eq!(resp.cseq().unwrap().seq, 314159);

        // No Call-ID: nothing a client could match, so nothing is sent.
        let no_call_id = bad_version.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", "");
        let error = Message::parse_datagram(no_call_id.as_bytes()).unwrap_err();
        assert!(!error_response(&mut out, no_call_id.as_bytes(), &error));

        // A malformed response is never answered.
        let error = Message::parse_datagram(b"SIP/2.0 1000 Huge\r\n\r\n").unwrap_err();
        assert!(!error_response(
            &mut out,
            b"SIP/2.0 1000 Huge\r\n\r\n",
            &error
        ));
    }

    #[test]
    fn via_stamp_fills_received_and_rport() {
        let req = Message::parse_datagram(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK1\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
        )
        .unwrap();
        let source: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let stamp = ViaStamp::for_request(&req, source);
        assert_eq!(stamp.received, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(stamp.rport, Some(40000));
        assert_eq!(ViaStamp::response_destination(&req, source), source);

        let mut out = Vec::new();
        stamped_response_to(&mut out, &req, &stamp, 200, "OK", Some("t")).finish(None, b"");
        let resp = Message::parse_datagram(&out).unwrap();
        let via = resp.top_via().unwrap();
        assert_eq!(via.received(), Some("192.0.2.7"));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.branch(), Some("z9hG4bK1"));

        ForwardEdits::new(&req)
            .stamp_top_via(&stamp)
            .push_via("SIP/2.0/UDP proxy;branch=z9hG4bK2")
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        let second = fwd.vias().nth(1).unwrap().unwrap();
        assert_eq!(second.received(), Some("192.0.2.7"));
        assert_eq!(second.rport(), Some(Some(40000)));

        // A sent-by that is the source address, without rport: nothing to add, and responses go
        // to the sent-by port.
        let plain = String::from_utf8_lossy(req.as_bytes())
            .replace("10.0.0.1:5070;rport;", "192.0.2.7:5070;");
        let req = Message::parse_datagram(plain.as_bytes()).unwrap();
        assert!(ViaStamp::for_request(&req, source).is_empty());
        assert_eq!(
            ViaStamp::response_destination(&req, source),
            "192.0.2.7:5070".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn removing_the_last_route_value() {
        let req = Message::parse_datagram(
            b"BYE sip:p@192.0.2.1 SIP/2.0\r\nRoute: <sip:a;lr>, <sip:b>\r\nl: 0\r\n\r\n",
        )
        .unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req).remove_last_route().write(&mut out);
        let once = Message::parse_datagram(&out).unwrap();
        let routes: Vec<_> = once
            .name_addrs(HeaderName::Route)
            .map(|r| r.unwrap().uri.as_str())
            .collect();
        assert_eq!(routes, ["sip:a;lr"]);
        let mut twice = Vec::new();
        ForwardEdits::new(&once)
            .remove_last_route()
            .write(&mut twice);
        assert!(
            Message::parse_datagram(&twice)
                .unwrap()
                .value(HeaderName::Route)
                .is_none()
        );
    }

    #[test]
    fn repeated_identical_max_forwards_lines_are_all_decremented() {
        let req = Message::parse_datagram(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n",
        )
        .unwrap();
        req.validate().unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req)
            .decrement_max_forwards()
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        fwd.validate().unwrap();
        assert_eq!(fwd.max_forwards().unwrap(), Some(69));
    }

    #[test]
    fn removing_several_top_routes_across_lines() {
        let req = Message::parse_datagram(
            b"BYE sip:p@192.0.2.1 SIP/2.0\r\nRoute: <sip:a;lr>\r\nRoute: <sip:b;lr>, <sip:c;lr>\r\nl: 0\r\n\r\n",
        )
        .unwrap();
        let routes = |count| {
            let mut out = Vec::new();
            ForwardEdits::new(&req)
                .remove_top_routes(count)
                .write(&mut out);
            let msg = Message::parse_datagram(&out).unwrap();
            msg.name_addrs(HeaderName::Route)
                .map(|r| r.unwrap().uri.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(routes(1), ["sip:b;lr", "sip:c;lr"]);
        assert_eq!(routes(2), ["sip:c;lr"]);
        assert!(routes(3).is_empty());
        assert!(routes(9).is_empty());
    }

    #[test]
    fn max_forwards_is_added_when_missing() {
        let req = Message::parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        ForwardEdits::new(&req)
            .decrement_max_forwards()
            .write(&mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        assert_eq!(fwd.max_forwards().unwrap(), Some(70));
    }
}
