//! SIP transactions (RFC 3261 §17, RFC 6026) as sans-IO state machines.
//!
//! A transaction is SIP's unit of reliability: one request, its retransmissions, its responses
//! and, for an INVITE answered with a non-2xx, the hop-by-hop ACK. A transaction-stateful proxy
//! runs a server transaction for each request it receives and a client transaction for each
//! branch it forwards; the machines absorb retransmissions, retransmit over UDP, and tell the
//! proxy core only what it must act on.
//!
//! # Shape
//!
//! Nothing here owns a socket or reads a clock (the quinn-proto lesson, see ARCHITECTURE.md). The
//! shard feeds one [`TransactionTable`] with what happened — a request or response received, a
//! response the proxy core sends, a send that failed, the current time — and drains [`Action`]s
//! from [`TransactionTable::poll_action`]: bytes to send, a timeout, a transport error, a
//! termination. Every timer is an entry in the table's [`TimerTable`]; the shard sleeps until
//! [`TransactionTable::next_deadline`] and then calls [`TransactionTable::handle_timeouts`].
//! Tests run hours of timers with a fake clock in microseconds.
//!
//! The four machines — INVITE server (§17.2.1), non-INVITE server (§17.2.2), INVITE client
//! (§17.1.1), non-INVITE client (§17.1.2), with the Accepted states of RFC 6026 — are plain values
//! that turn one event into a list of effects; the table owns them, their keys and their timers.
//! Messages cross the boundary as owned bytes (`Rc<[u8]>`: a shard is one thread) plus the few
//! fields a machine needs, extracted once when the message is handed over.
//!
//! # How the proxy core drives a forwarded INVITE
//!
//! 1. [`TransactionTable::handle_request`] with the parsed INVITE → [`RequestMatch::New`]
//!    (`server`). The 100 (Trying) is already queued (§17.2.1). Retransmissions come back as
//!    [`RequestMatch::Absorbed`]; the proxy never sees them.
//! 2. For each branch the proxy writes the forwarded request (its own Via with a fresh branch,
//!    §16.6) and calls [`TransactionTable::start_client`] → `client`. The request is queued for
//!    sending and Timers A and B run.
//! 3. [`TransactionTable::handle_response`] → [`ResponseMatch::Deliver`] (`client`) for each
//!    response the proxy must see; it forwards what §16.7 says to forward with
//!    [`TransactionTable::respond`] on `server`. The client transaction acknowledges a non-2xx
//!    itself; the server transaction retransmits a non-2xx upstream and absorbs its ACK.
//! 4. [`Action::Timeout`] for `client` is a branch without a final response, which the proxy
//!    counts as a 408; [`Action::TransportError`] is a branch that could not be sent, counted as
//!    a 503 (§8.1.3.1, §16.9). Timer C is the proxy's own (§16.8).
//! 5. A CANCEL is a new request with a transaction of its own; [`TransactionTable::cancel_target`]
//!    finds the INVITE it cancels (§9.2), and [`TransactionTable::cancel_request`] writes the
//!    CANCEL for each pending branch (§9.1), sent with `start_client`.
//! 6. [`Action::Terminated`] reports every transaction exactly once, when it is removed.
//!
//! An ACK that matches no transaction (the ACK for a 2xx, which is end to end) comes back as
//! [`RequestMatch::EndToEndAck`] for the proxy to route without a transaction; a response that
//! matches no client transaction is [`ResponseMatch::Stray`], which a stateful proxy drops
//! (RFC 6026's update of RFC 3261 §18.1.2).

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;
mod slab;
mod table;
mod timer;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use sipshard_net::{ParseError, Transport};

pub use key::{ClientKey, MAGIC_COOKIE, ServerKey};
pub use table::{ClientId, RequestMatch, ResponseMatch, ServerId, TransactionId, TransactionTable};
pub use timer::{TimerKind, TimerTable, TimerToken};

/// The base timer values of RFC 3261 §17.1.1.1 and Table 4; every transaction timer derives from
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// The round-trip estimate: first retransmission interval (Timers A, E, G) and, times 64, the
    /// transaction timeout (Timers B, F, H, J, L, M).
    pub t1: Duration,
    /// The longest retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long a message may stay in the network (Timers I and K).
    pub t4: Duration,
}

impl Default for TimerConfig {
    /// RFC 3261's recommended values: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    fn default() -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L and M.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D over an unreliable transport: "at least 32 s" (§17.1.1.2), and no shorter than the
    /// 64*T1 for which the server may retransmit its final response.
    pub fn timer_d(&self) -> Duration {
        self.timeout().max(Duration::from_secs(32))
    }

    /// The values the table runs with: T1 of at least 1 ms and T2 of at least T1, so that a
    /// doubling retransmission timer always moves forward (a zero T1 would fire forever).
    fn sanitized(self) -> TimerConfig {
        let t1 = self.t1.max(Duration::from_millis(1));
        TimerConfig {
            t1,
            t2: self.t2.max(t1),
            t4: self.t4,
        }
    }
}

/// Where a message goes or came from: the transport, the remote address and, over a stream
/// transport, the connection when one is known: the one a request arrived on (its responses go
/// back over it, §18.2.2) or the one a contact registered over (RFC 5626 §5.3). Without one the
/// shard uses or opens a connection to `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub conn: Option<u64>,
}

impl Peer {
    /// Reliable transports get no retransmission timers (A, E, G) and zero Timers D, I, J, K.
    fn is_reliable(&self) -> bool {
        self.transport.is_reliable()
    }
}

/// A transaction's state, named as in the figures of RFC 3261 §17 and RFC 6026. Terminated is not
/// observable: a transaction that reaches it is removed at once and reported by
/// [`Action::Terminated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE client: the request is out, no response yet (Timers A, B).
    Calling,
    /// Non-INVITE client or server: no response yet.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent; waiting out retransmissions.
    Completed,
    /// INVITE server: the ACK for the non-2xx arrived (Timer I).
    Confirmed,
    /// INVITE, RFC 6026: a 2xx was received or sent; further 2xx pass through (Timers L, M).
    Accepted,
}

/// What the shard does next, drained with [`TransactionTable::poll_action`] after every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to `to`. If the transport reports failure, call
    /// [`TransactionTable::handle_transport_error`] with `id`.
    Send {
        id: TransactionId,
        to: Peer,
        bytes: Rc<[u8]>,
    },
    /// No final response before Timer B or F (client: the proxy counts the branch as a 408,
    /// §8.1.3.1), or no ACK before Timer H (server: the upstream never acknowledged a non-2xx).
    Timeout(TransactionId),
    /// A send failed (§17.1.4, §17.2.4): for a client the proxy counts the branch as a 503
    /// (§8.1.3.1, §16.9); a server transaction has given up on its peer.
    TransportError(TransactionId),
    /// The transaction reached Terminated and was removed; its id is never used again.
    Terminated(TransactionId),
}

/// Why the table refused an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionError {
    /// The table holds its maximum number of transactions of this kind (server or client). For a
    /// new request the shard answers 503 (Service Unavailable) with Retry-After, statelessly; for
    /// a branch the proxy counts it as a 503.
    TableFull,
    /// A header the transaction layer reads (top Via, CSeq, Call-ID, From, To) is missing or
    /// malformed; `in_response` is set when a response was given where a request belongs.
    Malformed(ParseError),
    /// Another live transaction has this key: a branch the proxy used twice, or two RFC 2543
    /// requests that differ only in their To tags (§17.2.3).
    KeyInUse,
    /// No transaction has this id any more (it was reported in [`Action::Terminated`]).
    NoSuchTransaction,
    /// The response may not be sent in the transaction's state: a second final response,
    /// anything but a 2xx after a 2xx, or a status outside 100–699.
    ResponseNotAllowed,
    /// An ACK never gets a client transaction: the INVITE client transaction sends the ACK for a
    /// non-2xx itself (§17.1.1.3) and the ACK for a 2xx is forwarded without one (§13.2.2.4).
    AckWithoutTransaction,
}

/// What a machine asks its table to do; the table turns these into [`Action`]s and timer entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// Send to the transaction's peer.
    Send(Rc<[u8]>),
    /// Start (or restart) a timer, replacing any running timer of the same kind.
    Arm(TimerKind, Duration),
    /// Stop a timer.
    Disarm(TimerKind),
    /// Tell the TU: timeout.
    Timeout,
    /// Tell the TU: transport error.
    TransportError,
    /// Enter Terminated: the table removes the transaction and its timers.
    Terminate,
}

/// Whether a response a client transaction received goes up to the TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    ToTu,
    Absorbed,
}

/// Enters a state that lingers on unreliable transports to absorb retransmissions, and ends at
/// once on reliable ones, where Timers D, I, J and K are zero (§17.1.1.2, §17.1.2.2, §17.2.1,
/// §17.2.2).
fn linger(reliable: bool, timer: TimerKind, duration: Duration, out: &mut Vec<Effect>) {
    if reliable {
        out.push(Effect::Terminate);
    } else {
        out.push(Effect::Arm(timer, duration));
    }
}

/// The next interval of a doubling retransmission timer (A without a cap, E and G capped at T2).
fn doubled(interval: Duration, cap: Option<Duration>) -> Duration {
    let next = interval.saturating_mul(2);
    cap.map_or(next, |cap| next.min(cap))
}
