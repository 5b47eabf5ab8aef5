//! The shard's transaction table: every server and client transaction, found by key (§17.1.3,
//! §17.2.3) or by id, each bounded in number, with their timers in one [`TimerTable`].
//!
//! The table is the only thing the shard and the proxy core talk to. It turns an input into
//! machine events, applies the effects the machine returns (queueing [`Action`]s, arming and
//! stopping timers, removing the transaction on Terminated), and tells the caller what became of
//! the message it handed in.

use std::collections::{HashMap, VecDeque};

use ahash::RandomState;
use std::rc::Rc;
use std::time::Instant;

use sipshard_net::{HeaderName, Message, Method, ViaStamp, stamped_response_to};

use super::client_invite::{ClientInvite, OriginalHeaders};
use super::client_non_invite::ClientNonInvite;
use super::key::{ClientKey, ServerKey, not_a_request};
use super::server_invite::{AckVerdict, ServerInvite};
use super::server_non_invite::ServerNonInvite;
use super::slab::{Slab, SlotId};
use super::timer::{TimerKind, TimerTable, TimerToken};
use super::{Action, Delivery, Effect, Peer, State, TimerConfig, TransactionError};

/// A server transaction; stale once [`Action::Terminated`] reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub(crate) SlotId);

/// A client transaction; stale once [`Action::Terminated`] reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) SlotId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransactionId {
    Server(ServerId),
    Client(ClientId),
}

/// What became of a received request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMatch {
    /// A new request, with a new server transaction: the proxy core processes it and answers
    /// through [`TransactionTable::respond`]. For an INVITE the 100 (Trying) is already queued.
    New(ServerId),
    /// A retransmission, or the hop-by-hop ACK of a non-2xx: the transaction handled it.
    Absorbed,
    /// An ACK that belongs to no transaction — the end-to-end ACK for a 2xx (§13.2.2.4, RFC 6026
    /// §7.1): the proxy core routes it without a transaction.
    EndToEndAck,
}

/// What became of a received response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMatch {
    /// For the proxy core (§16.7), from this client transaction.
    Deliver(ClientId),
    /// A retransmission the transaction handled (re-sending its ACK if the response was a non-2xx
    /// to an INVITE).
    Absorbed,
    /// No client transaction matches, or the response lacks what matching needs (top Via branch,
    /// CSeq, To): a stateful proxy drops it (RFC 6026's update of RFC 3261 §18.1.2).
    Stray,
}

#[derive(Debug)]
enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

#[derive(Debug)]
enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

/// The To tags RFC 2543 matching compares (§17.2.3): the request's, and for its ACK the one of
/// the final response sent.
#[derive(Debug)]
struct Rfc2543Tags {
    request: Option<Box<str>>,
    response: Option<Box<str>>,
}

#[derive(Debug)]
struct ServerEntry {
    key: ServerKey,
    rfc2543: Option<Rfc2543Tags>,
    /// Where responses go (§18.2.2): the request's connection, or over UDP its source address
    /// with the Via port (the source port when `rport` asked for it).
    reply_to: Peer,
    machine: ServerMachine,
    timers: ArmedTimers,
}

#[derive(Debug)]
struct ClientEntry {
    key: ClientKey,
    to: Peer,
    machine: ClientMachine,
    timers: ArmedTimers,
}

/// A transaction's running timers: at most one retransmission timer (A, E, G) and one lifetime
/// timer (the rest) at a time.
#[derive(Debug, Default)]
struct ArmedTimers {
    retransmission: Option<(TimerKind, TimerToken)>,
    lifetime: Option<(TimerKind, TimerToken)>,
}

impl ArmedTimers {
    fn slot(&mut self, kind: TimerKind) -> &mut Option<(TimerKind, TimerToken)> {
        if kind.is_retransmission() {
            &mut self.retransmission
        } else {
            &mut self.lifetime
        }
    }

    /// Records a new timer; returns the one it replaces, to be cancelled.
    fn arm(&mut self, kind: TimerKind, token: TimerToken) -> Option<TimerToken> {
        self.slot(kind)
            .replace((kind, token))
            .map(|(_, replaced)| replaced)
    }

    /// Forgets `kind` if it runs; returns its token, to be cancelled.
    fn disarm(&mut self, kind: TimerKind) -> Option<TimerToken> {
        let slot = self.slot(kind);
        match *slot {
            Some((running, token)) if running == kind => {
                *slot = None;
                Some(token)
            }
            _ => None,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (TimerKind, TimerToken)> + '_ {
        self.retransmission
            .iter()
            .chain(self.lifetime.iter())
            .copied()
    }
}

/// All transactions of one shard. Single-threaded: ids, keys and timers are the shard's own.
#[derive(Debug)]
pub struct TransactionTable {
    config: TimerConfig,
    servers: Slab<ServerEntry>,
    clients: Slab<ClientEntry>,
    /// Sized for the bounds at creation: the table never rehashes while serving.
    server_keys: HashMap<ServerKey, ServerId, RandomState>,
    client_keys: HashMap<ClientKey, ClientId, RandomState>,
    timers: TimerTable,
    /// Completed non-INVITE server transactions with their Timer J, in the order it runs out
    /// (J is the same for every one). They only absorb retransmissions of a request already
    /// answered, so when the table is full the oldest is reclaimed for a new request instead
    /// of answering it 503: over UDP each stays 64*T1 (32 s), so a full table would otherwise
    /// cap a shard at capacity/32 new requests a second. Entries whose transaction ended
    /// otherwise are skipped when met; expired ones are dropped by `handle_timeouts`.
    completed: VecDeque<(TimerToken, ServerId)>,
    /// Transactions reclaimed that way.
    reclaimed: u64,
    /// Drained by the shard after every call, so it holds only what one input produced.
    actions: VecDeque<Action>,
    /// The effects of the event being handled (kept to reuse its allocation).
    effects: Vec<Effect>,
}

impl TransactionTable {
    /// A table for at most `max_server_transactions` and `max_client_transactions` at a time
    /// (bounded separately, so a flood of new requests cannot starve the branches of calls in
    /// progress). `config` is used with T1 of at least 1 ms and T2 of at least T1.
    pub fn new(
        config: TimerConfig,
        max_server_transactions: usize,
        max_client_transactions: usize,
    ) -> TransactionTable {
        TransactionTable {
            config: config.sanitized(),
            servers: Slab::new(max_server_transactions),
            clients: Slab::new(max_client_transactions),
            server_keys: HashMap::with_capacity_and_hasher(
                max_server_transactions,
                RandomState::new(),
            ),
            client_keys: HashMap::with_capacity_and_hasher(
                max_client_transactions,
                RandomState::new(),
            ),
            timers: TimerTable::new(),
            completed: VecDeque::new(),
            reclaimed: 0,
            actions: VecDeque::new(),
            effects: Vec::new(),
        }
    }

    /// A request received from `source`, already checked with `Message::validate` (the shard
    /// answers 400 otherwise). A retransmission or ACK goes to its transaction; another request
    /// starts a server transaction. An error leaves the table unchanged: `TableFull` is answered
    /// 503 with Retry-After, statelessly.
    pub fn handle_request(
        &mut self,
        request: &Message<'_>,
        source: Peer,
        now: Instant,
    ) -> Result<RequestMatch, TransactionError> {
        let method = request
            .method()
            .ok_or(TransactionError::Malformed(not_a_request()))?;
        let is_ack = method == Method::Ack;
        let key = ServerKey::for_request(request).map_err(TransactionError::Malformed)?;
        let to_tag = if key.is_rfc2543() {
            request.to().map_err(TransactionError::Malformed)?.tag()
        } else {
            None
        };
        if let Some(&id) = self.server_keys.get(&key) {
            return self.matched_request(id, is_ack, to_tag, now);
        }
        if is_ack {
            return Ok(RequestMatch::EndToEndAck);
        }
        if self.servers.is_full() && !self.reclaim_completed() {
            return Err(TransactionError::TableFull);
        }
        let reliable = source.is_reliable();
        let reply_to = if reliable {
            source
        } else {
            Peer {
                transport: source.transport,
                addr: ViaStamp::response_destination(request, source.addr),
                conn: None,
            }
        };
        let machine = if method == Method::Invite {
            let mut trying = Vec::new();
            let stamp = ViaStamp::for_request(request, source.addr);
            stamped_response_to(&mut trying, request, &stamp, 100, "Trying", None)
                .finish(None, b"");
            let machine =
                ServerInvite::new(trying.into(), reliable, &self.config, &mut self.effects);
            ServerMachine::Invite(machine)
        } else {
            ServerMachine::NonInvite(ServerNonInvite::new(reliable))
        };
        let rfc2543 = key.is_rfc2543().then(|| Rfc2543Tags {
            request: to_tag.map(Into::into),
            response: None,
        });
        let entry = ServerEntry {
            key: key.clone(),
            rfc2543,
            reply_to,
            machine,
            timers: ArmedTimers::default(),
        };
        let Some(slot) = self.servers.insert(entry) else {
            self.effects.clear();
            return Err(TransactionError::TableFull);
        };
        let id = ServerId(slot);
        self.server_keys.insert(key, id);
        self.apply(TransactionId::Server(id), now);
        Ok(RequestMatch::New(id))
    }

    fn matched_request(
        &mut self,
        id: ServerId,
        is_ack: bool,
        to_tag: Option<&str>,
        now: Instant,
    ) -> Result<RequestMatch, TransactionError> {
        let Some(entry) = self.servers.get_mut(id.0) else {
            // Keys are removed with their transaction, so this does not happen.
            return Ok(RequestMatch::Absorbed);
        };
        if let Some(tags) = &entry.rfc2543 {
            let expected = if is_ack {
                &tags.response
            } else {
                &tags.request
            };
            if expected.as_deref() != to_tag {
                return if is_ack {
                    // Not the ACK of the response sent: the ACK of a 2xx from another fork.
                    Ok(RequestMatch::EndToEndAck)
                } else {
                    Err(TransactionError::KeyInUse)
                };
            }
        }
        let out = &mut self.effects;
        let verdict = match &mut entry.machine {
            ServerMachine::Invite(m) if is_ack => match m.on_ack(&self.config, out) {
                AckVerdict::Absorbed => RequestMatch::Absorbed,
                AckVerdict::ToTu => RequestMatch::EndToEndAck,
            },
            ServerMachine::Invite(m) => {
                m.on_retransmission(out);
                RequestMatch::Absorbed
            }
            // An ACK's key names an INVITE, so only retransmissions reach a non-INVITE.
            ServerMachine::NonInvite(m) => {
                m.on_retransmission(out);
                RequestMatch::Absorbed
            }
        };
        self.apply(TransactionId::Server(id), now);
        Ok(verdict)
    }

    /// The INVITE server transaction that a CANCEL's transaction cancels (§9.2), if it is still
    /// there. The proxy answers the CANCEL itself (200, or 481 when there is none, §16.10).
    pub fn cancel_target(&self, cancel: ServerId) -> Option<ServerId> {
        let entry = self.servers.get(cancel.0)?;
        let target = *self.server_keys.get(&entry.key.for_cancel_target()?)?;
        let target_tags = &self.servers.get(target.0)?.rfc2543;
        match (&entry.rfc2543, target_tags) {
            (Some(cancel), Some(invite)) if cancel.request != invite.request => None,
            _ => Some(target),
        }
    }

    /// Sends a response the proxy core wrote (with `sipshard_net::stamped_response_to`, or a
    /// forwarded response with its top Via removed) on a server transaction. `status` is the
    /// response's status code.
    pub fn respond(
        &mut self,
        server: ServerId,
        status: u16,
        response: Rc<[u8]>,
        now: Instant,
    ) -> Result<(), TransactionError> {
        self.respond_with(server, status, response, true, now)
    }

    /// Like [`TransactionTable::respond`], for a final response this node writes itself (a
    /// challenge, 404, 483, 503) rather than one it relays: to an INVITE over UDP it is sent once,
    /// without Timer G. A lost one comes back with the caller's INVITE retransmission (the
    /// Completed state answers each with it, §17.2.1), and a forged INVITE cannot make the node
    /// send its answer ten times over 32 s to a spoofed address — the reflection Timer G would
    /// otherwise allow (Kamailio sends such replies statelessly for the same reason).
    pub fn respond_local(
        &mut self,
        server: ServerId,
        status: u16,
        response: Rc<[u8]>,
        now: Instant,
    ) -> Result<(), TransactionError> {
        self.respond_with(server, status, response, false, now)
    }

    fn respond_with(
        &mut self,
        server: ServerId,
        status: u16,
        response: Rc<[u8]>,
        resend: bool,
        now: Instant,
    ) -> Result<(), TransactionError> {
        if !(100..=699).contains(&status) {
            return Err(TransactionError::ResponseNotAllowed);
        }
        let entry = self
            .servers
            .get_mut(server.0)
            .ok_or(TransactionError::NoSuchTransaction)?;
        let out = &mut self.effects;
        match &mut entry.machine {
            ServerMachine::Invite(m) => {
                m.on_response(status, response.clone(), resend, &self.config, out)
            }
            ServerMachine::NonInvite(m) => {
                m.on_response(status, response.clone(), &self.config, out)
            }
        }?;
        if let (Some(tags), 200..) = (&mut entry.rfc2543, status) {
            tags.response = Message::parse_datagram(&response)
                .ok()
                .and_then(|m| m.to().ok()?.tag().map(Into::into));
        }
        self.apply(TransactionId::Server(server), now);
        Ok(())
    }

    /// Starts a client transaction that sends `request` (written by the proxy core, with its own
    /// top Via and a fresh branch, §16.6) to `to`. The request is queued for sending and its
    /// retransmission and timeout timers start.
    pub fn start_client(
        &mut self,
        request: Rc<[u8]>,
        to: Peer,
        now: Instant,
    ) -> Result<ClientId, TransactionError> {
        let message = Message::parse_datagram(&request).map_err(TransactionError::Malformed)?;
        let method = message
            .method()
            .ok_or(TransactionError::Malformed(not_a_request()))?;
        if method == Method::Ack {
            return Err(TransactionError::AckWithoutTransaction);
        }
        let key = ClientKey::for_request(&message).map_err(TransactionError::Malformed)?;
        if self.client_keys.contains_key(&key) {
            return Err(TransactionError::KeyInUse);
        }
        if self.clients.is_full() {
            return Err(TransactionError::TableFull);
        }
        let original = match method {
            Method::Invite => {
                Some(OriginalHeaders::of(&message).map_err(TransactionError::Malformed)?)
            }
            _ => None,
        };
        let reliable = to.is_reliable();
        let out = &mut self.effects;
        let machine = match original {
            Some(original) => ClientMachine::Invite(ClientInvite::new(
                request,
                original,
                reliable,
                &self.config,
                out,
            )),
            None => {
                ClientMachine::NonInvite(ClientNonInvite::new(request, reliable, &self.config, out))
            }
        };
        let entry = ClientEntry {
            key: key.clone(),
            to,
            machine,
            timers: ArmedTimers::default(),
        };
        let Some(slot) = self.clients.insert(entry) else {
            self.effects.clear();
            return Err(TransactionError::TableFull);
        };
        let id = ClientId(slot);
        self.client_keys.insert(key, id);
        self.apply(TransactionId::Client(id), now);
        Ok(id)
    }

    /// The CANCEL for a forwarded INVITE (§9.1), for the proxy to send with
    /// [`Self::start_client`] to the same peer. `None` unless the INVITE is in Proceeding: before
    /// a provisional response a CANCEL must not be sent, and after a final one it is pointless.
    pub fn cancel_request(&self, invite: ClientId) -> Option<Vec<u8>> {
        match &self.clients.get(invite.0)?.machine {
            ClientMachine::Invite(m) if m.state() == State::Proceeding => {
                Some(m.original().cancel())
            }
            _ => None,
        }
    }

    /// A response received; see [`ResponseMatch`].
    pub fn handle_response(&mut self, response: &Message<'_>, now: Instant) -> ResponseMatch {
        let (Some(status), Ok(key), Some(to)) = (
            response.status(),
            ClientKey::for_response(response),
            response.value(HeaderName::To),
        ) else {
            return ResponseMatch::Stray;
        };
        let Some(&id) = self.client_keys.get(&key) else {
            return ResponseMatch::Stray;
        };
        let Some(entry) = self.clients.get_mut(id.0) else {
            return ResponseMatch::Stray;
        };
        let out = &mut self.effects;
        let delivery = match &mut entry.machine {
            ClientMachine::Invite(m) => m.on_response(status, to, &self.config, out),
            ClientMachine::NonInvite(m) => m.on_response(status, &self.config, out),
        };
        self.apply(TransactionId::Client(id), now);
        match delivery {
            Delivery::ToTu => ResponseMatch::Deliver(id),
            Delivery::Absorbed => ResponseMatch::Absorbed,
        }
    }

    /// The transport could not send a message of `id` (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, id: TransactionId, now: Instant) {
        let out = &mut self.effects;
        match id {
            TransactionId::Server(server) => match self.servers.get_mut(server.0) {
                Some(entry) => match &mut entry.machine {
                    ServerMachine::Invite(m) => m.on_transport_error(out),
                    ServerMachine::NonInvite(m) => m.on_transport_error(out),
                },
                None => return,
            },
            TransactionId::Client(client) => match self.clients.get_mut(client.0) {
                Some(entry) => match &mut entry.machine {
                    ClientMachine::Invite(m) => m.on_transport_error(out),
                    ClientMachine::NonInvite(m) => m.on_transport_error(out),
                },
                None => return,
            },
        }
        self.apply(id, now);
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some((id, kind)) = self.timers.pop_expired(now) {
            let out = &mut self.effects;
            let config = &self.config;
            match id {
                TransactionId::Server(server) => {
                    let Some(entry) = self.servers.get_mut(server.0) else {
                        continue;
                    };
                    // Already out of the timer table: only the record goes.
                    entry.timers.disarm(kind);
                    match &mut entry.machine {
                        ServerMachine::Invite(m) => m.on_timer(kind, config, out),
                        ServerMachine::NonInvite(m) => m.on_timer(kind, out),
                    }
                }
                TransactionId::Client(client) => {
                    let Some(entry) = self.clients.get_mut(client.0) else {
                        continue;
                    };
                    // Already out of the timer table: only the record goes.
                    entry.timers.disarm(kind);
                    match &mut entry.machine {
                        ClientMachine::Invite(m) => m.on_timer(kind, out),
                        ClientMachine::NonInvite(m) => m.on_timer(kind, config, out),
                    }
                }
            }
            self.apply(id, now);
        }
        while self
            .completed
            .front()
            .is_some_and(|(token, _)| token.deadline() <= now)
        {
            self.completed.pop_front();
        }
    }

    /// Ends the completed non-INVITE server transaction whose Timer J runs out first, if there
    /// is one: a retransmission of its request arriving later starts a new transaction.
    fn reclaim_completed(&mut self) -> bool {
        while let Some((token, id)) = self.completed.pop_front() {
            let waiting_for_j = self
                .servers
                .get(id.0)
                .is_some_and(|e| e.timers.lifetime == Some((TimerKind::J, token)));
            if waiting_for_j {
                self.remove(TransactionId::Server(id));
                self.reclaimed += 1;
                return true;
            }
        }
        false
    }

    /// Completed non-INVITE server transactions ended early to make room for new requests.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed
    }

    /// When [`Self::handle_timeouts`] is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The state of a live transaction.
    pub fn state(&self, id: TransactionId) -> Option<State> {
        match id {
            TransactionId::Server(server) => match &self.servers.get(server.0)?.machine {
                ServerMachine::Invite(m) => Some(m.state()),
                ServerMachine::NonInvite(m) => Some(m.state()),
            },
            TransactionId::Client(client) => match &self.clients.get(client.0)?.machine {
                ClientMachine::Invite(m) => Some(m.state()),
                ClientMachine::NonInvite(m) => Some(m.state()),
            },
        }
    }

    /// The timers running for `id`, with their deadlines.
    pub fn running_timers(&self, id: TransactionId) -> Vec<(TimerKind, Instant)> {
        let timers = match id {
            TransactionId::Server(server) => self.servers.get(server.0).map(|e| &e.timers),
            TransactionId::Client(client) => self.clients.get(client.0).map(|e| &e.timers),
        };
        timers
            .into_iter()
            .flat_map(ArmedTimers::iter)
            .map(|(kind, token)| (kind, token.deadline()))
            .collect()
    }

    /// Live server transactions.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Live client transactions.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Applies the effects the last machine event left in `self.effects`.
    fn apply(&mut self, id: TransactionId, now: Instant) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(bytes) => {
                    if let Some(to) = self.peer(id) {
                        self.actions.push_back(Action::Send { id, to, bytes });
                    }
                }
                Effect::Arm(kind, after) => {
                    // A deadline past the clock's range never comes.
                    let Some(deadline) = now.checked_add(after) else {
                        continue;
                    };
                    let token = self.timers.schedule(deadline, id, kind);
                    // Over a reliable transport J is zero: nothing to reclaim, and the queue
                    // stays in deadline order.
                    if let (TimerKind::J, TransactionId::Server(server)) = (kind, id) {
                        if !after.is_zero() {
                            self.completed.push_back((token, server));
                        }
                    }
                    let replaced = self.armed_timers(id).and_then(|t| t.arm(kind, token));
                    if let Some(replaced) = replaced {
                        self.timers.cancel(replaced);
                    }
                }
                Effect::Disarm(kind) => {
                    let stopped = self.armed_timers(id).and_then(|t| t.disarm(kind));
                    if let Some(token) = stopped {
                        self.timers.cancel(token);
                    }
                }
                Effect::Timeout => self.actions.push_back(Action::Timeout(id)),
                Effect::TransportError => self.actions.push_back(Action::TransportError(id)),
                Effect::Terminate => self.remove(id),
            }
        }
        self.effects = effects;
    }

    fn peer(&self, id: TransactionId) -> Option<Peer> {
        match id {
            TransactionId::Server(server) => self.servers.get(server.0).map(|e| e.reply_to),
            TransactionId::Client(client) => self.clients.get(client.0).map(|e| e.to),
        }
    }

    fn armed_timers(&mut self, id: TransactionId) -> Option<&mut ArmedTimers> {
        match id {
            TransactionId::Server(server) => self.servers.get_mut(server.0).map(|e| &mut e.timers),
            TransactionId::Client(client) => self.clients.get_mut(client.0).map(|e| &mut e.timers),
        }
    }

    /// Terminated: the transaction, its key and its timers go; the shard hears of it once.
    fn remove(&mut self, id: TransactionId) {
        let timers = match id {
            TransactionId::Server(server) => {
                let Some(entry) = self.servers.remove(server.0) else {
                    return;
                };
                self.server_keys.remove(&entry.key);
                entry.timers
            }
            TransactionId::Client(client) => {
                let Some(entry) = self.clients.remove(client.0) else {
                    return;
                };
                self.client_keys.remove(&entry.key);
                entry.timers
            }
        };
        for (_, token) in timers.iter() {
            self.timers.cancel(token);
        }
        self.actions.push_back(Action::Terminated(id));
    }
}
