//! Header names: the ones sipshard reads get a variant, everything else is kept as written.
//!
//! Names compare case-insensitively and compact forms map to their long form (RFC 3261 §7.3.3,
//! §20; the later compact forms from the IANA SIP parameters registry). Lookup is one match on the
//! length and first letter, then one case-insensitive compare with the only candidate.

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

            /// The former linear classification, the reference [`HeaderName::from_bytes`] is tested against.
            #[cfg(test)]
            fn from_bytes_linear(name: &[u8]) -> HeaderName {
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

            /// Every variant but `Other`.
            #[cfg(test)]
            const ALL: &'static [HeaderName] = &[ $( HeaderName::$variant, )* ];
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

/// `name` equals `lower` (a lower-case name of letters and `-`) ignoring ASCII case: a letter of
/// `lower` matches itself or its upper case, a `-` only itself. Compares eight bytes at a time
/// (overlapping loads cover a length that is not a multiple of the word).
fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    /// Nonzero where `a` differs from `c`; each byte of `c` lends its case bit (0x20) to `a` when
    /// it is a letter (0x40 set), not when it is `-`.
    fn diff(a: u64, c: u64) -> u64 {
        (a | ((c & 0x4040_4040_4040_4040) >> 1)) ^ c
    }
    fn word<const N: usize>(s: &[u8], at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes[..N].copy_from_slice(&s[at..at + N]);
        u64::from_le_bytes(bytes)
    }
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    match n {
        0..=3 => name
            .iter()
            .zip(lower)
            .all(|(&b, &c)| diff(u64::from(b), u64::from(c)) == 0),
        4..=8 => {
            diff(word::<4>(name, 0), word::<4>(lower, 0))
                | diff(word::<4>(name, n - 4), word::<4>(lower, n - 4))
                == 0
        }
        _ => {
            let mut d = 0;
            let mut i = 0;
            while i + 8 < n {
                d |= diff(word::<8>(name, i), word::<8>(lower, i));
                i += 8;
            }
            d |= diff(word::<8>(name, n - 8), word::<8>(lower, n - 8));
            d == 0
        }
    }
}

impl HeaderName {
    /// Classifies a header name as written (long or compact form, any case).
    ///
    /// One match on (length, first letter) picks the only candidate (two pairs share both and are
    /// told apart by their second letter), then one case-insensitive compare confirms it.
    #[inline(always)]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName as H;
        let Some(&first) = name.first() else {
            return H::Other;
        };
        // ASCII letters map to lower case; nothing else maps to a letter.
        let first = first | 0x20;
        let (candidate, lower): (HeaderName, &[u8]) = match (name.len(), first) {
            (1, _) => return Self::from_compact(first),
            (2, b't') => (H::To, b"to"),
            (3, b'v') => (H::Via, b"via"),
            (4, b'f') => (H::From, b"from"),
            (4, b'c') => (H::CSeq, b"cseq"),
            (4, b'p') => (H::Path, b"path"),
            (4, b'd') => (H::Date, b"date"),
            (5, b'r') => (H::Route, b"route"),
            (5, b'a') => (H::Allow, b"allow"),
            (5, b'e') => (H::Event, b"event"),
            (6, b'a') => (H::Accept, b"accept"),
            (6, b's') => (H::Server, b"server"),
            (7, b'c') if name[1] | 0x20 == b'a' => (H::CallId, b"call-id"),
            (7, b'c') => (H::Contact, b"contact"),
            (7, b'e') => (H::Expires, b"expires"),
            (7, b'r') => (H::Require, b"require"),
            (7, b's') => (H::Subject, b"subject"),
            (7, b'w') => (H::Warning, b"warning"),
            (8, b'i') => (H::Identity, b"identity"),
            (8, b'r') => (H::ReferTo, b"refer-to"),
            (9, b's') => (H::Supported, b"supported"),
            (9, b't') => (H::Timestamp, b"timestamp"),
            (10, b'u') => (H::UserAgent, b"user-agent"),
            (11, b'm') => (H::MinExpires, b"min-expires"),
            (11, b'u') => (H::Unsupported, b"unsupported"),
            (11, b'r') if name[2] | 0x20 == b'f' => (H::ReferredBy, b"referred-by"),
            (11, b'r') => (H::RetryAfter, b"retry-after"),
            (12, b'm') => (H::MaxForwards, b"max-forwards"),
            (12, b'r') => (H::RecordRoute, b"record-route"),
            (12, b'c') => (H::ContentType, b"content-type"),
            (12, b'a') => (H::AllowEvents, b"allow-events"),
            (13, b'a') => (H::Authorization, b"authorization"),
            (13, b'p') => (H::ProxyRequire, b"proxy-require"),
            (13, b'i') => (H::IdentityInfo, b"identity-info"),
            (14, b'c') => (H::ContentLength, b"content-length"),
            (14, b'r') => (H::RejectContact, b"reject-contact"),
            (14, b'a') => (H::AcceptContact, b"accept-contact"),
            (15, b's') => (H::SessionExpires, b"session-expires"),
            (16, b'c') => (H::ContentEncoding, b"content-encoding"),
            (16, b'w') => (H::WwwAuthenticate, b"www-authenticate"),
            (18, b'p') => (H::ProxyAuthenticate, b"proxy-authenticate"),
            (19, b'p') => (H::ProxyAuthorization, b"proxy-authorization"),
            (19, b'a') => (H::AuthenticationInfo, b"authentication-info"),
            (19, b'r') => (H::RequestDisposition, b"request-disposition"),
            _ => return H::Other,
        };
        if eq_lowercase(name, lower) {
            candidate
        } else {
            H::Other
        }
    }

    /// A compact form (§7.3.3), already in lower case.
    fn from_compact(lower: u8) -> HeaderName {
        use HeaderName as H;
        match lower {
            b'v' => H::Via,
            b'f' => H::From,
            b't' => H::To,
            b'i' => H::CallId,
            b'm' => H::Contact,
            b'l' => H::ContentLength,
            b'c' => H::ContentType,
            b'e' => H::ContentEncoding,
            b'k' => H::Supported,
            b's' => H::Subject,
            b'o' => H::Event,
            b'u' => H::AllowEvents,
            b'r' => H::ReferTo,
            b'b' => H::ReferredBy,
            b'x' => H::SessionExpires,
            b'y' => H::Identity,
            b'n' => H::IdentityInfo,
            b'j' => H::RejectContact,
            b'a' => H::AcceptContact,
            b'd' => H::RequestDisposition,
            _ => H::Other,
        }
    }

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
    fn dispatch_agrees_with_a_linear_search() {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for h in HeaderName::ALL {
            let canonical = h.canonical().unwrap();
            assert_eq!(HeaderName::from_bytes(canonical.as_bytes()), *h);
            names.push(canonical.as_bytes().to_vec());
            names.push(canonical.to_ascii_lowercase().into_bytes());
            names.push(canonical.to_ascii_uppercase().into_bytes());
            // Same length and first letter, one byte off.
            for i in 0..canonical.len() {
                let mut near = canonical.as_bytes().to_vec();
                near[i] ^= 0x01;
                names.push(near.clone());
                near[i] ^= 0x21;
                names.push(near);
            }
        }
        for b in 0..=255u8 {
            names.push(vec![b]);
            names.push(vec![b, b'o']);
            names.push(vec![b; 7]);
        }
        names.extend(
            [
                &b""[..],
                b"X-Custom",
                b"Call-IE",
                b"Contacts",
                b"Referred-Bz",
            ]
            .map(<[u8]>::to_vec),
        );
        for name in names {
            assert_eq!(
                HeaderName::from_bytes(&name),
                HeaderName::from_bytes_linear(&name),
                "{:?}",
                String::from_utf8_lossy(&name)
            );
        }
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
