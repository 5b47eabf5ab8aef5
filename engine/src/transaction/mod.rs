//! SIP transactions (RFC 3261 §17, RFC 6026) as sans-IO state machines.
