//! SIP over WebSocket (RFC 7118): the opening handshake and the framing of RFC 6455, sans-IO.
//!
//! Browsers and WebRTC gateways reach a SIP server over WebSocket. The node speaks the server
//! role, the load generator the client role, and both use this module: bytes in, events or bytes
//! out. It opens no socket, reads no clock and draws no random numbers (a client passes in its
//! key nonce and its masks). Like the rest of the crate it answers every input with a value or an
//! error and never panics.
//!
//! # Handshake (RFC 6455 §4, RFC 7118 §4.1)
//!
//! Server: [`parse_upgrade`] reads the HTTP/1.1 request head from the start of the connection's
//! buffer (`Ok(None)` until it is complete). On `Ok(upgrade)` write [`upgrade_response`] and feed
//! the bytes after `upgrade.head_len` to a [`FrameDecoder`] with [`Role::Server`]. On `Err(e)`
//! write `e.response()` (400, 405, 426 or 431, always with `Connection: close`) and close.
//!
//! Client: make a key with [`client_key`] from 16 random bytes, write [`client_request`], and
//! pass what the server answers to [`check_upgrade_response`] until it returns `Ok(Some(len))`;
//! the bytes after `len` are frames for a [`FrameDecoder`] with [`Role::Client`].
//!
//! Both sides insist on the `sip` subprotocol, as RFC 7118 §4.1 requires. No extension is
//! negotiated (so the RSV bits must be 0), and the request head is bounded by the caller's limit.
//!
//! # Frames (RFC 6455 §5)
//!
//! [`FrameDecoder::next_event`] takes the bytes as they were read, split anywhere, and consumes
//! them as it goes: it keeps at most one frame header (14 bytes), one control frame's payload
//! (125 bytes) and the data message being reassembled, which is refused with 1009 as soon as a
//! frame header announces that it would exceed the limit. So a peer cannot make it buffer more
//! than the limit, and the caller needs no stream buffer of its own. It yields whole text or
//! binary messages (fragments reassembled, control frames allowed between them), pings, pongs and
//! the close frame. RFC 7118 §5 carries one SIP message per WebSocket message, text or binary.
//!
//! A [`FrameError`] carries the close code to send (§7.4.1): 1002 for a protocol violation, 1007
//! for invalid UTF-8 in a text message or close reason, 1009 for a message over the limit. The
//! decoder stays failed: send [`encode_close`] with [`FrameError::close_code`] and close the
//! connection (§7.1.7).
//!
//! [`encode_frame`] writes a frame; a server passes no mask, a client a fresh random one per frame
//! (§5.3). [`encode_close`] and [`encode_pong`] write the control frames an endpoint must answer
//! with.
//!
//! Base64 comes from the `base64` crate and SHA-1 from `sha1_smol`, both for the accept key only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header lines read in a handshake head; more is answered as too large (431).
const MAX_HANDSHAKE_HEADERS: usize = 64;

/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, a 64-bit extended length, a 4-byte mask (§5.2).
const MAX_FRAME_HEADER: usize = 14;

// ---------------------------------------------------------------------------------------------
// Handshake, server side
// ---------------------------------------------------------------------------------------------

/// A valid opening handshake request (RFC 6455 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Length of the request head; the bytes after it are WebSocket frames.
    pub head_len: usize,
    /// The `Sec-WebSocket-Accept` value computed from the client's key (§4.2.2).
    pub accept: String,
}

/// Why an opening handshake request is refused, and with which HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not a well-formed HTTP/1.x request head: 400.
    Malformed,
    /// The head is longer than the limit, or has too many header lines: 431 (RFC 6585 §5).
    TooLarge,
    /// The method is not GET (§4.1): 405 with `Allow: GET`.
    NotGet,
    /// HTTP/1.0 (§4.1 requires at least 1.1): 400.
    NotHttp11,
    /// No `Host`, or more than one (§4.2.1 item 2; RFC 7230 §5.4): 400.
    NoHost,
    /// No `websocket` token in `Upgrade`: 426 with `Upgrade: websocket` (RFC 7231 §6.5.15). A
    /// plain HTTP request to the WebSocket port gets this.
    NotWebSocket,
    /// No `upgrade` token in `Connection` (§4.2.1 item 4): 400.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13: 426 with `Sec-WebSocket-Version: 13` (§4.4).
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not the base64 of 16 bytes (§4.2.1 item 5,
    /// §11.3.1): 400.
    BadKey,
    /// `sip` not among the offered subprotocols (RFC 7118 §4.1): 400. RFC 6455 would let the
    /// server accept without a subprotocol, but RFC 7118 requires `sip` in both directions, so
    /// such a client would fail the connection itself; refusing says why.
    NoSipProtocol,
    /// A request body (`Content-Length` not 0, or `Transfer-Encoding`): its bytes would be read as
    /// frames. 400.
    UnexpectedBody,
}

impl UpgradeError {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            UpgradeError::TooLarge => 431,
            UpgradeError::NotGet => 405,
            UpgradeError::NotWebSocket | UpgradeError::UnsupportedVersion => 426,
            UpgradeError::Malformed
            | UpgradeError::NotHttp11
            | UpgradeError::NoHost
            | UpgradeError::NoConnectionUpgrade
            | UpgradeError::BadKey
            | UpgradeError::NoSipProtocol
            | UpgradeError::UnexpectedBody => 400,
        }
    }

    /// The complete HTTP response to write before closing the connection.
    pub fn response(self) -> Vec<u8> {
        let status = self.status();
        let reason = match status {
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let extra = match self {
            UpgradeError::NotGet => "Allow: GET\r\n",
            UpgradeError::NotWebSocket => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            UpgradeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            UpgradeError::Malformed => "malformed HTTP request head",
            UpgradeError::TooLarge => "request head too large",
            UpgradeError::NotGet => "method is not GET",
            UpgradeError::NotHttp11 => "HTTP version below 1.1",
            UpgradeError::NoHost => "no Host header",
            UpgradeError::NotWebSocket => "Upgrade does not name websocket",
            UpgradeError::NoConnectionUpgrade => "Connection has no upgrade token",
            UpgradeError::UnsupportedVersion => "Sec-WebSocket-Version is not 13",
            UpgradeError::BadKey => "bad Sec-WebSocket-Key",
            UpgradeError::NoSipProtocol => "sip subprotocol not offered",
            UpgradeError::UnexpectedBody => "request has a body",
        };
        write!(f, "WebSocket upgrade refused ({}): {what}", self.status())
    }
}

impl std::error::Error for UpgradeError {}

/// Reads the opening handshake request at the start of `buf` (RFC 6455 §4.2.1).
///
/// `Ok(None)`: the head is not complete yet; call again with more bytes. A head longer than
/// `max_head_bytes` is refused as soon as that is certain, so the caller buffers at most that
/// much. Each call parses from the start; the limit bounds the cost.
pub fn parse_upgrade(buf: &[u8], max_head_bytes: usize) -> Result<Option<Upgrade>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HANDSHAKE_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head_bytes => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(UpgradeError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => {
            return Err(UpgradeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::Malformed),
    };
    if req.method != Some("GET") {
        return Err(UpgradeError::NotGet);
    }
    if req.version != Some(1) {
        return Err(UpgradeError::NotHttp11);
    }
    let headers = Headers(req.headers);
    if headers.single("host").is_none() {
        return Err(UpgradeError::NoHost);
    }
    if !headers.has_token("upgrade", "websocket") {
        return Err(UpgradeError::NotWebSocket);
    }
    if !headers.has_token("connection", "upgrade") {
        return Err(UpgradeError::NoConnectionUpgrade);
    }
    if headers.single("sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(UpgradeError::UnsupportedVersion);
    }
    let key = headers
        .single("sec-websocket-key")
        .filter(|key| is_valid_key(key))
        .ok_or(UpgradeError::BadKey)?;
    if !headers.has_token_exact("sec-websocket-protocol", "sip") {
        return Err(UpgradeError::NoSipProtocol);
    }
    let has_body = headers.values("transfer-encoding").next().is_some()
        || headers
            .values("content-length")
            .any(|v| v.is_empty() || v.iter().any(|&b| b != b'0'));
    if has_body {
        return Err(UpgradeError::UnexpectedBody);
    }
    Ok(Some(Upgrade {
        head_len,
        accept: accept_key(key),
    }))
}

/// The 101 response accepting `upgrade`, with the `sip` subprotocol (RFC 6455 §4.2.2, RFC 7118
/// §4.1).
pub fn upgrade_response(upgrade: &Upgrade) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: sip\r\n\r\n",
        upgrade.accept
    )
    .into_bytes()
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2 item 5.4): the base64 of the SHA-1 of the key
/// (as sent, base64 text) followed by the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha1.digest().bytes())
}

/// A key is the base64 of 16 bytes (§4.2.1 item 5): 24 characters, padding included.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|bytes| bytes.len() == 16)
}

/// Header lookups over an `httparse` header array: names case-insensitive, values trimmed.
struct Headers<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'b> Headers<'_, 'b> {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    }

    /// The value of a header that must appear once; `None` if absent or repeated.
    fn single(&self, name: &str) -> Option<&'b [u8]> {
        let mut values = self.values(name);
        let value = values.next()?;
        values.next().is_none().then_some(value)
    }

    /// The comma-separated elements of every line of `name`.
    fn tokens<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    }

    /// Whether `token` is in the list, case-insensitively (`Upgrade`, `Connection`: RFC 7230).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether `token` is in the list exactly (subprotocol names: RFC 6455 §4.1 item 10).
    fn has_token_exact(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t == token.as_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake, client side
// ---------------------------------------------------------------------------------------------

/// A `Sec-WebSocket-Key` from 16 random bytes (RFC 6455 §4.1 item 7): the caller draws them, fresh
/// for each connection.
pub fn client_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// The opening handshake request for `ws://host/path` offering `sip` (RFC 6455 §4.1, RFC 7118
/// §4.1). `host` (with `:port` if not the default) and `path` come from the client's
/// configuration and must not contain line breaks.
pub fn client_request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    )
    .into_bytes()
}

/// Why a client fails the connection after its opening handshake (RFC 6455 §4.1, items 1–6 of
/// the server response checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not a well-formed HTTP/1.x response head.
    Malformed,
    /// The head is longer than the limit, or has too many header lines.
    TooLarge,
    /// The status is not 101: the server refused.
    Refused(u16),
    /// `Upgrade: websocket` or `Connection: upgrade` missing.
    NotWebSocket,
    /// `Sec-WebSocket-Accept` missing or not the one the key gives.
    BadAccept,
    /// The server did not select `sip` (RFC 7118 §4.1), or selected something else too.
    NoSipProtocol,
    /// The server selected an extension the client did not offer (§4.1 item 5 of the checks).
    UnexpectedExtension,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Malformed => f.write_str("malformed HTTP response head"),
            ResponseError::TooLarge => f.write_str("response head too large"),
            ResponseError::Refused(status) => write!(f, "upgrade refused with {status}"),
            ResponseError::NotWebSocket => f.write_str("response does not upgrade to websocket"),
            ResponseError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            ResponseError::NoSipProtocol => f.write_str("sip subprotocol not selected"),
            ResponseError::UnexpectedExtension => f.write_str("unexpected extension selected"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Checks the server's answer to [`client_request`] sent with `key`. `Ok(None)`: incomplete;
/// `Ok(Some(len))`: the upgrade succeeded and the first `len` bytes were the response head.
pub fn check_upgrade_response(
    buf: &[u8],
    key: &str,
    max_head_bytes: usize,
) -> Result<Option<usize>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HANDSHAKE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head_bytes => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(ResponseError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_head_bytes => {
            return Err(ResponseError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    match resp.code {
        Some(101) => {}
        Some(status) => return Err(ResponseError::Refused(status)),
        None => return Err(ResponseError::Malformed),
    }
    let headers = Headers(resp.headers);
    if !headers.has_token("upgrade", "websocket") || !headers.has_token("connection", "upgrade") {
        return Err(ResponseError::NotWebSocket);
    }
    if headers.single("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_bytes()) {
        return Err(ResponseError::BadAccept);
    }
    if headers.single("sec-websocket-protocol") != Some(b"sip".as_slice()) {
        return Err(ResponseError::NoSipProtocol);
    }
    if headers
        .tokens("sec-websocket-extensions")
        .any(|t| !t.is_empty())
    {
        return Err(ResponseError::UnexpectedExtension);
    }
    Ok(Some(head_len))
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A frame's opcode (RFC 6455 §5.2, §11.8). Other values are refused with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// Close, Ping and Pong (§5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Which end of the connection the decoder is on: a server reads masked frames only, a client
/// unmasked frames only (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message (for SIP, one SIP message, RFC 7118 §5). `text`: it came in text
    /// frames and is valid UTF-8.
    Message { text: bool, payload: Vec<u8> },
    /// Answer with [`encode_pong`] carrying the same payload (§5.5.2).
    Ping(Vec<u8>),
    /// A pong, solicited or not (§5.5.3).
    Pong(Vec<u8>),
    /// The peer closes (§5.5.1). Answer with a close frame (echoing `code` is common), then close
    /// the connection. `code` is `None` when the frame had no body (status 1005 for the
    /// application). The decoder ignores whatever follows.
    Close { code: Option<u16>, reason: String },
}

/// Why the stream cannot be decoded any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// An RSV bit is set, and no extension was negotiated (§5.2).
    ReservedBits,
    /// An opcode RFC 6455 does not define (§5.2).
    UnknownOpcode(u8),
    /// A client sent an unmasked frame (§5.1).
    Unmasked,
    /// A server sent a masked frame (§5.1).
    Masked,
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlTooLong,
    /// A control frame without FIN (§5.5).
    FragmentedControl,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A payload length not in its minimal form, or with the most significant bit set (§5.2).
    BadLength,
    /// The message would exceed the decoder's limit (§7.4.1: 1009).
    TooBig,
    /// A text message or close reason that is not UTF-8 (§8.1: 1007).
    InvalidUtf8,
    /// A close frame with a 1-byte body, or a status code that may not be sent (§5.5.1, §7.4).
    BadClose,
}

impl FrameError {
    /// The status code of the close frame to send (§7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooBig => 1009,
            FrameError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::Unmasked => f.write_str("unmasked frame from a client"),
            FrameError::Masked => f.write_str("masked frame from a server"),
            FrameError::ControlTooLong => f.write_str("control frame over 125 bytes"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::UnexpectedContinuation => f.write_str("continuation without a message"),
            FrameError::ExpectedContinuation => f.write_str("new message inside a fragmented one"),
            FrameError::BadLength => f.write_str("payload length not in minimal form"),
            FrameError::TooBig => f.write_str("message too big"),
            FrameError::InvalidUtf8 => f.write_str("invalid UTF-8"),
            FrameError::BadClose => f.write_str("invalid close frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The header of the frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to read.
    remaining: usize,
    /// Payload bytes read so far (the mask index, §5.3).
    read: usize,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header; `FrameDecoder::header[..header_len]` holds what came so far.
    Header,
    Payload(FrameHead),
    /// A close frame came: the rest of the stream is ignored.
    Closed,
    Failed(FrameError),
}

/// Incremental frame decoder for one connection (RFC 6455 §5). See the module docs.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    role: Role,
    max_message_bytes: usize,
    state: State,
    header: [u8; MAX_FRAME_HEADER],
    header_len: usize,
    /// The data message being reassembled.
    message: Vec<u8>,
    /// Whether a data message is in progress, and if so whether it is text.
    message_text: Option<bool>,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder for one connection. `max_message_bytes` bounds a reassembled data message, and
    /// so what the decoder buffers.
    pub fn new(role: Role, max_message_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            role,
            max_message_bytes,
            state: State::Header,
            header: [0; MAX_FRAME_HEADER],
            header_len: 0,
            message: Vec::new(),
            message_text: None,
            control: Vec::new(),
        }
    }

    /// Heap bytes the decoder holds (the capacity of the message being reassembled and of the
    /// control payload): at most the limit plus 125, whatever the peer sends.
    pub fn buffered(&self) -> usize {
        self.message.capacity() + self.control.capacity()
    }

    /// Consumes bytes from the front of `input` until it has an event or `input` is empty.
    ///
    /// `Ok(Some(event))`: call again with what is left of `input`. `Ok(None)`: all of `input` was
    /// consumed; call again with the next bytes read. After an error the decoder stays failed:
    /// send a close frame with [`FrameError::close_code`] and close the connection.
    pub fn next_event(&mut self, input: &mut &[u8]) -> Result<Option<Event>, FrameError> {
        loop {
            match self.state {
                State::Failed(error) => return Err(error),
                State::Closed => {
                    *input = &[];
                    return Ok(None);
                }
                _ if input.is_empty() => return Ok(None),
                State::Header => match self.read_header(input) {
                    Ok(Some(head)) => {
                        self.state = State::Payload(head);
                        // An empty payload is complete at once.
                        if head.remaining == 0 {
                            if let Some(event) = self.end_frame(head)? {
                                return Ok(Some(event));
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(error) => return Err(self.fail(error)),
                },
                State::Payload(mut head) => {
                    let take = head.remaining.min(input.len());
                    let (bytes, rest) = input.split_at(take);
                    *input = rest;
                    let target = if head.opcode.is_control() {
                        &mut self.control
                    } else {
                        &mut self.message
                    };
                    let start = target.len();
                    target.extend_from_slice(bytes);
                    if let Some(mask) = head.mask {
                        unmask(&mut target[start..], mask, head.read);
                    }
                    head.read += take;
                    head.remaining -= take;
                    self.state = State::Payload(head);
                    if head.remaining == 0 {
                        if let Some(event) = self.end_frame(head)? {
                            return Ok(Some(event));
                        }
                    }
                }
            }
        }
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.state = State::Failed(error);
        self.header_len = 0;
        self.message = Vec::new();
        self.control = Vec::new();
        error
    }

    /// Takes header bytes from `input`; `Some` once the header is complete and valid.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<Option<FrameHead>, FrameError> {
        // First the two fixed bytes, then as many more as they announce.
        let mut needed = 2;
        loop {
            if self.header_len >= 2 {
                needed = header_size(self.header[1]);
            }
            if self.header_len == needed {
                break;
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(None);
            };
            *input = rest;
            self.header[self.header_len] = byte;
            self.header_len += 1;
            if self.header_len == 2 {
                self.check_first_bytes()?;
            }
        }
        self.header_len = 0;
        let header = &self.header[..needed];
        let (b0, b1) = (header[0], header[1]);
        let (len, mask_at) = match b1 & 0x7F {
            126 => {
                let len = u16::from_be_bytes([header[2], header[3]]);
                if len < 126 {
                    return Err(FrameError::BadLength);
                }
                (u64::from(len), 4)
            }
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&header[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len < 0x1_0000 || len >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = (b1 & 0x80 != 0).then(|| {
            let mut mask = [0; 4];
            mask.copy_from_slice(&header[mask_at..mask_at + 4]);
            mask
        });
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let room = if opcode.is_control() {
            MAX_CONTROL_PAYLOAD
        } else {
            self.max_message_bytes.saturating_sub(self.message.len())
        };
        let remaining = usize::try_from(len)
            .ok()
            .filter(|&len| len <= room)
            .ok_or(FrameError::TooBig)?;
        let fin = b0 & 0x80 != 0;
        match opcode {
            Opcode::Text | Opcode::Binary => {
                self.message_text = Some(opcode == Opcode::Text);
                self.reserve_message(remaining);
            }
            Opcode::Continuation => self.reserve_message(remaining),
            Opcode::Close | Opcode::Ping | Opcode::Pong => {
                self.control.clear();
                self.control.reserve_exact(remaining);
            }
        }
        Ok(Some(FrameHead {
            fin,
            opcode,
            mask,
            remaining,
            read: 0,
        }))
    }

    /// Makes room for `additional` more message bytes (the caller checked the total against the
    /// limit). Growth doubles, as `Vec`'s does, but stops at the limit, so the capacity never
    /// exceeds it; a single-frame message is allocated once, at its size.
    fn reserve_message(&mut self, additional: usize) {
        let needed = self.message.len() + additional;
        if needed > self.message.capacity() {
            let target = needed
                .max(self.message.capacity() * 2)
                .min(self.max_message_bytes);
            self.message.reserve_exact(target - self.message.len());
        }
    }

    /// The checks that the first two header bytes allow, made before reading further.
    fn check_first_bytes(&self) -> Result<(), FrameError> {
        let (b0, b1) = (self.header[0], self.header[1]);
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        match self.role {
            Role::Server if !masked => return Err(FrameError::Unmasked),
            Role::Client if masked => return Err(FrameError::Masked),
            _ => {}
        }
        if opcode.is_control() {
            if b0 & 0x80 == 0 {
                return Err(FrameError::FragmentedControl);
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::ControlTooLong);
            }
        } else {
            match (opcode, self.message_text) {
                (Opcode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(FrameError::ExpectedContinuation);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A frame's payload is complete: the event it finishes, if any.
    fn end_frame(&mut self, head: FrameHead) -> Result<Option<Event>, FrameError> {
        self.state = State::Header;
        let event = match head.opcode {
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if !head.fin {
                    return Ok(None);
                }
                let text = self.message_text.take() == Some(true);
                let payload = std::mem::take(&mut self.message);
                if text && std::str::from_utf8(&payload).is_err() {
                    return Err(self.fail(FrameError::InvalidUtf8));
                }
                Event::Message { text, payload }
            }
            Opcode::Ping => Event::Ping(self.control.clone()),
            Opcode::Pong => Event::Pong(self.control.clone()),
            Opcode::Close => match parse_close(&self.control) {
                Ok((code, reason)) => {
                    self.state = State::Closed;
                    self.message = Vec::new();
                    Event::Close {
                        code,
                        reason: reason.to_owned(),
                    }
                }
                Err(error) => return Err(self.fail(error)),
            },
        };
        Ok(Some(event))
    }
}

/// The header length that the second header byte announces (§5.2).
fn header_size(b1: u8) -> usize {
    let extended = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// XORs `bytes` with the mask, `offset` being the index of `bytes[0]` in the payload (§5.3).
fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    for chunk in bytes.chunks_mut(4) {
        for (byte, k) in chunk.iter_mut().zip(key) {
            *byte ^= k;
        }
    }
}

/// A close frame's body: nothing, or a status code and a UTF-8 reason (§5.5.1, §7.4).
fn parse_close(body: &[u8]) -> Result<(Option<u16>, &str), FrameError> {
    match body {
        [] => Ok((None, "")),
        [_] => Err(FrameError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_sendable_close_code(code) {
                return Err(FrameError::BadClose);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Codes that may appear in a close frame (§7.4.1, §7.4.2 and the IANA registry of §11.7):
/// 1000–1003, 1007–1014 and the private ranges 3000–4999. 1004 is reserved; 1005, 1006 and 1015
/// are for reporting only.
fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends one frame to `out` (RFC 6455 §5.2): FIN as given, no RSV bit, the length in its minimal
/// form, and the payload masked with `mask` if there is one (§5.3). A server passes `None`; a
/// client passes a fresh unpredictable mask for every frame. Control frames must be final and at
/// most 125 bytes long: [`encode_close`] and [`encode_pong`] see to it.
pub fn encode_frame(
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    debug_assert!(!opcode.is_control() || (fin && payload.len() <= MAX_CONTROL_PAYLOAD));
    out.push(if fin { 0x80 } else { 0 } | opcode as u8);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        unmask(&mut out[start..], mask, 0);
    }
}

/// Appends a close frame with `code` and `reason`, the reason cut at a character boundary to fit
/// the 125-byte control payload (§5.5.1).
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = Vec::with_capacity(2 + cut);
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(Opcode::Close, true, &body, mask, out);
}

/// Appends the pong answering a ping with `payload` (§5.5.3). The payload of a decoded ping is
/// at most 125 bytes; a longer one is cut.
pub fn encode_pong(payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode_frame(Opcode::Pong, true, payload, mask, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmask_continues_at_any_offset() {
        let mask = [1, 2, 3, 4];
        let mut whole = [0u8; 11];
        unmask(&mut whole, mask, 0);
        for split in 0..whole.len() {
            let mut parts = [0u8; 11];
            let (a, b) = parts.split_at_mut(split);
            unmask(a, mask, 0);
            unmask(b, mask, split);
            assert_eq!(parts, whole, "split at {split}");
        }
    }

    #[test]
    fn header_size_counts_extended_length_and_mask() {
        assert_eq!(header_size(0x05), 2);
        assert_eq!(header_size(0x85), 6);
        assert_eq!(header_size(126), 4);
        assert_eq!(header_size(0x80 | 127), 14);
    }
}
