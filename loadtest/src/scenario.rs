//! The requests of each scenario, written with `sipshard_net::MessageWriter`.

use std::net::SocketAddr;

use sipshard_net::MessageWriter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// OPTIONS to the target.
    Options,
    /// REGISTER of users taken in turn from `users`, each with its own contact.
    Register {
        users: UserPattern,
        /// The `Expires` header (0 unregisters).
        expires: u32,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Options => "options",
            Scenario::Register { .. } => "register",
        }
    }
}

/// User names from a printf-like pattern (`user%06d`, `%d`) over `first..first + count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPattern {
    prefix: String,
    width: usize,
    zero_pad: bool,
    suffix: String,
    pub first: u64,
    pub count: u64,
}

impl UserPattern {
    pub fn parse(pattern: &str, first: u64, count: u64) -> Result<UserPattern, String> {
        if count == 0 {
            return Err("the user range is empty".into());
        }
        let bad = || format!("user pattern needs exactly one %d (or %0Nd): {pattern}");
        let start = pattern.find('%').ok_or_else(bad)?;
        let rest = &pattern[start + 1..];
        let d = rest.find('d').ok_or_else(bad)?;
        let spec = &rest[..d];
        if !spec.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let suffix = &rest[d + 1..];
        if suffix.contains('%') {
            return Err(bad());
        }
        let width = if spec.is_empty() {
            0
        } else {
            spec.parse().map_err(|_| bad())?
        };
        let user = UserPattern {
            prefix: pattern[..start].to_owned(),
            width,
            zero_pad: spec.starts_with('0'),
            suffix: suffix.to_owned(),
            first,
            count,
        };
        // Users go into URIs unescaped: only unreserved characters.
        let sample = user.user(0);
        if !sample
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b))
        {
            return Err(format!(
                "user names must be unreserved characters: {sample}"
            ));
        }
        Ok(user)
    }

    /// The user of request `j` (the range is cycled through).
    pub fn user(&self, j: u64) -> String {
        let n = self.first + j % self.count;
        if self.zero_pad {
            format!("{}{n:0w$}{}", self.prefix, self.suffix, w = self.width)
        } else {
            format!("{}{n:w$}{}", self.prefix, self.suffix, w = self.width)
        }
    }
}

/// Where requests come from and go to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub target: SocketAddr,
    /// The domain of Request-URIs and AORs (for REGISTER).
    pub domain: String,
}

/// Writes request `j` with top Via branch `branch` into `out`.
pub fn write_request(
    out: &mut Vec<u8>,
    scenario: &Scenario,
    ends: &Endpoints,
    j: u64,
    branch: &str,
) {
    let local = ends.local;
    let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
    let call_id = format!("{j}-{branch}@{}", local.ip());
    match scenario {
        Scenario::Options => {
            let uri = format!("sip:{}", ends.target);
            let mut w = MessageWriter::request(out, "OPTIONS", &uri);
            w.header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &format!("<sip:sipshard-load@{local}>;tag={j}"))
                .header("To", &format!("<{uri}>"))
                .header("Call-ID", &call_id)
                .header("CSeq", "1 OPTIONS")
                .header("Accept", "application/sdp");
            w.finish(None, b"");
        }
        Scenario::Register { users, expires } => {
            let user = users.user(j);
            let domain = &ends.domain;
            let aor = format!("<sip:{user}@{domain}>");
            let mut w = MessageWriter::request(out, "REGISTER", &format!("sip:{domain}"));
            w.header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &format!("{aor};tag={j}"))
                .header("To", &aor)
                .header("Call-ID", &call_id)
                .header("CSeq", "1 REGISTER")
                // Unique per user: the user's name at this generator's address.
                .header("Contact", &format!("<sip:{user}@{local}>"))
                .header("Expires", &expires.to_string());
            w.finish(None, b"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipshard_net::{Message, Method};

    fn ends() -> Endpoints {
        Endpoints {
            local: "127.0.0.1:5070".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
            domain: "example.org".into(),
        }
    }

    #[test]
    fn user_patterns() {
        let p = UserPattern::parse("user%06d", 5, 3).unwrap();
        assert_eq!(
            [p.user(0), p.user(2), p.user(3)],
            ["user000005", "user000007", "user000005"]
        );
        let p = UserPattern::parse("%d-x", 0, 100).unwrap();
        assert_eq!(p.user(42), "42-x");
        // Space padding would put spaces in URIs.
        assert!(UserPattern::parse("u%4d", 0, 100).is_err());
        for bad in ["user", "user%s", "%d%d", "a b%d", "u%x6d"] {
            assert!(UserPattern::parse(bad, 0, 10).is_err(), "{bad}");
        }
        assert!(UserPattern::parse("u%d", 0, 0).is_err());
    }

    #[test]
    fn requests_parse_and_validate() {
        let mut out = Vec::new();
        write_request(&mut out, &Scenario::Options, &ends(), 7, "z9hG4bK-x-7");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Options));
        assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK-x-7"));

        let users = UserPattern::parse("user%06d", 0, 1000).unwrap();
        let register = Scenario::Register {
            users,
            expires: 120,
        };
        write_request(&mut out, &register, &ends(), 1001, "z9hG4bK-x-1001");
        let msg = Message::parse_datagram(&out).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.method(), Some(Method::Register));
        assert_eq!(msg.expires_s().unwrap(), Some(120));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("REGISTER sip:example.org SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:user000001@example.org>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:user000001@127.0.0.1:5070>\r\n"),
            "{text}"
        );
    }
}
