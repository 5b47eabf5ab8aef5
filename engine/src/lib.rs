//! sipshard-engine: the sipshard node.
//!
//! Protocol logic here is sans-IO (configuration parsing, transaction state machines, routing
//! decisions take values and `now` and return actions); the shard runtime is the thin shell that
//! owns sockets and timers and feeds them.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod core;
pub mod dos;
pub mod fork;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod reload;
pub mod routing;
pub mod shard;
pub mod startup;
pub mod tls;
pub mod transaction;
