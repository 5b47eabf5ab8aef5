//! sipshard-registrar: the binding model, the RFC 3261 §10.3 registrar rules and the per-shard
//! binding store, and the Redis HA registrar: the sans-IO client ([`ha`]), the data layout and
//! its Lua scripts ([`redis_data`]) and the thread that drives them ([`redis_thread`]).
//!
//! # Shape
//!
//! Thread-per-core: each shard owns the bindings of the AORs that hash to it
//! ([`owner_shard`]). A REGISTER is handled in two steps so that only the second needs the owner:
//!
//! 1. On the shard that received it, [`RegisterRequest::from_message`] checks what depends only
//!    on the request and the [`RegistrarConfig`] (domain, AOR, `*`, RFC 5626 reg-id rules) and
//!    builds an owned summary, small enough to cross to the owner as a bounded message.
//! 2. On the owner, [`BindingStore::register`] applies the rules that depend on stored bindings
//!    (Call-ID/CSeq ordering, intervals, matching, `max_contacts_per_aor`) and returns a
//!    [`RegisterOutcome`] with everything the 200 OK needs, or a [`RegisterError`] whose
//!    [`RegisterError::status`] is the response.
//!
//! Everything here is sans-IO: no sockets, no clock. Whatever depends on time takes
//! `now: Instant`, and the shard's timer table calls [`BindingStore::expire`] at
//! [`BindingStore::next_expiry`], so tests run hours of registrations in microseconds.
//!
//! # Standards
//!
//! - RFC 3261 §10.3 (processing REGISTER), §10.2 (fetch, `*`), §19.1.4 (URI comparison for
//!   contact matching), §20.10/§20.19/§20.23 (Contact, Expires, Min-Expires).
//! - RFC 5626 §6 (outbound registrar: `+sip.instance` and `reg-id` bindings, 439, flows).
//! - RFC 3327 §5.3 (Path stored with the binding, echoed when the UA supports it).
//! - RFC 3581 (requests to a UA behind NAT go to the address the REGISTER came from:
//!   [`Binding::next_hop`]).
//! - RFC 4475 cases that concern registrars (cparam01/02, escnull, regescrt, unksm2) are tests.
//!
//! Where the RFCs leave room, behaviour follows Flexisip and Kamailio: "Domain not served" (403),
//! "Invalid CSeq number" (400), same `+sip.instance` replaces, oldest bindings evicted past the
//! per-AOR limit.

mod aor;
mod binding;
mod config;
mod error;
/// The Redis HA client: master discovery through Sentinel, the write journal, replay after
/// failover; a sans-IO state machine driven by the Redis thread.
pub mod ha;
mod request;
mod store;

/// The data layout's script calls as the HA client's writes.
pub mod redis_bridge;
/// The Redis data layout of the HA registrar: keys, fields, Lua scripts, calls and replies.
pub mod redis_data;
/// The Redis thread: owns every Redis connection and drives [`ha::HaClient`] for the shards.
pub mod redis_thread;

pub use aor::{Aor, BadAor, owner_shard};
pub use binding::{Binding, BindingId, NextHop};
pub use config::{
    ConfigError, DEFAULT_MAX_AORS_PER_SHARD, Domains, MAX_EXPIRES_LIMIT_S, RegistrarConfig,
};
pub use error::{ErrorStatus, RegisterError, STORE_FULL_RETRY_AFTER_S};
pub use request::{
    MAX_CONTACTS_PER_REQUEST, MAX_USER_AGENT_BYTES, RegisterRequest, RequestContact, Source,
};
/// The codec's transport type, re-exported because [`Source`] and [`NextHop`] carry it.
pub use sipshard_net::Transport;
pub use store::{BindingStore, ContactEcho, RegisterOutcome};
