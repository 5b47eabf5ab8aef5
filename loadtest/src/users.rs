//! Who the requests are for: users named by a printf-like pattern over a range (`--users
//! user%06d --first N --user-count N`), or listed in a CSV file (`--users-csv FILE`) with their
//! passwords and, optionally, their domains, for servers whose users already exist. Request `j`
//! is for user `j mod count` either way, so every shard finds its users without coordination.
//!
//! The CSV format: one user a line, `user,password[,domain]`; no quoting (no field holds a
//! comma), an empty password means none (a challenge to that user is a failure), lines that are
//! empty or start with `#` are skipped, and a first line `user,password` or
//! `user,password,domain` is a header. Users go into URIs unescaped, so a user is unreserved
//! characters only (RFC 3261 §25.1), and a domain is a host with an optional port.

use std::sync::Arc;

/// The users of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    Pattern(UserPattern),
    Listed(Arc<[ListedUser]>),
}

/// One line of a users CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    pub user: String,
    pub password: Option<String>,
    pub domain: Option<String>,
}

impl From<UserPattern> for Users {
    fn from(pattern: UserPattern) -> Users {
        Users::Pattern(pattern)
    }
}

impl Users {
    /// The user of request `j` (the users are cycled through).
    pub fn user(&self, j: u64) -> String {
        match self {
            Users::Pattern(p) => p.user(j),
            Users::Listed(list) => list[index(j, list.len())].user.clone(),
        }
    }

    /// The domain of request `j`'s user, when the CSV names one.
    pub fn domain(&self, j: u64) -> Option<&str> {
        match self {
            Users::Pattern(_) => None,
            Users::Listed(list) => list[index(j, list.len())].domain.as_deref(),
        }
    }

    /// The password of request `j`'s user, when the CSV gives one.
    pub fn password(&self, j: u64) -> Option<&str> {
        match self {
            Users::Pattern(_) => None,
            Users::Listed(list) => list[index(j, list.len())].password.as_deref(),
        }
    }

    /// Whether any user has a password (only a CSV gives them).
    pub fn any_password(&self) -> bool {
        match self {
            Users::Pattern(_) => false,
            Users::Listed(list) => list.iter().any(|u| u.password.is_some()),
        }
    }

    /// How many users there are.
    pub fn count(&self) -> u64 {
        match self {
            Users::Pattern(p) => p.count,
            Users::Listed(list) => list.len() as u64,
        }
    }

    /// Parses a users CSV (see the module's documentation); errors name the line.
    pub fn parse_csv(text: &str) -> Result<Users, String> {
        let mut list = Vec::new();
        let mut first = true;
        for (n, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if std::mem::take(&mut first)
                && matches!(line, "user,password" | "user,password,domain")
            {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let fields: Vec<&str> = line.split(',').collect();
            let (user, password, domain) = match fields[..] {
                [user, password] => (user, password, None),
                [user, password, domain] => (user, password, Some(domain)),
                _ => return Err(at("not user,password[,domain]".into())),
            };
            check_user(user).map_err(at)?;
            if let Some(domain) = domain {
                check_domain(domain).map_err(at)?;
            }
            list.push(ListedUser {
                user: user.to_owned(),
                password: (!password.is_empty()).then(|| password.to_owned()),
                domain: domain.map(str::to_owned),
            });
        }
        if list.is_empty() {
            return Err("no users".into());
        }
        Ok(Users::Listed(list.into()))
    }
}

fn index(j: u64, len: usize) -> usize {
    (j % len as u64) as usize
}

/// A user name goes into URIs unescaped: non-empty, unreserved characters only.
fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty()
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b))
    {
        return Err(format!(
            "user names must be unreserved characters: {user:?}"
        ));
    }
    Ok(())
}

/// A domain: what `sip:DOMAIN` parses as, a host and an optional port.
fn check_domain(domain: &str) -> Result<(), String> {
    let ok = !domain.is_empty()
        && !domain.contains(['@', ';', '?', '>', ' '])
        && sipshard_net::Uri::parse(&format!("sip:{domain}")).is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!("not a domain (host[:port]): {domain:?}"))
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
        check_user(&user.user(0))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn users_from_csv() {
        let text = "user,password,domain\r\n# a comment\nalice,secret\n\nbob,,example.org\ncarol,p,w,127.0.0.1:5070\n";
        // A password may hold anything but a comma: "p,w" is two fields.
        assert_eq!(
            Users::parse_csv(text),
            Err("line 6: not user,password[,domain]".into())
        );
        let text = "user,password,domain\r\n# a comment\nalice,secret\n\nbob,,example.org\ncarol,p w,127.0.0.1:5070\n";
        let users = Users::parse_csv(text).unwrap();
        assert_eq!(users.count(), 3);
        assert_eq!(
            (0..4).map(|j| users.user(j)).collect::<Vec<_>>(),
            ["alice", "bob", "carol", "alice"]
        );
        assert_eq!(
            (0..3).map(|j| users.password(j)).collect::<Vec<_>>(),
            [Some("secret"), None, Some("p w")]
        );
        assert_eq!(
            (0..3).map(|j| users.domain(j)).collect::<Vec<_>>(),
            [None, Some("example.org"), Some("127.0.0.1:5070")]
        );
        // A header only as the first line; then it is a user named "user".
        let users = Users::parse_csv("alice,a\nuser,password\n").unwrap();
        assert_eq!(users.user(1), "user");
        for (bad, why) in [
            ("", "no users"),
            ("# only a comment\n", "no users"),
            ("alice\n", "line 1: not user,password[,domain]"),
            (
                "al ice,x\n",
                "line 1: user names must be unreserved characters: \"al ice\"",
            ),
            (
                ",x\n",
                "line 1: user names must be unreserved characters: \"\"",
            ),
            ("a,x,b@c\n", "line 1: not a domain (host[:port]): \"b@c\""),
            (
                "a,x,h:99999\n",
                "line 1: not a domain (host[:port]): \"h:99999\"",
            ),
        ] {
            assert_eq!(Users::parse_csv(bad), Err(why.to_owned()), "{bad:?}");
        }
    }
}
