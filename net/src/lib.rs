//! sipshard-net: the SIP codec.
//!
//! A zero-copy parser and writer for the hot path of a proxy and registrar. A parsed [`Message`]
//! holds positions into the receive buffer; header values are parsed into typed views
//! ([`Via`], [`NameAddr`], [`Contact`], [`CSeq`], …) only when read. Writing splices the original
//! bytes ([`ForwardEdits`]) or builds new messages ([`MessageWriter`], [`response_to`]).
//! [`StreamFramer`] cuts messages out of TCP and TLS streams; over WebSocket each message is one
//! SIP message ([`websocket`]).
//!
//! This crate does no I/O and reads no clock: bytes in, values or bytes out. Every input gets a
//! `Result`; no input panics (fuzzed, see `fuzz/`).

mod error;
mod framing;
mod header;
mod message;
mod method;
mod params;
mod scan;
mod status;
mod transport;
mod uri;
mod values;
pub mod websocket;
mod write;

pub use error::{ErrorAction, ErrorKind, ParseError};
pub use framing::{DEFAULT_MAX_MESSAGE_BYTES, Frame, StreamFramer};
pub use header::HeaderName;
pub use message::{Header, HeaderLine, MAX_HEADERS, Message, Span, StartLine};
pub use method::Method;
pub use params::{BadParams, Param, Params};
pub use status::reason_phrase;
pub use transport::Transport;
pub use uri::{BadUri, Host, HostKind, OtherUri, SipUri, Uri};
pub use values::{AuthHeader, BadValue, CSeq, Contact, MediaType, NameAddr, Via};
pub use write::{
    ForwardEdits, MessageWriter, ViaStamp, error_response, response_to, stamped_response_to,
};
