//! Header names: the ones sipshard reads get a variant, everything else is kept as written.
//!
//! Names compare case-insensitively and compact forms map to their long form (RFC 3261 §7.3.3,
//! §20; the later compact forms from the IANA SIP parameters registry). Lookup is by length first,
//! then one case-insensitive compare, so classifying a header line costs a handful of instructions.

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, compact $compact:literal)? ;)*) => {
        /// A SIP header name. `Other` is any name sipshard has no typed view for; its text stays in the
        /// message buffer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( #[doc = $canonical] $variant, )*
            /// A header without a typed view; read its name with [`crate::Header::name_bytes`].
            Other,
        }

        impl HeaderName {
            /// The canonical long form, e.g. `Call-ID`. `None` for [`HeaderName::Other`].
            pub fn canonical(self) -> Option<&'static str> {
                match self {
                    $( HeaderName::$variant => Some($canonical), )*
                    HeaderName::Other => None,
                }
            }

            /// The compact form, e.g. `i` for `Call-ID`, when the name has one.
            pub fn compact(self) -> Option<u8> {
                match self {
                    $( $( HeaderName::$variant => Some($compact), )? )*
                    _ => None,
                }
            }

            /// Classifies a header name as written (long or compact form, any case).
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if let [single] = name {
                    let lower = single.to_ascii_lowercase();
                    $( $( if lower == $compact { return HeaderName::$variant; } )? )*
                    return HeaderName::Other;
                }
                $( if name.len() == $canonical.len() && name.eq_ignore_ascii_case($canonical.as_bytes()) {
                    return HeaderName::$variant;
                } )*
                HeaderName::Other
            }
        }
    };
}

header_names! {
    Via => "Via", compact b'v';
    From => "From", compact b'f';
    To => "To", compact b't';
    CallId => "Call-ID", compact b'i';
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", compact b'm';
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Route => "Route";
    RecordRoute => "Record-Route";
    Path => "Path";
    ContentLength => "Content-Length", compact b'l';
    ContentType => "Content-Type", compact b'c';
    ContentEncoding => "Content-Encoding", compact b'e';
    Authorization => "Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    AuthenticationInfo => "Authentication-Info";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", compact b'k';
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    Subject => "Subject", compact b's';
    Event => "Event", compact b'o';
    AllowEvents => "Allow-Events", compact b'u';
    ReferTo => "Refer-To", compact b'r';
    ReferredBy => "Referred-By", compact b'b';
    SessionExpires => "Session-Expires", compact b'x';
    Identity => "Identity", compact b'y';
    IdentityInfo => "Identity-Info", compact b'n';
    RejectContact => "Reject-Contact", compact b'j';
    AcceptContact => "Accept-Contact", compact b'a';
    RequestDisposition => "Request-Disposition", compact b'd';
    Timestamp => "Timestamp";
    Date => "Date";
    RetryAfter => "Retry-After";
    UserAgent => "User-Agent";
    Server => "Server";
    Warning => "Warning";
}

impl HeaderName {
    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so several values may
    /// share one line and several lines combine in order.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
                | HeaderName::Allow
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Accept
                | HeaderName::AllowEvents
                | HeaderName::ContentEncoding
                | HeaderName::Warning
                | HeaderName::AcceptContact
                | HeaderName::RejectContact
        )
    }

    /// Headers that may appear at most once in a valid message (RFC 3261 §7.3.1 and Table 2; RFC
    /// 4475 §3.3.8 tests this for To, From, Call-ID, CSeq and Max-Forwards).
    pub fn is_single(self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
                | HeaderName::MinExpires
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_compact_forms_in_any_case() {
        assert_eq!(HeaderName::from_bytes(b"cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"I"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_bytes(b"WWW-AUTHENTICATE"),
            HeaderName::WwwAuthenticate
        );
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"z"), HeaderName::Other);
    }

    #[test]
    fn every_compact_form_maps_back_to_its_name() {
        for c in b'a'..=b'z' {
            let name = HeaderName::from_bytes(&[c]);
            if name != HeaderName::Other {
                assert_eq!(name.compact(), Some(c));
            }
        }
        let known = [
            b'i', b'm', b'v', b'f', b't', b'l', b'c', b'k', b's', b'e', b'o', b'r', b'u',
        ];
        for c in known {
            assert_ne!(
                HeaderName::from_bytes(&[c]),
                HeaderName::Other,
                "{}",
                c as char
            );
        }
    }
}
