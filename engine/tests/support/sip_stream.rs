//! A user agent's end of a SIP stream connection (TCP, TLS, or a WebSocket the test unwraps):
//! send a message, read the next one by its Content-Length (RFC 3261 §18.3), build an answer
//! from a request. Standard library only; each test brings its own stream.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// How long [`SipStream::read_message`] waits for one message.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// SIP messages over one stream. The stream's own read timeout must be set (a short one keeps
/// [`SipStream::try_read_message`] accurate).
pub struct SipStream<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> SipStream<S> {
    pub fn new(stream: S) -> SipStream<S> {
        SipStream {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, message: &str) {
        self.stream.write_all(message.as_bytes()).expect("send");
        self.stream.flush().expect("flush");
    }

    /// The next SIP message; panics if none comes within [`READ_TIMEOUT`].
    pub fn read_message(&mut self) -> String {
        self.try_read_message(READ_TIMEOUT)
            .unwrap_or_else(|| panic!("no complete message in time; got {:?}", self.buf))
    }

    /// The next SIP message, or `None` if none came within `wait`. Panics if the peer closes.
    pub fn try_read_message(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(message) = self.take_message() {
                return Some(message);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the node closed the connection; got {:?}", self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read failed: {e}; got {:?}", self.buf),
            }
        }
    }

    /// Reads messages until a response other than 100 Trying.
    pub fn read_final_response(&mut self) -> String {
        loop {
            let message = self.read_message();
            if !message.starts_with("SIP/2.0 100 ") {
                return message;
            }
        }
    }

    fn take_message(&mut self) -> Option<String> {
        let end = find(&self.buf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let body = header(&head, "Content-Length")
            .or_else(|| header(&head, "l"))
            .map_or(0, |v| v.parse::<usize>().expect("Content-Length"));
        let total = end + 4 + body;
        if self.buf.len() < total {
            return None;
        }
        let message = String::from_utf8_lossy(&self.buf[..total]).into_owned();
        self.buf.drain(..total);
        Some(message)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The values of header `name` in `message`, in order.
pub fn headers<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// The first value of header `name` in `message`.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    headers(message, name).into_iter().next()
}

/// A response to `request`: its Via, From, To (with `to_tag` added), Call-ID and CSeq (§8.2.6).
pub fn answer(request: &str, status: &str, to_tag: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for value in headers(request, name) {
            if name == "To" && !value.contains(";tag=") {
                response.push_str(&format!("To: {value};tag={to_tag}\r\n"));
            } else {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
        }
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    response
}
