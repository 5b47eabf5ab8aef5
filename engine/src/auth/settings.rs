//! The authenticator's settings, typed and validated once (the engine maps its configuration
//! keys here; nothing in this module reads a file).
//!
//! Flexisip's `[module::Authentication]` keys and where they land:
//! `auth-domains` → [`AuthDomains`], `available-algorithms` → [`AuthSettings::algorithms`],
//! `nonce-expires` → [`AuthSettings::nonce_lifetime_s`], `trusted-hosts` (resolved to addresses by
//! the caller) → [`AuthSettings::trusted_hosts`]; `file-path` is read by the caller and parsed by
//! [`super::PasswordDb::parse`]. sipshard adds `nonce-secret` → [`AuthSettings::nonce_secret`],
//! the key every node of a cluster shares so that any node accepts any node's nonces.

use std::net::IpAddr;

use super::digest::Algorithm;
use super::nonce::MIN_SECRET_BYTES;
use super::throttle::ThrottlePolicy;

/// Domains whose users are challenged (`auth-domains`); requests from other domains are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDomains {
    /// `*`: every domain.
    Any,
    /// Lowercased domain names.
    Listed(Vec<String>),
}

impl AuthDomains {
    /// Parses `auth-domains`: domain names separated by white space; `*` anywhere means any.
    pub fn parse(text: &str) -> Result<AuthDomains, AuthSettingsError> {
        let mut domains = Vec::new();
        for word in text.split_ascii_whitespace() {
            if word == "*" {
                return Ok(AuthDomains::Any);
            }
            domains.push(word.to_ascii_lowercase());
        }
        if domains.is_empty() {
            return Err(AuthSettingsError::NoDomains);
        }
        Ok(AuthDomains::Listed(domains))
    }

    pub fn contains(&self, domain: &str) -> bool {
        match self {
            AuthDomains::Any => true,
            AuthDomains::Listed(domains) => domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }
}

/// Table sizes and lockout schedules: every table the authenticator keeps is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Nonces whose highest nonce-count a shard remembers.
    pub nonce_table_entries: usize,
    /// Source addresses, and (address, user) pairs, each throttle table remembers.
    pub throttle_table_entries: usize,
    pub per_source: ThrottlePolicy,
    pub per_source_and_user: ThrottlePolicy,
}

impl Default for AuthLimits {
    fn default() -> AuthLimits {
        AuthLimits {
            nonce_table_entries: 16_384,
            throttle_table_entries: 16_384,
            per_source: ThrottlePolicy::PER_SOURCE,
            per_source_and_user: ThrottlePolicy::PER_SOURCE_AND_USER,
        }
    }
}

/// Everything the [`super::Authenticator`] needs besides the password database.
#[derive(Clone)]
pub struct AuthSettings {
    pub domains: AuthDomains,
    /// Offered algorithms, strongest first, no repeats, at least one.
    pub algorithms: Vec<Algorithm>,
    pub nonce_lifetime_s: u64,
    /// At least 16 bytes; `Debug` hides it.
    pub nonce_secret: Vec<u8>,
    /// An `opaque` to send in every challenge and require back (RFC 2617 §3.2.1); `None` sends
    /// none.
    pub opaque: Option<String>,
    /// Addresses whose requests are never challenged (cluster nodes, trusted gateways).
    pub trusted_hosts: Vec<IpAddr>,
    pub limits: AuthLimits,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("domains", &self.domains)
            .field("algorithms", &self.algorithms)
            .field("nonce_lifetime_s", &self.nonce_lifetime_s)
            .field("nonce_secret", &"<hidden>")
            .field("opaque", &self.opaque)
            .field("trusted_hosts", &self.trusted_hosts)
            .field("limits", &self.limits)
            .finish()
    }
}

impl AuthSettings {
    /// Settings from the configuration's values, validated; limits at their defaults and no
    /// `opaque` (set the fields afterwards to change them).
    pub fn new(
        auth_domains: &str,
        available_algorithms: &str,
        nonce_expires_s: u64,
        nonce_secret: &[u8],
        trusted_hosts: &[IpAddr],
    ) -> Result<AuthSettings, AuthSettingsError> {
        if nonce_secret.len() < MIN_SECRET_BYTES {
            return Err(AuthSettingsError::SecretTooShort {
                len_bytes: nonce_secret.len(),
            });
        }
        if nonce_expires_s == 0 {
            return Err(AuthSettingsError::ZeroNonceLifetime);
        }
        Ok(AuthSettings {
            domains: AuthDomains::parse(auth_domains)?,
            algorithms: parse_algorithms(available_algorithms)?,
            nonce_lifetime_s: nonce_expires_s,
            nonce_secret: nonce_secret.to_vec(),
            opaque: None,
            trusted_hosts: trusted_hosts.iter().map(|ip| ip.to_canonical()).collect(),
            limits: AuthLimits::default(),
        })
    }
}

/// Parses `available-algorithms` (`MD5 SHA-256`, white space or commas between names, any
/// case) into the offer order: strongest first (RFC 8760 §2.4), repeats dropped.
pub fn parse_algorithms(text: &str) -> Result<Vec<Algorithm>, AuthSettingsError> {
    let mut algorithms = Vec::new();
    for word in text
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
    {
        let algorithm = Algorithm::from_name(word.as_bytes())
            .ok_or_else(|| AuthSettingsError::UnknownAlgorithm(word.chars().take(32).collect()))?;
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    if algorithms.is_empty() {
        return Err(AuthSettingsError::NoAlgorithms);
    }
    algorithms.sort_by_key(|a| a.rank());
    Ok(algorithms)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSettingsError {
    /// `auth-domains` is empty.
    NoDomains,
    /// `available-algorithms` is empty.
    NoAlgorithms,
    /// A name in `available-algorithms` that is not an RFC 7616 algorithm.
    UnknownAlgorithm(String),
    /// `nonce-secret` shorter than 16 bytes.
    SecretTooShort { len_bytes: usize },
    /// `nonce-expires` of 0.
    ZeroNonceLifetime,
}

impl std::fmt::Display for AuthSettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSettingsError::NoDomains => f.write_str("auth-domains names no domain"),
            AuthSettingsError::NoAlgorithms => {
                f.write_str("available-algorithms names no algorithm")
            }
            AuthSettingsError::UnknownAlgorithm(name) => write!(
                f,
                "available-algorithms: unknown algorithm `{name}` (known: MD5, SHA-256, \
                 SHA-512-256 and their -sess variants)"
            ),
            AuthSettingsError::SecretTooShort { len_bytes } => write!(
                f,
                "nonce-secret has {len_bytes} bytes; at least {MIN_SECRET_BYTES} are needed"
            ),
            AuthSettingsError::ZeroNonceLifetime => f.write_str("nonce-expires must be above 0"),
        }
    }
}

impl std::error::Error for AuthSettingsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_are_ordered_strongest_first() {
        assert_eq!(
            parse_algorithms("MD5 SHA-256"),
            Ok(vec![Algorithm::Sha256, Algorithm::Md5])
        );
        assert_eq!(
            parse_algorithms("md5,sha-512-256  MD5"),
            Ok(vec![Algorithm::Sha512_256, Algorithm::Md5])
        );
        assert_eq!(parse_algorithms(" "), Err(AuthSettingsError::NoAlgorithms));
        assert_eq!(
            parse_algorithms("MD5 SHA1"),
            Err(AuthSettingsError::UnknownAlgorithm("SHA1".into()))
        );
    }

    #[test]
    fn domains() {
        let listed = AuthDomains::parse("Example.org  sip.example.com").expect("two domains");
        assert!(listed.contains("example.ORG"));
        assert!(!listed.contains("example.net"));
        assert_eq!(AuthDomains::parse("a *"), Ok(AuthDomains::Any));
        assert_eq!(AuthDomains::parse(""), Err(AuthSettingsError::NoDomains));
    }

    #[test]
    fn validation() {
        assert_eq!(
            AuthSettings::new("a", "MD5", 300, b"short", &[]).map(|_| ()),
            Err(AuthSettingsError::SecretTooShort { len_bytes: 5 })
        );
        assert_eq!(
            AuthSettings::new("a", "MD5", 0, &[7; 32], &[]).map(|_| ()),
            Err(AuthSettingsError::ZeroNonceLifetime)
        );
        let settings = AuthSettings::new("a", "MD5", 300, &[7; 32], &[]).expect("valid");
        assert!(!format!("{settings:?}").contains("7, 7"));
    }
}
