//! Why a REGISTER fails, one variant per SIP answer.
//!
//! Each variant maps to exactly one status code and reason phrase ([`RegisterError::status`]),
//! so the shell writes the response without looking at strings. The reason phrases follow the
//! registrars sipshard replaces where the RFCs leave the wording open (Flexisip's "Domain not
//! served", Kamailio's "Invalid CSeq number").

use std::fmt;

use sipshard_net::{ErrorAction, ParseError};

/// A REGISTER the registrar refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// A header the registrar reads is malformed or missing: 400 naming the header, as
    /// [`ParseError::action`] says.
    Malformed(ParseError),
    /// The request is not a REGISTER: the shell routed it here by mistake (405).
    NotRegister,
    /// The Request-URI is neither SIP nor SIPS (416, RFC 3261 §8.2.2.1).
    UnsupportedUriScheme,
    /// The Request-URI names a domain this registrar does not serve (403 "Domain not served",
    /// §10.3 step 1 as Flexisip answers it).
    NotOurDomain,
    /// The To URI is not SIP or SIPS, so it is no AOR (400, §10.2 and RFC 4475 §3.3.4).
    AorNotSip,
    /// The AOR's domain is not one this registrar serves (404, §10.3 step 5).
    AorNotServed,
    /// `Contact: *` with other contacts, more than once, or without `Expires: 0` (400, §10.3
    /// step 6).
    InvalidStar,
    /// More contacts in one request than [`crate::MAX_CONTACTS_PER_REQUEST`] (400): each is
    /// compared with every binding of the AOR, so the count is bounded before any work.
    TooManyContacts,
    /// A contact has `reg-id` without `+sip.instance` (400, RFC 5626 §6).
    RegIdWithoutInstance,
    /// The UA asked for outbound (`reg-id`, `Supported: outbound`) through a first hop that did
    /// not mark the flow with `;ob` in Path (439, RFC 5626 §6 and §11.5).
    FirstHopLacksOutboundSupport,
    /// Same Call-ID as a stored binding with a CSeq not above the stored one: an old or replayed
    /// request (400 "Invalid CSeq number", §10.3 step 7).
    InvalidCSeq,
    /// A nonzero interval below the minimum (423 with `Min-Expires`, §10.3 step 7, §21.4.17).
    IntervalTooBrief { min_expires_s: u32 },
    /// The shard holds [`crate::RegistrarConfig::max_aors_per_shard`] AORs and this request would
    /// add one (503 with Retry-After: the limit bounds memory; bindings expire and make room).
    StoreFull,
    /// The bindings database (Redis) could not take the write in time: no master during a
    /// failover longer than the hold, or the write queue is full (503 with Retry-After).
    DatabaseUnavailable { retry_after_s: u32 },
}

/// Seconds a client is asked to wait after [`RegisterError::StoreFull`].
pub const STORE_FULL_RETRY_AFTER_S: u32 = 60;

/// The response for a [`RegisterError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorStatus {
    pub code: u16,
    pub reason: &'static str,
    /// The `Min-Expires` header value, for 423 only.
    pub min_expires_s: Option<u32>,
    /// The `Retry-After` header value, for 503 only.
    pub retry_after_s: Option<u32>,
}

impl RegisterError {
    /// The status code, reason phrase and, for 423, the Min-Expires value to answer with.
    pub fn status(&self) -> ErrorStatus {
        let (code, reason) = match self {
            RegisterError::Malformed(e) => match e.action() {
                ErrorAction::Respond { status, reason } => (status, reason),
                // Only responses and non-SIP bytes are dropped, and neither reaches here.
                ErrorAction::Drop => (400, "Bad Request"),
            },
            RegisterError::NotRegister => (405, "Method Not Allowed"),
            RegisterError::UnsupportedUriScheme => (416, "Unsupported URI Scheme"),
            RegisterError::NotOurDomain => (403, "Domain not served"),
            RegisterError::AorNotSip => (400, "To Must Be A SIP Or SIPS URI"),
            RegisterError::AorNotServed => (404, "Not Found"),
            RegisterError::InvalidStar => (400, "Invalid Contact *"),
            RegisterError::TooManyContacts => (400, "Too Many Contacts"),
            RegisterError::RegIdWithoutInstance => (400, "reg-id Without +sip.instance"),
            RegisterError::FirstHopLacksOutboundSupport => {
                (439, "First Hop Lacks Outbound Support")
            }
            RegisterError::InvalidCSeq => (400, "Invalid CSeq number"),
            RegisterError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            RegisterError::StoreFull => (503, "Registrar Full"),
            RegisterError::DatabaseUnavailable { .. } => (503, "Registrar Database Unavailable"),
        };
        let min_expires_s = match self {
            RegisterError::IntervalTooBrief { min_expires_s } => Some(*min_expires_s),
            _ => None,
        };
        let retry_after_s = match self {
            RegisterError::StoreFull => Some(STORE_FULL_RETRY_AFTER_S),
            RegisterError::DatabaseUnavailable { retry_after_s } => Some(*retry_after_s),
            _ => None,
        };
        ErrorStatus {
            code,
            reason,
            min_expires_s,
            retry_after_s,
        }
    }
}

impl From<ParseError> for RegisterError {
    fn from(e: ParseError) -> Self {
        RegisterError::Malformed(e)
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.status();
        write!(f, "{} {}", s.code, s.reason)?;
        if let Some(min) = s.min_expires_s {
            write!(f, " (Min-Expires: {min})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegisterError {}

#[cfg(test)]
mod tests {
    use super::*;
    use sipshard_net::{ErrorKind, HeaderName};

    #[test]
    fn statuses() {
        let s = RegisterError::IntervalTooBrief { min_expires_s: 60 }.status();
        assert_eq!(
            (s.code, s.reason, s.min_expires_s),
            (423, "Interval Too Brief", Some(60))
        );
        let s = RegisterError::NotOurDomain.status();
        assert_eq!(
            (s.code, s.reason, s.min_expires_s),
            (403, "Domain not served", None)
        );
        assert_eq!(RegisterError::InvalidCSeq.status().code, 400);
        let s = RegisterError::StoreFull.status();
        assert_eq!(
            (s.code, s.retry_after_s, s.min_expires_s),
            (503, Some(STORE_FULL_RETRY_AFTER_S), None)
        );
        assert_eq!(RegisterError::AorNotSip.status().code, 400);
        assert_eq!(
            RegisterError::FirstHopLacksOutboundSupport.status().code,
            439
        );
        let bad_contact = RegisterError::Malformed(ParseError {
            kind: ErrorKind::BadHeader(HeaderName::Contact),
            in_response: false,
        });
        assert_eq!(
            (bad_contact.status().code, bad_contact.status().reason),
            (400, "Bad Contact")
        );
        assert_eq!(
            RegisterError::IntervalTooBrief { min_expires_s: 60 }.to_string(),
            "423 Interval Too Brief (Min-Expires: 60)"
        );
    }
}
