//! sipshard-registrar: the binding model, the RFC 3261 §10.3 registrar rules, the per-shard
//! binding cache and the Redis HA client.
//!
//! Nothing is implemented here yet: the in-memory registrar arrives with the node (issue 4) and
//! the Sentinel-following Redis client with the HA issue (issue 5). The crate exists now so the
//! workspace has its final shape; see ARCHITECTURE.md for what will live here and its invariants.
