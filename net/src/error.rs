//! Parse errors, each mapped to what a server does about it.
//!
//! A request that can be answered gets a response whose reason phrase says what was wrong (RFC 3261
//! §21.4.1 allows any phrase); a malformed response is dropped (§18.1.2: responses are never
//! answered). The mapping lives here so every transport answers the same way.

use crate::HeaderName;

/// What was wrong with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing that looks like a SIP start line.
    NotSip,
    /// The Request-Line is not `Method SP Request-URI SP SIP-Version` (§7.1).
    BadRequestLine,
    /// The Request-URI does not parse or is not allowed there (§19.1.1).
    BadRequestUri,
    /// The Status-Line is not `SIP-Version SP 3DIGIT SP Reason-Phrase`, or the code is outside
    /// 100..=699 (§7.2, RFC 4475 §3.1.2.19).
    BadStatusLine,
    /// A version other than SIP/2.0 (§8.2.6 → 505).
    VersionNotSupported,
    /// A header line without a `name:` (§7.3).
    BadHeaderLine,
    /// More header lines than the parser keeps.
    TooManyHeaders,
    /// The message is larger than the configured limit.
    TooLarge,
    /// The header section never ended.
    UnterminatedHeaders,
    /// Content-Length is not a number, is negative, or differs between copies (RFC 4475 §3.1.2.3,
    /// §3.3.9).
    BadContentLength,
    /// Content-Length is absent on a stream transport, where it frames the message (§18.3).
    MissingContentLength,
    /// Content-Length promises more bytes than the datagram holds (§18.3, RFC 4475 §3.1.2.2).
    TruncatedBody,
    /// A header that sipshard reads has a value its grammar does not allow.
    BadHeader(HeaderName),
    /// A header required in every request is absent (§8.1.1).
    MissingHeader(HeaderName),
    /// A header that may appear once appears again with another value (RFC 4475 §3.3.8).
    DuplicateHeader(HeaderName),
    /// The CSeq method differs from the Request-Line method (§8.1.1.5, RFC 4475 §3.1.2.17).
    CSeqMethodMismatch,
}

/// A parse failure, with enough context to choose between answering and dropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ErrorKind,
    /// True when the start line was a Status-Line: such errors are never answered.
    pub in_response: bool,
}

/// What a server does with a message that failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Answer the request with this status and reason phrase.
    Respond { status: u16, reason: &'static str },
    /// Discard it (and count it).
    Drop,
}

impl ParseError {
    pub(crate) fn request(kind: ErrorKind) -> Self {
        ParseError {
            kind,
            in_response: false,
        }
    }

    /// The response a server sends, or `Drop` when none can or may be sent.
    pub fn action(&self) -> ErrorAction {
        if self.in_response {
            return ErrorAction::Drop;
        }
        let (status, reason) = match self.kind {
            ErrorKind::NotSip | ErrorKind::BadStatusLine => return ErrorAction::Drop,
            ErrorKind::VersionNotSupported => (505, "Version Not Supported"),
            ErrorKind::TooLarge | ErrorKind::TooManyHeaders => (513, "Message Too Large"),
            other => (400, other.reason()),
        };
        ErrorAction::Respond { status, reason }
    }
}

impl ErrorKind {
    /// A reason phrase for a 400 that tells the sender what was wrong.
    pub fn reason(self) -> &'static str {
        use HeaderName as H;
        match self {
            ErrorKind::NotSip => "Not A SIP Message",
            ErrorKind::BadRequestLine => "Malformed Request-Line",
            ErrorKind::BadRequestUri => "Malformed Request-URI",
            ErrorKind::BadStatusLine => "Malformed Status-Line",
            ErrorKind::VersionNotSupported => "Version Not Supported",
            ErrorKind::BadHeaderLine => "Malformed Header Line",
            ErrorKind::TooManyHeaders => "Too Many Headers",
            ErrorKind::TooLarge => "Message Too Large",
            ErrorKind::UnterminatedHeaders => "Unterminated Header Section",
            ErrorKind::BadContentLength => "Bad Content-Length",
            ErrorKind::MissingContentLength => "Missing Content-Length",
            ErrorKind::TruncatedBody => "Body Shorter Than Content-Length",
            ErrorKind::CSeqMethodMismatch => "CSeq Method Does Not Match Request-Line",
            ErrorKind::BadHeader(h) => match h {
                H::Via => "Bad Via",
                H::From => "Bad From",
                H::To => "Bad To",
                H::CallId => "Bad Call-ID",
                H::CSeq => "Bad CSeq",
                H::MaxForwards => "Bad Max-Forwards",
                H::Contact => "Bad Contact",
                H::Expires => "Bad Expires",
                H::MinExpires => "Bad Min-Expires",
                H::Route => "Bad Route",
                H::RecordRoute => "Bad Record-Route",
                H::Path => "Bad Path",
                H::ContentType => "Bad Content-Type",
                H::Authorization | H::ProxyAuthorization => "Bad Credentials",
                H::WwwAuthenticate | H::ProxyAuthenticate => "Bad Challenge",
                H::Require | H::ProxyRequire | H::Supported | H::Unsupported => "Bad Option Tags",
                _ => "Bad Header Value",
            },
            ErrorKind::MissingHeader(h) => match h {
                H::Via => "Missing Via",
                H::From => "Missing From",
                H::To => "Missing To",
                H::CallId => "Missing Call-ID",
                H::CSeq => "Missing CSeq",
                _ => "Missing Header",
            },
            ErrorKind::DuplicateHeader(h) => match h {
                H::From => "Duplicate From",
                H::To => "Duplicate To",
                H::CallId => "Duplicate Call-ID",
                H::CSeq => "Duplicate CSeq",
                H::MaxForwards => "Duplicate Max-Forwards",
                H::ContentLength => "Duplicate Content-Length",
                _ => "Duplicate Header",
            },
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.in_response {
            "response"
        } else {
            "request"
        };
        write!(f, "{what}: {}", self.kind.reason())
    }
}

impl std::error::Error for ParseError {}
