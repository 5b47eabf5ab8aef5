//! What a registrar serves and the limits it applies (RFC 3261 §10.3 steps 1 and 7).
//!
//! The engine parses its configuration file into a [`RegistrarConfig`] once at start-up and calls
//! [`RegistrarConfig::validate`]; the registrar rules then trust it. They still never panic on a
//! configuration that skipped validation: an inconsistent one just answers 423 more often.

use std::fmt;

use sipshard_net::Host;

use crate::RegisterError;
use crate::aor::canonical_host;

/// The domains this registrar keeps bindings for (Flexisip's `reg-domains`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domains {
    /// Every domain: a registrar for whatever the Request-URI names.
    Any,
    /// Only these hosts, in canonical form: lowercase names, IPv4 addresses, IPv6 addresses in
    /// brackets (`[2001:db8::1]`). Build it with [`Domains::list`] to get that form.
    List(Vec<String>),
}

impl Domains {
    /// A list of domains from configuration text: names in any case, IPv4 addresses, IPv6
    /// addresses with or without brackets.
    pub fn list<I, S>(names: I) -> Result<Domains, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for name in names {
            let name = name.as_ref().trim();
            let bracketed;
            let text = if name.contains(':') && !name.starts_with('[') {
                bracketed = format!("[{name}]");
                bracketed.as_str()
            } else {
                name
            };
            let host = Host::parse(text).map_err(|_| ConfigError::BadDomain(name.to_owned()))?;
            let canonical = canonical_host(&host);
            if !list.contains(&canonical) {
                list.push(canonical);
            }
        }
        if list.is_empty() {
            return Err(ConfigError::NoDomains);
        }
        Ok(Domains::List(list))
    }

    /// Whether bindings for this host are kept here (compared in canonical form, so
    /// `EXAMPLE.com` is `example.com` and `[2001:DB8:0::1]` is `[2001:db8::1]`).
    pub fn serves(&self, host: &Host<'_>) -> bool {
        match self {
            Domains::Any => true,
            Domains::List(list) => {
                let host = canonical_host(host);
                list.iter().any(|d| d.eq_ignore_ascii_case(&host))
            }
        }
    }
}

/// Registrar limits. Every interval is in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    pub domains: Domains,
    /// Longer requested intervals are shortened to this (§10.3 step 7 lets the registrar
    /// shorten any interval).
    pub max_expires_s: u32,
    /// Nonzero requested intervals below this are refused with 423 and `Min-Expires` (§10.3
    /// step 7, §20.23). 0 accepts every interval.
    pub min_expires_s: u32,
    /// The interval of a contact that gives none, in its `expires` parameter or the Expires
    /// header (§10.2.1.1 leaves the choice to the registrar).
    pub default_expires_s: u32,
    /// At most this many bindings per AOR; registering more drops the least recently updated
    /// ones (Flexisip's `max-contacts-by-aor`). It bounds a shard's memory per AOR.
    pub max_contacts_per_aor: usize,
    /// At most this many AORs with bindings on one shard; a REGISTER for another AOR is answered
    /// 503 with Retry-After until some expire. It bounds a shard's memory, and the store's index
    /// is allocated for it up front so that it never rehashes while serving (a rehash of a few
    /// hundred thousand AORs stalls the shard for tens of milliseconds).
    pub max_aors_per_shard: usize,
}

impl Default for RegistrarConfig {
    /// Every domain; intervals from 60 s to one day, one hour by default; 16 contacts per AOR.
    fn default() -> Self {
        RegistrarConfig {
            domains: Domains::Any,
            max_expires_s: 86_400,
            min_expires_s: 60,
            default_expires_s: 3_600,
            max_contacts_per_aor: 16,
            max_aors_per_shard: DEFAULT_MAX_AORS_PER_SHARD,
        }
    }
}

/// Default of [`RegistrarConfig::max_aors_per_shard`]: a million AORs per core. The index it
/// reserves is virtual memory until used (about 48 MiB per shard, 2 MiB of it touched at start).
pub const DEFAULT_MAX_AORS_PER_SHARD: usize = 1 << 20;

/// Longest interval a configuration may allow: ten years, far below where `Instant` arithmetic
/// could overflow.
pub const MAX_EXPIRES_LIMIT_S: u32 = 10 * 366 * 86_400;

impl RegistrarConfig {
    /// Checks the limits once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ordered = self.min_expires_s <= self.default_expires_s
            && self.default_expires_s <= self.max_expires_s;
        if !ordered {
            return Err(ConfigError::ExpiresOutOfOrder {
                min_expires_s: self.min_expires_s,
                default_expires_s: self.default_expires_s,
                max_expires_s: self.max_expires_s,
            });
        }
        if self.default_expires_s == 0 {
            return Err(ConfigError::ZeroDefaultExpires);
        }
        if self.max_expires_s > MAX_EXPIRES_LIMIT_S {
            return Err(ConfigError::MaxExpiresTooLong {
                max_expires_s: self.max_expires_s,
            });
        }
        if self.max_contacts_per_aor == 0 {
            return Err(ConfigError::ZeroMaxContacts);
        }
        if self.max_aors_per_shard == 0 {
            return Err(ConfigError::ZeroMaxAors);
        }
        if let Domains::List(list) = &self.domains {
            if list.is_empty() {
                return Err(ConfigError::NoDomains);
            }
            for d in list {
                if Domains::list([d])? != Domains::List(vec![d.clone()]) {
                    return Err(ConfigError::BadDomain(d.clone()));
                }
            }
        }
        Ok(())
    }

    /// The interval granted for a requested one (the contact's `expires` parameter, else the
    /// Expires header; `None` when neither is present), per §10.3 step 7: 0 stays 0 (removal),
    /// a nonzero interval below `min_expires_s` is refused with 423, a longer one than
    /// `max_expires_s` is shortened.
    pub fn granted_expires_s(&self, requested_s: Option<u32>) -> Result<u32, RegisterError> {
        let requested_s = requested_s.unwrap_or(self.default_expires_s);
        if requested_s == 0 {
            return Ok(0);
        }
        if requested_s < self.min_expires_s {
            return Err(RegisterError::IntervalTooBrief {
                min_expires_s: self.min_expires_s,
            });
        }
        Ok(requested_s.min(self.max_expires_s).min(MAX_EXPIRES_LIMIT_S))
    }
}

/// A registrar configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `min_expires_s <= default_expires_s <= max_expires_s` does not hold.
    ExpiresOutOfOrder {
        min_expires_s: u32,
        default_expires_s: u32,
        max_expires_s: u32,
    },
    /// A default interval of 0 would turn every registration without one into a removal.
    ZeroDefaultExpires,
    /// More than [`MAX_EXPIRES_LIMIT_S`].
    MaxExpiresTooLong { max_expires_s: u32 },
    /// `max_contacts_per_aor` must be at least 1.
    ZeroMaxContacts,
    /// `max_aors_per_shard` must be at least 1.
    ZeroMaxAors,
    /// An empty domain list would refuse every REGISTER; use [`Domains::Any`] to serve all.
    NoDomains,
    /// Not a host name or address, or (in a hand-built [`Domains::List`]) not in canonical form.
    BadDomain(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ExpiresOutOfOrder {
                min_expires_s,
                default_expires_s,
                max_expires_s,
            } => write!(
                f,
                "expires limits must satisfy min <= default <= max \
                 (min {min_expires_s} s, default {default_expires_s} s, max {max_expires_s} s)"
            ),
            ConfigError::ZeroDefaultExpires => f.write_str("default expires must be nonzero"),
            ConfigError::MaxExpiresTooLong { max_expires_s } => write!(
                f,
                "max expires {max_expires_s} s exceeds the limit of {MAX_EXPIRES_LIMIT_S} s"
            ),
            ConfigError::ZeroMaxContacts => f.write_str("max contacts per AOR must be at least 1"),
            ConfigError::ZeroMaxAors => f.write_str("max AORs per shard must be at least 1"),
            ConfigError::NoDomains => {
                f.write_str("the domain list is empty (use Any to serve every domain)")
            }
            ConfigError::BadDomain(d) => write!(
                f,
                "{d:?} is not a host name or address in canonical form (lowercase, IPv6 in brackets)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host<'_> {
        Host::parse(s).unwrap()
    }

    #[test]
    fn domain_list_is_canonical() {
        let d = Domains::list(["Example.COM", "192.0.2.1", "2001:DB8:0::1", "[::1]"]).unwrap();
        assert_eq!(
            d,
            Domains::List(vec![
                "example.com".into(),
                "192.0.2.1".into(),
                "[2001:db8::1]".into(),
                "[::1]".into()
            ])
        );
        assert!(d.serves(&host("EXAMPLE.com")));
        assert!(d.serves(&host("[2001:db8::0:1]")));
        assert!(!d.serves(&host("example.org")));
        assert!(Domains::Any.serves(&host("anything.example")));
        assert_eq!(
            Domains::list(["bad domain"]),
            Err(ConfigError::BadDomain("bad domain".into()))
        );
        assert_eq!(
            Domains::list(Vec::<&str>::new()),
            Err(ConfigError::NoDomains)
        );
    }

    #[test]
    fn validation() {
        assert_eq!(RegistrarConfig::default().validate(), Ok(()));
        let bad = RegistrarConfig {
            min_expires_s: 4000,
            ..RegistrarConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::ExpiresOutOfOrder { .. })
        ));
        let bad = RegistrarConfig {
            max_contacts_per_aor: 0,
            ..RegistrarConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroMaxContacts));
        let bad = RegistrarConfig {
            max_aors_per_shard: 0,
            ..RegistrarConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroMaxAors));
        let bad = RegistrarConfig {
            domains: Domains::List(vec!["Example.com".into()]),
            ..RegistrarConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::BadDomain("Example.com".into()))
        );
        let bad = RegistrarConfig {
            max_expires_s: u32::MAX,
            ..RegistrarConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::MaxExpiresTooLong { .. })
        ));
    }

    #[test]
    fn granted_intervals() {
        let cfg = RegistrarConfig::default();
        assert_eq!(cfg.granted_expires_s(None), Ok(3600));
        assert_eq!(cfg.granted_expires_s(Some(0)), Ok(0));
        assert_eq!(cfg.granted_expires_s(Some(60)), Ok(60));
        assert_eq!(cfg.granted_expires_s(Some(u32::MAX)), Ok(86_400));
        assert_eq!(
            cfg.granted_expires_s(Some(59)),
            Err(RegisterError::IntervalTooBrief { min_expires_s: 60 })
        );
    }
}
