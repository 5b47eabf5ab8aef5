//! The password file, in Flexisip's format (`[module::Authentication] db-implementation=file`,
//! `file-path`), so an existing Flexisip deployment's file works unchanged:
//!
//! ```text
//! version:1
//! # comments and blank lines are ignored
//! alice@example.org clrtxt:secret ;
//! bob@example.org md5:97ffb1c6af18e5687bf26cdf35e45d30 ;
//! carol@example.org clrtxt:pw md5:<32 hex> sha256:<64 hex> ;
//! ```
//!
//! Each entry is `user@domain`, one or more credentials separated by spaces, and a lone `;`.
//! Flexisip allows a phone-number alias after the `;`; it is accepted and ignored. `md5:` and
//! `sha256:` hold `H(user:domain:password)`, the HA1 of RFC 2617 §3.2.2.2 with the domain as
//! realm, so they serve only that algorithm and only when the realm is the domain; `clrtxt:`
//! serves every algorithm and realm.
//!
//! The text comes from the caller (the engine reads the file): this module reads nothing itself.
//! Every error names its line and never quotes a secret.

use std::collections::HashMap;

use super::digest::{Algorithm, DigestHash, DigestHex, password_ha1};

/// What went wrong in the password file, and where (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFileError {
    pub line: usize,
    pub kind: PasswordFileErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordFileErrorKind {
    /// The file is empty, or its first line is not a `version:` line.
    MissingVersion,
    /// A `version:` other than 1.
    UnsupportedVersion(String),
    /// The entry's first word is not `user@domain`.
    BadIdentity,
    /// No lone `;` ends the credentials.
    MissingTerminator,
    /// Nothing between the identity and the `;`.
    NoCredentials,
    /// A credential of a kind other than `clrtxt`, `md5`, `sha256` (the kind is named).
    UnknownCredentialKind(String),
    /// `clrtxt:` with nothing after it.
    EmptyPassword,
    /// An `md5:`/`sha256:` value that is not 32/64 hex digits (the kind is named).
    BadHash(&'static str),
    /// The same kind twice in one entry (the kind is named).
    DuplicateCredential(&'static str),
    /// The same `user@domain` on an earlier line.
    DuplicateUser { first_line: usize },
    /// More than one word after the `;`.
    TrailingText,
    /// The line is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "password file line {}: {}", self.line, self.kind)
    }
}

/// What is wrong, without the line (for callers that write `FILE:LINE: ` themselves).
impl std::fmt::Display for PasswordFileErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use PasswordFileErrorKind as K;
        match self {
            K::MissingVersion => f.write_str("the first line must be `version:1`"),
            K::UnsupportedVersion(v) => write!(f, "unsupported version `{v}` (only 1 is known)"),
            K::BadIdentity => f.write_str("an entry must start with `user@domain`"),
            K::MissingTerminator => f.write_str("the credentials must end with ` ;`"),
            K::NoCredentials => f.write_str("no credentials before the `;`"),
            K::UnknownCredentialKind(kind) => write!(
                f,
                "unknown credential kind `{kind}` (expected clrtxt:, md5: or sha256:)"
            ),
            K::EmptyPassword => f.write_str("`clrtxt:` with an empty password"),
            K::BadHash(kind) => write!(
                f,
                "the {kind}: value must be {} hex digits",
                if *kind == "md5" { 32 } else { 64 }
            ),
            K::DuplicateCredential(kind) => write!(f, "{kind}: given twice"),
            K::DuplicateUser { first_line } => {
                write!(f, "this user is already defined on line {first_line}")
            }
            K::TrailingText => f.write_str("only one phone alias may follow the `;`"),
            K::NotUtf8 => f.write_str("not valid UTF-8"),
        }
    }
}

impl std::error::Error for PasswordFileError {}

/// One user's credentials. `Debug` hides them.
#[derive(Clone, Default)]
pub struct UserCredentials {
    clear_text: Option<String>,
    md5_ha1: Option<DigestHex>,
    sha256_ha1: Option<DigestHex>,
    line: usize,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("clrtxt", &self.clear_text.as_ref().map(|_| "<hidden>"))
            .field("md5", &self.md5_ha1.as_ref().map(|_| "<hidden>"))
            .field("sha256", &self.sha256_ha1.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl UserCredentials {
    /// The password HA1 (`H(username:realm:password)`) for `algorithm`, if these credentials
    /// can produce it: from the clear-text password always; from a stored hash only for its own
    /// hash function and only when `realm` is the domain it was computed for.
    pub fn ha1(
        &self,
        algorithm: Algorithm,
        username: &str,
        realm: &str,
        domain: &str,
    ) -> Option<DigestHex> {
        let hash = algorithm.hash();
        if let Some(password) = &self.clear_text {
            return Some(password_ha1(
                hash,
                username.as_bytes(),
                realm.as_bytes(),
                password.as_bytes(),
            ));
        }
        if !realm.eq_ignore_ascii_case(domain) {
            return None;
        }
        match hash {
            DigestHash::Md5 => self.md5_ha1,
            DigestHash::Sha256 => self.sha256_ha1,
            DigestHash::Sha512_256 => None,
        }
    }

    /// Whether these credentials serve `algorithm` in the user's own domain.
    pub fn supports(&self, algorithm: Algorithm) -> bool {
        self.clear_text.is_some()
            || match algorithm.hash() {
                DigestHash::Md5 => self.md5_ha1.is_some(),
                DigestHash::Sha256 => self.sha256_ha1.is_some(),
                DigestHash::Sha512_256 => false,
            }
    }
}

/// Users by domain and name. Domains are compared case-insensitively (they are host names);
/// user names exactly (RFC 3261 §19.1.4 compares the user part case-sensitively).
#[derive(Debug, Clone, Default)]
pub struct PasswordDb {
    /// Lowercased domain → user name → credentials.
    domains: HashMap<String, HashMap<String, UserCredentials>>,
    users: usize,
}

impl PasswordDb {
    /// Parses the whole file.
    pub fn parse(text: &[u8]) -> Result<PasswordDb, PasswordFileError> {
        let mut db = PasswordDb::default();
        let mut lines = text.split(|b| *b == b'\n').enumerate().map(|(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            (i + 1, raw)
        });
        let Some((_, first)) = lines.next() else {
            return Err(PasswordFileError {
                line: 1,
                kind: PasswordFileErrorKind::MissingVersion,
            });
        };
        check_version(first)?;
        for (line, raw) in lines {
            let text = std::str::from_utf8(raw).map_err(|_| PasswordFileError {
                line,
                kind: PasswordFileErrorKind::NotUtf8,
            })?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let (user, domain, credentials) =
                parse_entry(text, line).map_err(|kind| PasswordFileError { line, kind })?;
            let users = db.domains.entry(domain).or_default();
            if let Some(existing) = users.get(&user) {
                return Err(PasswordFileError {
                    line,
                    kind: PasswordFileErrorKind::DuplicateUser {
                        first_line: existing.line,
                    },
                });
            }
            users.insert(user, credentials);
            db.users += 1;
        }
        Ok(db)
    }

    /// The credentials of `user` in `domain` (any case).
    pub fn lookup(&self, user: &str, domain: &str) -> Option<&UserCredentials> {
        let users = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            self.domains.get(&domain.to_ascii_lowercase())
        } else {
            self.domains.get(domain)
        };
        users?.get(user)
    }

    pub fn len(&self) -> usize {
        self.users
    }

    pub fn is_empty(&self) -> bool {
        self.users == 0
    }

    /// `user@domain` of every user who cannot authenticate with `algorithm` (a hash for another
    /// algorithm only): worth a warning at start-up, because a user agent that picks that
    /// algorithm (the strongest it knows, RFC 8760 §2.4) will fail for them.
    pub fn users_without(&self, algorithm: Algorithm) -> Vec<String> {
        let mut missing: Vec<String> = self
            .domains
            .iter()
            .flat_map(|(domain, users)| {
                users
                    .iter()
                    .filter(|(_, c)| !c.supports(algorithm))
                    .map(move |(user, _)| format!("{user}@{domain}"))
            })
            .collect();
        missing.sort();
        missing
    }
}

fn check_version(first: &[u8]) -> Result<(), PasswordFileError> {
    let error = |kind| PasswordFileError { line: 1, kind };
    let text = std::str::from_utf8(first)
        .map_err(|_| error(PasswordFileErrorKind::NotUtf8))?
        .trim();
    let Some(version) = text.strip_prefix("version:") else {
        return Err(error(PasswordFileErrorKind::MissingVersion));
    };
    match version.trim() {
        "1" => Ok(()),
        other => Err(error(PasswordFileErrorKind::UnsupportedVersion(
            other.chars().take(32).collect(),
        ))),
    }
}

/// One entry: `user@domain cred… ; [alias]` → (user, lowercased domain, credentials).
fn parse_entry(
    text: &str,
    line: usize,
) -> Result<(String, String, UserCredentials), PasswordFileErrorKind> {
    use PasswordFileErrorKind as K;
    let mut words = text.split_ascii_whitespace();
    let identity = words.next().ok_or(K::BadIdentity)?;
    let (user, domain) = identity.rsplit_once('@').ok_or(K::BadIdentity)?;
    if user.is_empty() || domain.is_empty() || identity.ends_with(';') {
        return Err(K::BadIdentity);
    }
    let mut credentials = UserCredentials {
        line,
        ..UserCredentials::default()
    };
    let mut terminated = false;
    let mut any = false;
    for word in words.by_ref() {
        if word == ";" {
            terminated = true;
            break;
        }
        let (kind, value) = word.split_once(':').ok_or(K::MissingTerminator)?;
        match kind {
            "clrtxt" => {
                if value.is_empty() {
                    return Err(K::EmptyPassword);
                }
                if credentials.clear_text.replace(value.to_owned()).is_some() {
                    return Err(K::DuplicateCredential("clrtxt"));
                }
            }
            "md5" => {
                let hash =
                    DigestHex::parse(value.as_bytes(), DigestHash::Md5).ok_or(K::BadHash("md5"))?;
                if credentials.md5_ha1.replace(hash).is_some() {
                    return Err(K::DuplicateCredential("md5"));
                }
            }
            "sha256" => {
                let hash = DigestHex::parse(value.as_bytes(), DigestHash::Sha256)
                    .ok_or(K::BadHash("sha256"))?;
                if credentials.sha256_ha1.replace(hash).is_some() {
                    return Err(K::DuplicateCredential("sha256"));
                }
            }
            other => {
                return Err(K::UnknownCredentialKind(other.chars().take(32).collect()));
            }
        }
        any = true;
    }
    if !terminated {
        return Err(K::MissingTerminator);
    }
    if !any {
        return Err(K::NoCredentials);
    }
    // An optional phone alias, then nothing.
    words.next();
    if words.next().is_some() {
        return Err(K::TrailingText);
    }
    Ok((user.to_owned(), domain.to_ascii_lowercase(), credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(text: &str) -> (usize, PasswordFileErrorKind) {
        match PasswordDb::parse(text.as_bytes()) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => (e.line, e.kind),
        }
    }

    #[test]
    fn parses_every_form() {
        let md5 = password_ha1(DigestHash::Md5, b"bob", b"example.org", b"pw");
        let sha = password_ha1(DigestHash::Sha256, b"bob", b"example.org", b"pw");
        let text = format!(
            "version:1\r\n\
             \n\
             # a comment\n\
             alice@Example.ORG clrtxt:s3cr:et;x ;\n\
             \tbob@example.org md5:{} sha256:{} ; +33612345678\n",
            md5.as_str().to_ascii_uppercase(),
            sha.as_str()
        );
        let db = PasswordDb::parse(text.as_bytes()).expect("valid file");
        assert_eq!(db.len(), 2);
        let alice = db.lookup("alice", "example.org").expect("alice");
        assert_eq!(
            alice.ha1(Algorithm::Md5, "alice", "example.org", "example.org"),
            Some(password_ha1(
                DigestHash::Md5,
                b"alice",
                b"example.org",
                b"s3cr:et;x"
            ))
        );
        assert!(alice.supports(Algorithm::Sha512_256));
        assert!(db.lookup("Alice", "example.org").is_none());
        assert!(db.lookup("alice", "EXAMPLE.org").is_some());

        let bob = db.lookup("bob", "example.org").expect("bob");
        assert_eq!(
            bob.ha1(Algorithm::Md5, "bob", "example.org", "example.org"),
            Some(md5)
        );
        assert_eq!(
            bob.ha1(Algorithm::Sha256Sess, "bob", "example.org", "example.org"),
            Some(sha)
        );
        assert_eq!(
            bob.ha1(Algorithm::Sha512_256, "bob", "example.org", "example.org"),
            None
        );
        assert_eq!(
            bob.ha1(Algorithm::Md5, "bob", "other.realm", "example.org"),
            None,
            "a stored hash serves only the realm it was computed for"
        );
        assert_eq!(
            db.users_without(Algorithm::Sha512_256),
            vec!["bob@example.org".to_owned()]
        );
        assert!(!format!("{bob:?}").contains(md5.as_str()));
        assert!(!format!("{alice:?}").contains("s3cr"));
    }

    #[test]
    fn rejects_bad_files_with_line_numbers() {
        use PasswordFileErrorKind as K;
        assert_eq!(kind_of(""), (1, K::MissingVersion));
        assert_eq!(kind_of("alice@x clrtxt:a ;\n"), (1, K::MissingVersion));
        assert_eq!(
            kind_of("version:2\n"),
            (1, K::UnsupportedVersion("2".into()))
        );
        assert_eq!(kind_of("version:1\nalice clrtxt:a ;"), (2, K::BadIdentity));
        assert_eq!(kind_of("version:1\n@x clrtxt:a ;"), (2, K::BadIdentity));
        assert_eq!(kind_of("version:1\nalice@ clrtxt:a ;"), (2, K::BadIdentity));
        assert_eq!(
            kind_of("version:1\n\nalice@x clrtxt:a"),
            (3, K::MissingTerminator)
        );
        assert_eq!(
            kind_of("version:1\nalice@x clrtxt:a;"),
            (2, K::MissingTerminator)
        );
        assert_eq!(kind_of("version:1\nalice@x ;"), (2, K::NoCredentials));
        assert_eq!(
            kind_of("version:1\nalice@x sha1:abc ;"),
            (2, K::UnknownCredentialKind("sha1".into()))
        );
        assert_eq!(
            kind_of("version:1\nalice@x clrtxt: ;"),
            (2, K::EmptyPassword)
        );
        assert_eq!(
            kind_of("version:1\nalice@x md5:abc ;"),
            (2, K::BadHash("md5"))
        );
        assert_eq!(
            kind_of(&format!("version:1\nalice@x sha256:{} ;", "g".repeat(64))),
            (2, K::BadHash("sha256"))
        );
        assert_eq!(
            kind_of("version:1\nalice@x clrtxt:a clrtxt:b ;"),
            (2, K::DuplicateCredential("clrtxt"))
        );
        assert_eq!(
            kind_of("version:1\nalice@x clrtxt:a ;\n# c\nalice@X clrtxt:b ;"),
            (4, K::DuplicateUser { first_line: 2 })
        );
        assert_eq!(
            kind_of("version:1\nalice@x clrtxt:a ; +1 +2"),
            (2, K::TrailingText)
        );
        let (line, kind) = {
            let e = PasswordDb::parse(b"version:1\nalice@x clrtxt:\xff ;").expect_err("not UTF-8");
            (e.line, e.kind)
        };
        assert_eq!((line, kind), (2, K::NotUtf8));
    }

    #[test]
    fn errors_never_quote_secrets() {
        let e = PasswordDb::parse(b"version:1\nalice@x clrtxt:hunter2 clrtxt:hunter3 ;")
            .expect_err("duplicate");
        let shown = e.to_string();
        assert!(shown.starts_with("password file line 2: "), "{shown}");
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
