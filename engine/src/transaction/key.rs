//! Transaction keys: which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3, §9.2).
//!
//! Keys own their text (a few short strings) so that a transaction never borrows the buffer a
//! message arrived in. They are compared as values: the table holds them in hash maps.

use sipshard_net::{ErrorKind, HeaderName, Message, Method, ParseError, Via};

/// The prefix that marks a branch as globally unique under RFC 3261 (§8.1.1.7); without it the
/// request comes from an RFC 2543 element and is matched the old way.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// What a request is matched on at a server (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey(ServerKeyInner);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKeyInner {
    /// RFC 3261: the branch of the top Via (with the magic cookie), its sent-by, and the method —
    /// ACK counted as INVITE, since the ACK for a non-2xx belongs to the INVITE's transaction.
    Branch {
        branch: Box<str>,
        /// Host (lower case) and port as written: a branch chosen by another client is a different
        /// transaction.
        sent_by: Box<str>,
        method: Box<str>,
    },
    /// RFC 2543 fallback: Request-URI, From tag, Call-ID, CSeq number and method (ACK as INVITE)
    /// and the whole top Via. The To tag is compared by the table, since an ACK carries the tag of
    /// the response rather than the request's.
    Rfc2543 {
        request_uri: Box<str>,
        from_tag: Option<Box<str>>,
        call_id: Box<str>,
        cseq: u32,
        method: Box<str>,
        top_via: Box<[u8]>,
    },
}

impl ServerKey {
    /// The key of a received request. Fails when the headers it is made of are missing or
    /// malformed (the top Via always; From, Call-ID and CSeq for an RFC 2543 request).
    pub fn for_request(request: &Message<'_>) -> Result<ServerKey, ParseError> {
        let (Some(method), Some(uri)) = (request.method(), request.request_uri()) else {
            return Err(not_a_request());
        };
        let via = request.top_via()?;
        let method = matching_method(method);
        let inner = match via.branch() {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => ServerKeyInner::Branch {
                branch: branch.into(),
                sent_by: sent_by(&via).into(),
                method,
            },
            _ => ServerKeyInner::Rfc2543 {
                request_uri: uri.as_str().into(),
                from_tag: request.from()?.tag().map(Into::into),
                call_id: request.call_id()?.into(),
                cseq: request.cseq()?.seq,
                method,
                top_via: via_value(&via).into(),
            },
        };
        Ok(ServerKey(inner))
    }

    /// For the key of a CANCEL, the key of the INVITE it cancels: the same key with the method
    /// INVITE (§9.2). `None` for other methods.
    pub fn for_cancel_target(&self) -> Option<ServerKey> {
        let mut target = self.clone();
        let method = match &mut target.0 {
            ServerKeyInner::Branch { method, .. } | ServerKeyInner::Rfc2543 { method, .. } => {
                method
            }
        };
        if &**method != "CANCEL" {
            return None;
        }
        *method = "INVITE".into();
        Some(target)
    }

    /// Matched the RFC 2543 way, where To tags are compared too.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self.0, ServerKeyInner::Rfc2543 { .. })
    }
}

/// What a response is matched on at a client (§17.1.3): the branch of the top Via and the CSeq
/// method (a CANCEL shares its INVITE's branch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    branch: Box<str>,
    method: Box<str>,
}

impl ClientKey {
    /// The key of a request a client transaction sends: its top Via's branch (required) and its
    /// method.
    pub fn for_request(request: &Message<'_>) -> Result<ClientKey, ParseError> {
        let method = request.method().ok_or_else(not_a_request)?;
        Ok(ClientKey {
            branch: branch(request)?.into(),
            method: method.as_str().into(),
        })
    }

    /// The key a received response is matched on.
    pub fn for_response(response: &Message<'_>) -> Result<ClientKey, ParseError> {
        let cseq = response.cseq()?;
        Ok(ClientKey {
            branch: branch(response)?.into(),
            method: cseq.method.as_str().into(),
        })
    }
}

/// ACK matches the INVITE's transaction (§17.2.3); every other method its own.
fn matching_method(method: Method<'_>) -> Box<str> {
    match method {
        Method::Ack => "INVITE".into(),
        other => other.as_str().into(),
    }
}

fn branch<'a>(message: &Message<'a>) -> Result<&'a str, ParseError> {
    message.top_via()?.branch().ok_or(ParseError {
        kind: ErrorKind::BadHeader(HeaderName::Via),
        in_response: !message.is_request(),
    })
}

/// The error for a response handed over where a request belongs: malformed for this purpose, and
/// never answered.
pub(crate) fn not_a_request() -> ParseError {
    ParseError {
        kind: ErrorKind::BadRequestLine,
        in_response: true,
    }
}

/// `host[:port]`, the host in lower case (host names compare case-insensitively).
fn sent_by(via: &Via<'_>) -> String {
    let mut text = via.host.text.to_ascii_lowercase();
    if let Some(port) = via.port {
        text.push(':');
        text.push_str(&port.to_string());
    }
    text
}

/// One Via value, rebuilt from its parts with canonical spacing: `SIP/2.0/UDP host:port;params`.
/// Used to compare top Vias (RFC 2543 matching) and to copy the top Via into an ACK or CANCEL
/// (§17.1.1.3, §9.1), where the original line may hold further values after a comma.
pub(crate) fn via_value(via: &Via<'_>) -> Vec<u8> {
    let mut text = format!(
        "{}/{}/{} {}",
        via.protocol, via.version, via.transport, via.host.text
    );
    if let Some(port) = via.port {
        text.push(':');
        text.push_str(&port.to_string());
    }
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(via.params.as_bytes().trim_ascii());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message<'_> {
        Message::parse_datagram(text.as_bytes()).unwrap()
    }

    #[test]
    fn via_value_is_rebuilt_with_its_parameters() {
        let m = parse(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP / 2.0 / UDP  Host.Example:5070 ;branch=z9hG4bK1;rport , SIP/2.0/TCP other\r\nl: 0\r\n\r\n",
        );
        let via = m.top_via().unwrap();
        assert_eq!(
            via_value(&via),
            b"SIP/2.0/UDP Host.Example:5070;branch=z9hG4bK1;rport"
        );
        assert_eq!(sent_by(&via), "host.example:5070");
    }
}
