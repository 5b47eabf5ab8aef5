//! The connections the client has asked the driver to open, the requests in flight on each (in
//! the order sent, since Redis answers in order), their deadlines, and the command queue.
//!
//! A connection id is never reused: once the client closes a connection it forgets the id, and a
//! reply the driver still delivers for it (a stalled master waking up) is recognised as late and
//! ignored. Only the oldest request of a connection is timed: a later one cannot be answered
//! before it, so it is timed from when it becomes the oldest, at the latest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::{Command, ConnId, ConnKind, ReadId, RedisCommand, RequestId, WriteId};

/// Who uses a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Sentinel number i, for questions.
    Sentinel(usize),
    /// Sentinel number i, subscribed to `+switch-master`.
    PubSub(usize),
    /// A redis-server: the master, or the candidate being checked.
    Server,
    /// The master, subscribed to the changes channel.
    DataSub,
    /// A replica (any node, in fact) serving reads while no master is known.
    Replica,
}

/// Why a request was sent, so that its reply can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Auth,
    SentinelQuery {
        round: u64,
    },
    SentinelReplicas,
    Subscribe,
    Role,
    Info,
    ScriptLoad,
    /// `epoch`: the master's script-load epoch the write was sent in (see `Master::epoch`).
    Write {
        id: WriteId,
        replay: bool,
        epoch: u32,
    },
    Read {
        id: ReadId,
    },
    Wait,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) request: RequestId,
    pub(super) purpose: Purpose,
    deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) addr: Arc<str>,
    pub(super) role: Role,
    pub(super) connected: bool,
    connect_deadline: Instant,
    pub(super) pending: VecDeque<Pending>,
}

impl Conn {
    fn deadline(&self) -> Option<Instant> {
        if self.connected {
            self.pending.front().map(|p| p.deadline)
        } else {
            Some(self.connect_deadline)
        }
    }
}

/// A reply the connection table cannot route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unroutable {
    /// The connection was given up (or never existed): a late reply.
    UnknownConn,
    /// Not the oldest request of the connection: the driver broke the ordering contract.
    OutOfOrder,
}

#[derive(Debug, Default)]
pub(super) struct Conns {
    /// A handful: one per sentinel, one subscriber, the master, its subscriber, a replica.
    conns: Vec<Conn>,
    next_conn: u64,
    next_request: u64,
    /// Bounded by what is open and in flight: a few connections, `max_pipeline` writes.
    commands: VecDeque<Command>,
}

impl Conns {
    pub(super) fn open(
        &mut self,
        addr: Arc<str>,
        kind: ConnKind,
        role: Role,
        now: Instant,
        timeout: Duration,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.commands.push_back(Command::Connect {
            conn: id,
            addr: addr.clone(),
            kind,
        });
        self.conns.push(Conn {
            id,
            addr,
            role,
            connected: false,
            connect_deadline: now + timeout,
            pending: VecDeque::new(),
        });
        id
    }

    pub(super) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    /// Marks a connection open; `None` if the client has given it up.
    pub(super) fn connected(&mut self, id: ConnId) -> Option<&Conn> {
        let c = self.conns.iter_mut().find(|c| c.id == id)?;
        c.connected = true;
        Some(c)
    }

    pub(super) fn send(
        &mut self,
        id: ConnId,
        cmd: RedisCommand,
        purpose: Purpose,
        now: Instant,
        timeout: Duration,
    ) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        c.pending.push_back(Pending {
            request,
            purpose,
            deadline: now + timeout,
        });
        self.commands.push_back(Command::Send {
            conn: id,
            request,
            cmd,
        });
    }

    /// Takes the oldest request of `id`, which `request` must be.
    pub(super) fn take_reply(
        &mut self,
        id: ConnId,
        request: RequestId,
    ) -> Result<(Purpose, Role), Unroutable> {
        let c = self
            .conns
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(Unroutable::UnknownConn)?;
        match c.pending.front() {
            Some(p) if p.request == request => {}
            _ => return Err(Unroutable::OutOfOrder),
        }
        let p = c.pending.pop_front().ok_or(Unroutable::OutOfOrder)?;
        Ok((p.purpose, c.role))
    }

    /// Gives a connection up: tells the driver to close it and returns it with whatever was in
    /// flight, which the caller must treat as unanswered.
    pub(super) fn close(&mut self, id: ConnId) -> Option<Conn> {
        let i = self.conns.iter().position(|c| c.id == id)?;
        self.commands.push_back(Command::Close { conn: id });
        Some(self.conns.swap_remove(i))
    }

    /// A connection whose connect or oldest request is overdue.
    pub(super) fn expired(&self, now: Instant) -> Option<ConnId> {
        self.conns
            .iter()
            .find(|c| c.deadline().is_some_and(|d| d <= now))
            .map(|c| c.id)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().filter_map(Conn::deadline).min()
    }

    pub(super) fn pop_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_route_in_order_and_late_ones_are_recognised() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Conns::default();
        let id = c.open("a:1".into(), ConnKind::Server, Role::Server, t0, s);
        assert_eq!(c.next_deadline(), Some(t0 + s), "connecting is timed");
        c.connected(id);
        assert_eq!(c.next_deadline(), None);
        c.send(id, RedisCommand::Role, Purpose::Role, t0, s);
        c.send(id, RedisCommand::InfoReplication, Purpose::Info, t0, 2 * s);
        assert!(matches!(c.pop_command(), Some(Command::Connect { .. })));
        let Some(Command::Send { request: r0, .. }) = c.pop_command() else {
            panic!()
        };
        let Some(Command::Send { request: r1, .. }) = c.pop_command() else {
            panic!()
        };
        assert_eq!(c.take_reply(id, r1), Err(Unroutable::OutOfOrder));
        assert_eq!(c.take_reply(id, r0), Ok((Purpose::Role, Role::Server)));
        assert_eq!(c.expired(t0 + s), None);
        assert_eq!(c.expired(t0 + 2 * s), Some(id));
        let closed = c.close(id).unwrap();
        assert_eq!(closed.pending.len(), 1);
        assert_eq!(c.pop_command(), Some(Command::Close { conn: id }));
        assert_eq!(c.take_reply(id, r1), Err(Unroutable::UnknownConn));
        let again = c.open("a:1".into(), ConnKind::Server, Role::Server, t0, s);
        assert_ne!(again, id, "ids are never reused");
    }
}
