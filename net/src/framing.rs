//! Cutting messages out of a byte stream (TCP, TLS, WebSocket payloads), RFC 3261 §18.3.
//!
//! Like mini-redis's frame check: [`StreamFramer::next_frame`] looks at the bytes received so far
//! and says how long the next frame is, or that more bytes are needed (`Incomplete` is a normal
//! answer, not an error). Content-Length is mandatory on streams. The framer remembers how far it
//! has searched for the end of the header section, so a peer trickling a byte at a time costs
//! linear, not quadratic, work; and it refuses a message larger than its limit as soon as that is
//! certain, so a peer cannot make the connection buffer grow without bound.

use crate::HeaderName;
use crate::error::{ErrorKind, ParseError};
use crate::message::{folded_line_end, header_line, line_end};
use crate::scan::parse_decimal_u32;

/// Default limit on one message: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What the front of the stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A double-CRLF keep-alive ping (RFC 5626 §4.4.1): consume `len` bytes and answer with a
    /// single CRLF pong.
    Ping { len: usize },
    /// A single CRLF: a pong, or a stray line break before a start line (§7.5 says to ignore
    /// those). Consume `len` bytes.
    Pong { len: usize },
    /// One complete message of `len` bytes: pass `&buf[..len]` to [`crate::Message::parse_stream`].
    Message { len: usize },
    /// Not enough bytes yet.
    Incomplete,
}

/// Per-connection framing state.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    max_message_bytes: usize,
    /// Bytes of the current message already searched for the end of the header section.
    searched: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl StreamFramer {
    pub fn new(max_message_bytes: usize) -> StreamFramer {
        StreamFramer {
            max_message_bytes,
            searched: 0,
        }
    }

    /// Examines the unconsumed bytes of the stream. After `Ping`, `Pong` or `Message` the caller
    /// consumes `len` bytes and calls again with what remains. An error means the stream cannot be
    /// framed any more: answer it if possible (see [`ParseError::action`]) and close the connection.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Frame, ParseError> {
        match buf {
            [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::Incomplete),
            [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::Ping { len: 4 }),
            [b'\r', b'\n', ..] => return Ok(Frame::Pong { len: 2 }),
            _ => {}
        }
        let Some(body_start) = self.find_header_end(buf) else {
            if buf.len() > self.max_message_bytes {
                return Err(ParseError::request(ErrorKind::TooLarge));
            }
            return Ok(Frame::Incomplete);
        };
        let content_length = content_length(&buf[..body_start])?;
        let len = body_start + content_length;
        if len > self.max_message_bytes {
            return Err(ParseError::request(ErrorKind::TooLarge));
        }
        if buf.len() < len {
            return Ok(Frame::Incomplete);
        }
        self.searched = 0;
        Ok(Frame::Message { len })
    }

    /// Finds the empty line ending the header section; returns where the body starts.
    fn find_header_end(&mut self, buf: &[u8]) -> Option<usize> {
        // Resume a little before where the last search stopped: the terminator may straddle it.
        let from = self.searched.saturating_sub(3).min(buf.len());
        for lf in memchr::memchr_iter(b'\n', &buf[from..]).map(|i| from + i) {
            match &buf[lf + 1..] {
                [b'\n', ..] => return Some(lf + 2),
                [b'\r', b'\n', ..] => return Some(lf + 3),
                _ => {}
            }
        }
        self.searched = buf.len();
        None
    }
}

/// Content-Length from a complete header section, without parsing the rest. Absent, malformed,
/// negative or conflicting values cannot frame the stream (RFC 4475 §3.1.2.3, §3.3.9).
///
/// Header lines are found exactly as [`crate::Message::parse_stream`] finds them, folds included
/// (§7.3.1): a continuation line belongs to the header above it, so ` l: 2` inside a folded value
/// is not a Content-Length, and `Content-Length:` may have its value on a continuation line. A line
/// the parser would refuse is skipped here: the message is still framed, and then refused.
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let mut found: Option<u32> = None;
    let Some((_, mut pos)) = line_end(head, 0) else {
        return Err(ParseError::request(ErrorKind::MissingContentLength));
    };
    while pos < head.len() && !matches!(&head[pos..], [b'\n', ..] | [b'\r', b'\n', ..]) {
        let line = match header_line(head, pos) {
            Ok(line) => line,
            Err(_) => match folded_line_end(head, pos) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => break,
            },
        };
        pos = line.line_end as usize;
        if line.name != HeaderName::ContentLength {
            continue;
        }
        let value = parse_decimal_u32(&head[line.value_span.range()])
            .ok_or(ParseError::request(ErrorKind::BadContentLength))?;
        if found.is_some_and(|f| f != value) {
            return Err(ParseError::request(ErrorKind::BadContentLength));
        }
        found = Some(value);
    }
    found
        .map(|v| v as usize)
        .ok_or(ParseError::request(ErrorKind::MissingContentLength))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn keepalives_messages_and_incomplete_input() {
        let mut f = StreamFramer::default();
        assert_eq!(f.next_frame(b"\r\n\r\n"), Ok(Frame::Ping { len: 4 }));
        assert_eq!(f.next_frame(b"\r\n"), Ok(Frame::Pong { len: 2 }));
        assert_eq!(f.next_frame(b"\r\n\r"), Ok(Frame::Incomplete));
        assert_eq!(f.next_frame(b"\r\nMESSAGE"), Ok(Frame::Pong { len: 2 }));
        for cut in 1..MSG.len() {
            assert_eq!(
                f.next_frame(&MSG[..cut]),
                Ok(Frame::Incomplete),
                "cut at {cut}"
            );
        }
        let mut two = MSG.to_vec();
        two.extend_from_slice(MSG);
        assert_eq!(f.next_frame(&two), Ok(Frame::Message { len: MSG.len() }));
    }

    #[test]
    fn unframeable_streams_are_errors() {
        let mut f = StreamFramer::default();
        let missing = b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            f.next_frame(missing).unwrap_err().kind,
            ErrorKind::MissingContentLength
        );
        let negative = b"OPTIONS sip:a SIP/2.0\r\nl: -1\r\n\r\n";
        assert_eq!(
            f.next_frame(negative).unwrap_err().kind,
            ErrorKind::BadContentLength
        );
        let conflicting = b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            f.next_frame(conflicting).unwrap_err().kind,
            ErrorKind::BadContentLength
        );
    }

    #[test]
    fn continuation_lines_belong_to_the_header_above() {
        let mut f = StreamFramer::default();
        let lookalike = b"MESSAGE sip:a@b SIP/2.0\r\nX-A: one\r\n l: 2\r\nl: 5\r\n\r\nhello";
        let len = lookalike.len();
        assert_eq!(f.next_frame(lookalike), Ok(Frame::Message { len }));
        let folded_value = b"MESSAGE sip:a@b SIP/2.0\nContent-Length:\n\t 5\n\nhello";
        let len = folded_value.len();
        assert_eq!(f.next_frame(folded_value), Ok(Frame::Message { len }));
        // A malformed line does not stop framing; the parser refuses the message afterwards.
        let junk = b"MESSAGE sip:a@b SIP/2.0\r\nno colon\r\n\tl: 9\r\nl: 5\r\n\r\nhello";
        let len = junk.len();
        assert_eq!(f.next_frame(junk), Ok(Frame::Message { len }));
    }

    #[test]
    fn size_limit_applies_before_the_message_is_complete() {
        let mut f = StreamFramer::new(100);
        let huge_body = b"OPTIONS sip:a SIP/2.0\r\nl: 1000\r\n\r\n";
        assert_eq!(
            f.next_frame(huge_body).unwrap_err().kind,
            ErrorKind::TooLarge
        );
        let endless_headers = vec![b'a'; 101];
        assert_eq!(
            f.next_frame(&endless_headers).unwrap_err().kind,
            ErrorKind::TooLarge
        );
    }
}
