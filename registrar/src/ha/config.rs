//! [`HaConfig`]: how the client finds the master and the limits it works within.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::types::Script;

/// Username and password sent with `AUTH` on every new connection (Redis 6 ACL: the username is
/// optional; no password, no `AUTH`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// How the master is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Ask the sentinels (`host:port` each) for `master_name`; a master is believed only when at
    /// least `quorum` sentinels name it in the same round.
    Sentinel {
        sentinels: Vec<Arc<str>>,
        master_name: String,
        quorum: usize,
        credentials: Credentials,
    },
    /// No sentinel (Flexisip's mode): start at `server` (`host:port`), follow `INFO
    /// replication` to the master, remember its replicas, and on loss try them until one says it
    /// is the master.
    Direct { server: Arc<str> },
}

/// Limits and timers. Every duration is a timer in the state machine; none is read from a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub discovery: Discovery,
    /// For the redis-servers (`redis-username`, `redis-auth-password`).
    pub credentials: Credentials,
    /// The scripts writes run; loaded on every new master before the first write.
    pub scripts: Vec<Script>,
    /// Every request and every connection attempt times out after this (`redis-timeout`).
    pub request_timeout: Duration,
    /// How long a write waits for a master before it fails (`redis-failover-hold`).
    pub failover_hold: Duration,
    /// Writes acknowledged this long before the master was given up are replayed on the next
    /// one, since asynchronous replication may not have carried them. It must cover the time
    /// between the last write the old master replicated and the moment the client gives it up:
    /// Sentinel's down-after plus the election plus `check_interval` plus `request_timeout`
    /// (about 5 s with down-after 2 s; 15 s with the seed's 10 s).
    pub replay_window: Duration,
    /// How often the sentinels are asked again (Direct: `INFO replication`) while a master is in
    /// use, so that a stale master is dropped within about this long.
    pub check_interval: Duration,
    /// Pause between discovery attempts while no master is known.
    pub resolve_retry: Duration,
    /// A master that no quorum of sentinels (Direct: no `INFO replication`) has confirmed for
    /// this long is given up: the client may be cut off from sentinels that elected another.
    pub master_lease: Duration,
    /// `WAIT n` after writes before they count as acknowledged (0: off).
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    /// Writes kept: pending ones and acknowledged ones still inside `replay_window`.
    pub journal_capacity: usize,
    /// Writes in flight on the master connection at once.
    pub max_pipeline: usize,
    /// Reads waiting for a node or an answer; past it [`super::Rejected::TooManyReads`].
    pub max_reads: usize,
    /// The channel the client subscribes to on the verified master, reporting each message and
    /// every gap in the subscription ([`super::Change`]); `None`: no data subscription. Defaults
    /// to the data layout's [`crate::redis_data::CHANGES_CHANNEL`].
    pub changes_channel: Option<String>,
    /// Retry-After (seconds) given with [`super::Completion::Failed`].
    pub retry_after_s: u32,
    /// Reconnection back-off: doubles from `backoff_min` up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Seeds the jitter, so that a run replays exactly.
    pub seed: u64,
}

impl HaConfig {
    /// Sentinel discovery with a majority quorum and the defaults.
    pub fn sentinel(sentinels: Vec<Arc<str>>, master_name: impl Into<String>) -> HaConfig {
        let quorum = sentinels.len() / 2 + 1;
        HaConfig::with_discovery(Discovery::Sentinel {
            sentinels,
            master_name: master_name.into(),
            quorum,
            credentials: Credentials::default(),
        })
    }

    /// Direct discovery (no sentinel) with the defaults.
    pub fn direct(server: impl Into<Arc<str>>) -> HaConfig {
        HaConfig::with_discovery(Discovery::Direct {
            server: server.into(),
        })
    }

    fn with_discovery(discovery: Discovery) -> HaConfig {
        HaConfig {
            discovery,
            credentials: Credentials::default(),
            scripts: Vec::new(),
            request_timeout: Duration::from_secs(1),
            failover_hold: Duration::from_secs(20),
            replay_window: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
            resolve_retry: Duration::from_millis(100),
            master_lease: Duration::from_secs(3),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
            journal_capacity: 65_536,
            max_pipeline: 1024,
            max_reads: 4096,
            changes_channel: Some(crate::redis_data::CHANGES_CHANNEL.to_owned()),
            retry_after_s: 5,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            seed: 0x5195_4a2d,
        }
    }

    /// Checks what would make the client misbehave rather than fail clearly.
    pub fn validate(&self) -> Result<(), HaConfigError> {
        if let Discovery::Sentinel {
            sentinels, quorum, ..
        } = &self.discovery
        {
            if sentinels.is_empty() {
                return Err(HaConfigError::NoSentinel);
            }
            if *quorum == 0 || *quorum > sentinels.len() {
                return Err(HaConfigError::BadQuorum {
                    quorum: *quorum,
                    sentinels: sentinels.len(),
                });
            }
        }
        if self.scripts.len() > usize::from(u16::MAX) {
            return Err(HaConfigError::TooManyScripts);
        }
        let zero = |d: Duration| d.is_zero();
        if zero(self.request_timeout) || zero(self.check_interval) || zero(self.resolve_retry) {
            return Err(HaConfigError::ZeroDuration);
        }
        if self.journal_capacity == 0 || self.max_pipeline == 0 || self.max_reads == 0 {
            return Err(HaConfigError::ZeroCapacity);
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(HaConfigError::BadBackoff);
        }
        Ok(())
    }
}

/// A configuration [`super::HaClient::new`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaConfigError {
    NoSentinel,
    BadQuorum { quorum: usize, sentinels: usize },
    TooManyScripts,
    ZeroDuration,
    ZeroCapacity,
    BadBackoff,
}

impl fmt::Display for HaConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaConfigError::NoSentinel => f.write_str("sentinel discovery needs a sentinel address"),
            HaConfigError::BadQuorum { quorum, sentinels } => {
                write!(f, "sentinel quorum {quorum} must be within 1..={sentinels}")
            }
            HaConfigError::TooManyScripts => f.write_str("more than 65535 scripts"),
            HaConfigError::ZeroDuration => {
                f.write_str("request timeout, check interval and resolve retry must be non-zero")
            }
            HaConfigError::ZeroCapacity => {
                f.write_str("journal capacity, pipeline depth and read limit must be non-zero")
            }
            HaConfigError::BadBackoff => {
                f.write_str("back-off minimum must be non-zero and at most the maximum")
            }
        }
    }
}

impl std::error::Error for HaConfigError {}
