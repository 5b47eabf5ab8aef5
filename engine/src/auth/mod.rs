//! SIP digest authentication (RFC 3261 §22, RFC 2617 `qop=auth`, RFC 7616, RFC 8760), sans-IO.
//!
//! The [`Authenticator`] decides, for one request, whether its sender proved who they are. The
//! shard calls it in one line and writes what it says:
//!
//! ```text
//! match auth.check(&msg, source, is_register, now, wall_clock) {
//!     AuthOutcome::Authenticated { user } | … => go on,
//!     AuthOutcome::NotRequired(_) => go on,
//!     AuthOutcome::Challenge { status, headers, .. } => answer `status` with `headers`,
//!     AuthOutcome::Forbidden { .. } => answer 403,
//! }
//! ```
//!
//! Like the rest of the protocol code it does no I/O and reads no clock: the caller passes the
//! monotonic time (lockouts) and the wall clock (nonce time stamps, which cluster nodes share),
//! and the password file's bytes. Every table it keeps is bounded.
//!
//! # Why it is built this way
//!
//! The threats are those of `shared/notes/auth-and-abuse.md`: password guessing at rates below
//! any flood limit (svcrack), user enumeration by comparing answers (svwar), and replay of
//! captured credentials.
//!
//! - **Stateless nonces** ([`nonce`]): an HMAC over a time stamp, the client's address and the
//!   realm, so any node holding the cluster's `nonce-secret` checks any node's nonce, and a nonce
//!   is useless from another address.
//! - **Replay**: each shard remembers the highest nonce-count per nonce ([`replay`]), bounded
//!   so that overload forces fresh nonces rather than opening a replay window.
//! - **No enumeration**: an unknown user is answered exactly like a known user with a wrong
//!   password — the same challenge, after the same hashing work on a stand-in password — and
//!   counts toward the same lockouts.
//! - **Lockouts on the source, not the account** ([`throttle`]): per source address and per
//!   (source, user) pair, doubling from 1 s to 10 min. Keying on the account alone would let an
//!   attacker lock its owner out.
//! - **Algorithms**: one challenge per configured algorithm, strongest first (RFC 8760 §2.4).
//!
//! # Limits worth knowing
//!
//! - Tables are per shard: a guesser whose connections land on several shards gets each shard's
//!   allowance, and a nonce used on two shards has two nonce-count records. Both stay bounded and
//!   address-bound.
//! - Over UDP a source address can be spoofed; a lockout keyed on it can then be imposed on the
//!   real owner of the address. Trusted hosts are never locked out.
//! - Stale and replayed nonces are answered with a challenge, not counted as failures: neither
//!   tells a guesser anything about the password.

pub(crate) mod bounded;
pub mod challenge;
pub mod digest;
pub mod nonce;
pub mod password_db;
pub mod replay;
pub mod settings;
pub mod throttle;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sipshard_net::{HeaderName, Message, Method, Uri};

pub use challenge::{ChallengeParams, Credentials, CredentialsError};
pub use digest::{Algorithm, DigestHash, DigestHex};
pub use nonce::{NonceCheck, NonceKey};
pub use password_db::{PasswordDb, PasswordFileError, PasswordFileErrorKind, UserCredentials};
pub use replay::{NcVerdict, NonceCounts};
pub use settings::{AuthDomains, AuthLimits, AuthSettings, AuthSettingsError};
pub use throttle::{AuthThrottle, ThrottleCheck, ThrottlePolicy};

use digest::{DigestRequest, expected_response, password_ha1};

/// What an unknown user's response is checked against, so that rejecting an unknown user costs
/// the same hashing as rejecting a wrong password. No real response can match it in practice:
/// the result is discarded anyway.
const STAND_IN_PASSWORD: &[u8] = b"sipshard: no such user";

/// The authenticated identity: the digest `username` and the realm (the identity's domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub username: String,
    pub domain: String,
}

/// What the shard does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right, fresh, and the user may act for the request's identity.
    Authenticated { user: AuthenticatedUser },
    /// Authentication does not apply to this request.
    NotRequired(NotRequiredReason),
    /// Answer `status` (401 for a registrar, 407 for a proxy) with `headers` (one
    /// `WWW-Authenticate`/`Proxy-Authenticate` per algorithm). `reason` is for counters and
    /// logs only: it must never reach the wire, where all reasons look the same.
    Challenge {
        status: u16,
        headers: Vec<(HeaderName, String)>,
        reason: ChallengeReason,
    },
    /// Answer 403 (Forbidden).
    Forbidden { reason: ForbiddenReason },
}

impl AuthOutcome {
    /// The status to answer with, if the request is to be answered rather than processed.
    pub fn status(&self) -> Option<u16> {
        match self {
            AuthOutcome::Authenticated { .. } | AuthOutcome::NotRequired(_) => None,
            AuthOutcome::Challenge { status, .. } => Some(*status),
            AuthOutcome::Forbidden { .. } => Some(403),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRequiredReason {
    /// The source is one of `trusted-hosts`.
    TrustedSource,
    /// ACK and CANCEL cannot be challenged: they have no response of their own to carry a
    /// challenge, and they ride on the credentials of the request they belong to (RFC 3261
    /// §22.1). The proxy core must only route them where their transaction or dialog goes.
    UnchallengeableMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeReason {
    /// No credentials for our realm.
    NoCredentials,
    /// Credentials for our realm that `qop=auth` cannot verify.
    Malformed(CredentialsError),
    /// The `uri` directive is not the Request-URI (RFC 2617 §3.2.2.5).
    UriMismatch,
    /// An algorithm we did not offer.
    AlgorithmNotOffered,
    /// `opaque` missing or not ours.
    OpaqueMismatch,
    /// A nonce we did not issue to this address for this realm.
    InvalidNonce,
    /// The nonce expired (or was forgotten under load) and the response was right: `stale=true`.
    StaleNonce,
    /// Wrong password, or no such user: indistinguishable by design. Counted toward lockouts.
    BadCredentials,
    /// A nonce-count already seen for this nonce.
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// Too many failures from this source, or from this source for this user.
    LockedOut { until: Instant },
    /// The identity's domain is not in `auth-domains`.
    DomainNotServed,
    /// The request has no SIP identity to authenticate (not a request, or From/To missing or
    /// not a `sip:`/`sips:` URI).
    NoIdentity,
    /// Authenticated, but as a user other than the identity the request claims (RFC 3261 §10.3
    /// step 3 for REGISTER's To; the From for other requests).
    IdentityMismatch,
}

/// Running totals for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthCounters {
    pub authenticated: u64,
    pub challenged: u64,
    pub bad_credentials: u64,
    pub replays: u64,
    pub stale_nonces: u64,
    pub invalid_nonces: u64,
    pub malformed: u64,
    pub forbidden: u64,
    /// Lockouts started (by either throttle).
    pub lockouts: u64,
    /// Requests refused because their source or (source, user) was locked out.
    pub locked_out_refusals: u64,
}

/// One shard's authenticator: settings, the password database (shared read-only between
/// shards), the nonce key, and this shard's bounded tables.
#[derive(Debug)]
pub struct Authenticator {
    domains: AuthDomains,
    algorithms: Vec<Algorithm>,
    opaque: Option<String>,
    trusted_hosts: Vec<IpAddr>,
    db: Arc<PasswordDb>,
    nonces: NonceKey,
    counts: NonceCounts,
    per_source: AuthThrottle<IpAddr>,
    /// Keyed on the source and a keyed hash of the user name: fixed size whatever the peer
    /// sends, no allocation per request, and the hash key is random per process.
    per_source_and_user: AuthThrottle<(IpAddr, u64)>,
    user_hasher: RandomState,
    counters: AuthCounters,
}

/// The request fields authentication looks at, extracted once.
struct RequestView<'m> {
    method: &'m str,
    request_uri: &'m Uri<'m>,
    /// REGISTER's To or another request's From: a `sip:`/`sips:` URI.
    identity_user: Option<&'m str>,
    /// The identity's host, lowercased: the realm.
    realm: String,
}

impl Authenticator {
    /// `shard` only keeps different shards' nonces apart.
    pub fn new(
        settings: AuthSettings,
        db: Arc<PasswordDb>,
        shard: u16,
    ) -> Result<Authenticator, AuthSettingsError> {
        let nonces = NonceKey::new(&settings.nonce_secret, settings.nonce_lifetime_s, shard)
            .map_err(|e| AuthSettingsError::SecretTooShort {
                len_bytes: e.len_bytes,
            })?;
        let mut algorithms = settings.algorithms;
        algorithms.sort_by_key(|a| a.rank());
        algorithms.dedup();
        if algorithms.is_empty() {
            return Err(AuthSettingsError::NoAlgorithms);
        }
        let limits = settings.limits;
        Ok(Authenticator {
            domains: settings.domains,
            algorithms,
            opaque: settings.opaque,
            trusted_hosts: settings
                .trusted_hosts
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
            db,
            nonces,
            counts: NonceCounts::new(limits.nonce_table_entries),
            per_source: AuthThrottle::new(limits.per_source, limits.throttle_table_entries),
            per_source_and_user: AuthThrottle::new(
                limits.per_source_and_user,
                limits.throttle_table_entries,
            ),
            user_hasher: RandomState::new(),
            counters: AuthCounters::default(),
        })
    }

    /// Replaces the password database (the file was re-read).
    pub fn set_password_db(&mut self, db: Arc<PasswordDb>) {
        self.db = db;
    }

    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }

    /// The offered algorithms, strongest first.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Decides about one request received from `client`. `is_register` selects the registrar's
    /// exchange (401, `WWW-Authenticate`, `Authorization`, identity in To) over the proxy's (407,
    /// `Proxy-Authenticate`, `Proxy-Authorization`, identity in From). `now` drives lockouts;
    /// `wall_clock` dates nonces (it must agree across the cluster within a minute).
    pub fn check(
        &mut self,
        msg: &Message<'_>,
        client: SocketAddr,
        is_register: bool,
        now: Instant,
        wall_clock: SystemTime,
    ) -> AuthOutcome {
        let outcome = self.decide(
            msg,
            client.ip().to_canonical(),
            is_register,
            now,
            wall_clock,
        );
        match &outcome {
            AuthOutcome::Authenticated { .. } => self.counters.authenticated += 1,
            AuthOutcome::Challenge { reason, .. } => {
                self.counters.challenged += 1;
                match reason {
                    ChallengeReason::BadCredentials => self.counters.bad_credentials += 1,
                    ChallengeReason::Replay => self.counters.replays += 1,
                    ChallengeReason::StaleNonce => self.counters.stale_nonces += 1,
                    ChallengeReason::InvalidNonce => self.counters.invalid_nonces += 1,
                    ChallengeReason::Malformed(_)
                    | ChallengeReason::UriMismatch
                    | ChallengeReason::AlgorithmNotOffered
                    | ChallengeReason::OpaqueMismatch => self.counters.malformed += 1,
                    ChallengeReason::NoCredentials => {}
                }
            }
            AuthOutcome::Forbidden { reason } => {
                self.counters.forbidden += 1;
                if matches!(reason, ForbiddenReason::LockedOut { .. }) {
                    self.counters.locked_out_refusals += 1;
                }
            }
            AuthOutcome::NotRequired(_) => {}
        }
        outcome
    }

    fn decide(
        &mut self,
        msg: &Message<'_>,
        client: IpAddr,
        is_register: bool,
        now: Instant,
        wall_clock: SystemTime,
    ) -> AuthOutcome {
        let forbidden = |reason| AuthOutcome::Forbidden { reason };
        match msg.method() {
            None => return forbidden(ForbiddenReason::NoIdentity),
            Some(Method::Ack | Method::Cancel) => {
                return AuthOutcome::NotRequired(NotRequiredReason::UnchallengeableMethod);
            }
            Some(_) => {}
        }
        if self.trusted_hosts.contains(&client) {
            return AuthOutcome::NotRequired(NotRequiredReason::TrustedSource);
        }
        if let ThrottleCheck::LockedOut { until } = self.per_source.check(&client, now) {
            return forbidden(ForbiddenReason::LockedOut { until });
        }
        let Some(request) = request_view(msg, is_register) else {
            return forbidden(ForbiddenReason::NoIdentity);
        };
        if !self.domains.contains(&request.realm) {
            return forbidden(ForbiddenReason::DomainNotServed);
        }
        let now_unix_s = wall_clock
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let challenge = |this: &mut Self, reason, stale| {
            this.challenge(
                &request.realm,
                client,
                is_register,
                now_unix_s,
                reason,
                stale,
            )
        };

        let header = if is_register {
            HeaderName::Authorization
        } else {
            HeaderName::ProxyAuthorization
        };
        // Several proxies may each have added credentials for their own realm (RFC 3261
        // §22.3): use the one for ours, ignore the rest.
        let ours = msg.auth_headers(header).filter_map(Result::ok).find(|h| {
            h.scheme.eq_ignore_ascii_case("Digest")
                && h.param("realm")
                    .is_some_and(|r| r.eq_ignore_ascii_case(request.realm.as_bytes()))
        });
        let Some(header) = ours else {
            return challenge(self, ChallengeReason::NoCredentials, false);
        };
        let credentials = match Credentials::parse(&header) {
            Ok(c) => c,
            Err(e) => return challenge(self, ChallengeReason::Malformed(e), false),
        };
        if !self.algorithms.contains(&credentials.algorithm) {
            return challenge(self, ChallengeReason::AlgorithmNotOffered, false);
        }
        if let Some(opaque) = &self.opaque {
            if credentials.opaque != Some(opaque.as_bytes()) {
                return challenge(self, ChallengeReason::OpaqueMismatch, false);
            }
        }
        if !uri_matches(credentials.uri, request.request_uri) {
            return challenge(self, ChallengeReason::UriMismatch, false);
        }
        let pair = (client, self.user_hasher.hash_one(credentials.username));
        if let ThrottleCheck::LockedOut { until } = self.per_source_and_user.check(&pair, now) {
            return forbidden(ForbiddenReason::LockedOut { until });
        }
        let (nonce_id, issued_at_s, stale) =
            match self
                .nonces
                .check(credentials.nonce, &request.realm, client, now_unix_s)
            {
                NonceCheck::Valid { id, issued_at_s } => (id, issued_at_s, false),
                NonceCheck::Stale { id, issued_at_s } => (id, issued_at_s, true),
                NonceCheck::Invalid => {
                    return challenge(self, ChallengeReason::InvalidNonce, false);
                }
            };

        if !self.response_is_right(&credentials, &request) {
            let by_source = self.per_source.record_failure(client, now);
            let by_pair = self.per_source_and_user.record_failure(pair, now);
            for started in [by_source, by_pair] {
                if let ThrottleCheck::LockedOut { .. } = started {
                    self.counters.lockouts += 1;
                }
            }
            return challenge(self, ChallengeReason::BadCredentials, false);
        }
        // The response is right, but it may be an old one sent again: only a fresh nonce with a
        // new nonce-count proves the sender knows the password now, so only that clears the
        // failure counts (a replayed success must not launder a guesser's count).
        if stale {
            return challenge(self, ChallengeReason::StaleNonce, true);
        }
        match self.counts.observe(
            &nonce_id,
            issued_at_s,
            credentials.nc,
            now_unix_s,
            self.nonces.lifetime_s(),
        ) {
            NcVerdict::Fresh => {}
            NcVerdict::Replayed => return challenge(self, ChallengeReason::Replay, false),
            NcVerdict::Forgotten => return challenge(self, ChallengeReason::StaleNonce, true),
        }
        if !request
            .identity_user
            .is_some_and(|user| user_part_is(user, credentials.username))
        {
            return forbidden(ForbiddenReason::IdentityMismatch);
        }
        self.per_source_and_user.record_success(&pair);
        self.per_source.record_success(&client);
        AuthOutcome::Authenticated {
            user: AuthenticatedUser {
                username: credentials.username.to_owned(),
                domain: request.realm,
            },
        }
    }

    /// Checks the response against the user's password HA1, or, for an unknown user (or one
    /// whose stored hash cannot serve this algorithm), does the same work against a stand-in
    /// and fails: the answer and its cost do not reveal whether the user exists.
    fn response_is_right(&self, credentials: &Credentials<'_>, request: &RequestView<'_>) -> bool {
        let algorithm = credentials.algorithm;
        let realm = request.realm.as_str();
        let known = self
            .db
            .lookup(credentials.username, realm)
            .and_then(|user| user.ha1(algorithm, credentials.username, realm, realm));
        let (ha1, exists) = match known {
            Some(ha1) => (ha1, true),
            None => (
                password_ha1(
                    algorithm.hash(),
                    credentials.username.as_bytes(),
                    realm.as_bytes(),
                    STAND_IN_PASSWORD,
                ),
                false,
            ),
        };
        let digest_request = DigestRequest {
            method: request.method.as_bytes(),
            digest_uri: credentials.uri,
            nonce: credentials.nonce,
            nc: credentials.nc_text,
            cnonce: credentials.cnonce,
            qop: credentials.qop,
        };
        let expected = expected_response(algorithm, &ha1, &digest_request);
        let matches = std::hint::black_box(expected.matches(credentials.response));
        matches & exists
    }

    fn challenge(
        &mut self,
        realm: &str,
        client: IpAddr,
        is_register: bool,
        now_unix_s: u64,
        reason: ChallengeReason,
        stale: bool,
    ) -> AuthOutcome {
        let nonce = self.nonces.issue(realm, client, now_unix_s);
        let params = ChallengeParams {
            realm,
            nonce: &nonce,
            opaque: self.opaque.as_deref(),
            stale,
        };
        let (status, header) = if is_register {
            (401, HeaderName::WwwAuthenticate)
        } else {
            (407, HeaderName::ProxyAuthenticate)
        };
        AuthOutcome::Challenge {
            status,
            headers: challenge::challenge_headers(header, &params, &self.algorithms),
            reason,
        }
    }
}

fn request_view<'m>(msg: &'m Message<'m>, is_register: bool) -> Option<RequestView<'m>> {
    let method = msg.method()?.as_str();
    let request_uri = msg.request_uri()?;
    let identity = if is_register { msg.to() } else { msg.from() }.ok()?;
    let Uri::Sip(sip) = identity.uri else {
        return None;
    };
    Some(RequestView {
        method,
        request_uri,
        identity_user: sip.user,
        realm: sip.host.text.to_ascii_lowercase(),
    })
}

/// RFC 2617 §3.2.2.5: the `uri` directive must name the Request-URI. Equivalent URIs
/// (RFC 3261 §19.1.4) are accepted, since a proxy on the way may have re-spelled it.
fn uri_matches(directive: &[u8], request_uri: &Uri<'_>) -> bool {
    if directive == request_uri.as_str().as_bytes() {
        return true;
    }
    std::str::from_utf8(directive)
        .ok()
        .and_then(|text| Uri::parse(text).ok())
        .is_some_and(|uri| uri.equivalent(request_uri))
}

/// Whether a URI's user part (escapes kept) is `username`, comparing after unescaping and
/// case-sensitively, as RFC 3261 §19.1.4 compares user parts.
fn user_part_is(user_part: &str, username: &str) -> bool {
    let mut expected = username.bytes();
    let bytes = user_part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let mut byte = bytes[i];
        i += 1;
        if byte == b'%' {
            let high = bytes.get(i).and_then(|c| char::from(*c).to_digit(16));
            let low = bytes.get(i + 1).and_then(|c| char::from(*c).to_digit(16));
            if let (Some(high), Some(low)) = (high, low) {
                byte = (high * 16 + low) as u8;
                i += 2;
            }
        }
        if expected.next() != Some(byte) {
            return false;
        }
    }
    expected.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts_compare_unescaped() {
        assert!(user_part_is("alice", "alice"));
        assert!(user_part_is("al%69ce", "alice"));
        assert!(user_part_is("a%2Bb", "a+b"));
        assert!(!user_part_is("Alice", "alice"));
        assert!(!user_part_is("alic", "alice"));
        assert!(!user_part_is("alicee", "alice"));
        assert!(user_part_is("100%", "100%"));
    }
}
