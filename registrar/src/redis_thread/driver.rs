//! The loop on the Redis thread: executes the client's commands, feeds it connection events,
//! submissions and timeouts, routes its completions to the shards, and the data subscription's
//! changes to the shards that own them.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::conn::{self, ConnEvent};
use super::{Outcome, RoundTrips, ShardSide, Shared, Submission};
use crate::ha::{
    Change, Command, Completion, ConnId, ConnKind, Event, HaClient, HaError, HaState, ReadId,
    RedisCommand, RequestId, WriteId,
};
use crate::{Aor, owner_shard};

/// Events or submissions handled per turn of the loop, so that neither starves the other (nor
/// the completions, which are delivered between turns).
const BATCH: usize = 1024;
/// Replies parsed ahead of the loop, per thread; a connection task waits when it is full.
const EVENT_QUEUE: usize = 4096;

/// What a sent request expects back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// One reply.
    Reply,
    /// One `subscribe` confirmation per channel, answered as one reply after the last.
    Subscriptions(usize),
}

/// The driver's view of one connection the client opened.
struct Conn {
    kind: ConnKind,
    addr: Arc<str>,
    /// Packed commands to the connection task. Unbounded, but bounded in fact by the client:
    /// at most `max_pipeline` writes plus a few control requests are in flight per connection.
    commands: mpsc::UnboundedSender<Vec<u8>>,
    /// Requests sent and not answered, oldest first: replies come back in this order.
    requests: VecDeque<(RequestId, Expect)>,
    task: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) struct Driver {
    client: HaClient,
    shared: Arc<Shared>,
    submissions: crossbeam_channel::Receiver<Submission>,
    shards: Vec<ShardSide>,
    /// Shards that got completions this turn and need a wake-up byte.
    to_wake: Vec<bool>,
    /// Who submitted each write the client holds, and when; bounded by its journal capacity.
    writes: HashMap<WriteId, (usize, u64, Instant)>,
    /// Who submitted each read the client holds, and when; bounded by its `max_reads`.
    reads: HashMap<ReadId, (usize, u64, Instant)>,
    /// Submission to acknowledgement, of writes and reads (published with the health).
    round_trips: RoundTrips,
    conns: HashMap<ConnId, Conn>,
    events_tx: mpsc::Sender<(ConnId, ConnEvent)>,
    events_rx: mpsc::Receiver<(ConnId, ConnEvent)>,
    retry_after_s: u32,
    connect_timeout: Duration,
    /// What was last logged, so that only changes are.
    logged: (HaState, Option<Arc<str>>, Option<HaError>),
}

impl Driver {
    pub(super) fn new(
        client: HaClient,
        shared: Arc<Shared>,
        submissions: crossbeam_channel::Receiver<Submission>,
        shards: Vec<ShardSide>,
        retry_after_s: u32,
        connect_timeout: Duration,
    ) -> Driver {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let health = client.health();
        Driver {
            client,
            shared,
            submissions,
            to_wake: vec![false; shards.len()],
            shards,
            writes: HashMap::new(),
            reads: HashMap::new(),
            round_trips: RoundTrips::default(),
            conns: HashMap::new(),
            events_tx,
            events_rx,
            retry_after_s,
            connect_timeout,
            logged: (health.state, health.master, health.last_error),
        }
    }

    pub(super) async fn run(mut self) {
        tracing::info!(shards = self.shards.len(), "redis thread started");
        loop {
            self.turn();
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            let deadline = self.client.poll_timeout();
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.events_rx.recv() => {
                    // The driver holds a sender itself, so the channel never closes.
                    if let Some(event) = event {
                        self.on_conn_event(event);
                        for _ in 1..BATCH {
                            match self.events_rx.try_recv() {
                                Ok(event) => self.on_conn_event(event),
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = self.shared.wake.notified() => {}
                () = timer => {}
            }
            self.take_submissions();
            let now = Instant::now();
            if self.client.poll_timeout().is_some_and(|at| at <= now) {
                self.client.handle_timeout(now);
            }
        }
        self.finish();
    }

    /// Executes what the client asked for, delivers what it completed and the changes it
    /// reported, publishes its health, and wakes the shards that got any.
    fn turn(&mut self) {
        while let Some(cmd) = self.client.poll_command() {
            self.execute(cmd);
        }
        let now = Instant::now();
        while let Some(done) = self.client.poll_completion() {
            let (submitter, outcome) = match done {
                Completion::Acked { write, reply } => {
                    (self.writes.remove(&write), Outcome::Acked(reply))
                }
                Completion::Failed {
                    write,
                    retry_after_s,
                } => (
                    self.writes.remove(&write),
                    Outcome::Failed { retry_after_s },
                ),
                Completion::ReadDone { read, reply } => {
                    (self.reads.remove(&read), Outcome::Acked(reply))
                }
                Completion::ReadFailed {
                    read,
                    retry_after_s,
                } => (self.reads.remove(&read), Outcome::Failed { retry_after_s }),
            };
            match submitter {
                Some((shard, token, submitted)) => {
                    if matches!(outcome, Outcome::Acked(_)) {
                        self.round_trips
                            .observe(now.saturating_duration_since(submitted));
                    }
                    self.deliver(shard, token, outcome)
                }
                None => tracing::error!("completion of an unknown write or read"),
            }
        }
        while let Some(change) = self.client.poll_change() {
            self.route_change(change);
        }
        // Published before the wake-ups: a shard that took a completion finds it counted.
        self.publish_health();
        self.wake_shards();
    }

    /// A changed AOR goes to its owner shard; a resync, or a payload that is not an AOR, to
    /// every shard. A full change queue turns into a resync of that shard.
    fn route_change(&mut self, change: Change) {
        let payload = match change {
            Change::Resync => {
                tracing::debug!("data subscription (re)established: every shard resyncs");
                return (0..self.shards.len()).for_each(|shard| self.resync(shard));
            }
            Change::Published(payload) => payload,
        };
        let Ok(aor) = Aor::parse(&payload) else {
            tracing::warn!(%payload, "not an AOR on the changes channel; every shard resyncs");
            return (0..self.shards.len()).for_each(|shard| self.resync(shard));
        };
        let shard = owner_shard(&aor, self.shards.len());
        let Some(side) = self.shards.get(shard) else {
            return;
        };
        match side.changes.try_send(aor) {
            Ok(()) => self.to_wake[shard] = true,
            Err(crossbeam_channel::TrySendError::Full(_)) => self.resync(shard),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
        }
    }

    fn resync(&mut self, shard: usize) {
        if let Some(side) = self.shards.get(shard) {
            side.resync.store(true, Ordering::Release);
            self.to_wake[shard] = true;
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { conn, addr, kind } => {
                let (commands, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(conn::run(
                    conn,
                    addr.clone(),
                    self.connect_timeout,
                    rx,
                    self.events_tx.clone(),
                ));
                tracing::debug!(conn = conn.0, %addr, ?kind, "connecting");
                let c = Conn {
                    kind,
                    addr,
                    commands,
                    requests: VecDeque::new(),
                    task: task.abort_handle(),
                };
                self.conns.insert(conn, c);
            }
            Command::Send { conn, request, cmd } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    tracing::debug!(conn = conn.0, "send on a connection already closed");
                    return;
                };
                let expect = match &cmd {
                    RedisCommand::Subscribe(channels) if !channels.is_empty() => {
                        Expect::Subscriptions(channels.len())
                    }
                    _ => Expect::Reply,
                };
                c.requests.push_back((request, expect));
                // Fails only once the task has ended, and then it reports why (or the
                // client already gave the connection up): nothing to do here.
                let _ = c.commands.send(conn::pack(&cmd));
            }
            Command::Close { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    tracing::debug!(conn = conn.0, addr = %c.addr, "closing");
                }
            }
        }
    }

    fn on_conn_event(&mut self, (conn, event): (ConnId, ConnEvent)) {
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(&conn) else {
            // A late event from a connection the client closed: ignored, as the client would.
            return;
        };
        let event = match event {
            ConnEvent::Connected => {
                tracing::debug!(conn = conn.0, addr = %c.addr, "connected");
                Event::Connected { conn }
            }
            ConnEvent::ConnectFailed(why) => {
                tracing::debug!(conn = conn.0, addr = %c.addr, "connect failed: {why}");
                Event::ConnectFailed { conn }
            }
            ConnEvent::Closed(why) => {
                tracing::debug!(conn = conn.0, addr = %c.addr, "connection lost: {why}");
                Event::Disconnected { conn }
            }
            ConnEvent::Value(value) => match route(c, conn, value) {
                Some(event) => event,
                None => return,
            },
        };
        self.client.handle(event, now);
    }

    /// Submissions waiting in the queue, at most [`BATCH`] per turn (then the loop comes back).
    fn take_submissions(&mut self) {
        let now = Instant::now();
        for _ in 0..BATCH {
            let Ok(Submission {
                shard,
                token,
                write,
                read,
            }) = self.submissions.try_recv()
            else {
                return;
            };
            let accepted = if read {
                self.client
                    .submit_read(write, now)
                    .map(|id| self.reads.insert(id, (shard, token, now)))
            } else {
                self.client
                    .submit(write, now)
                    .map(|id| self.writes.insert(id, (shard, token, now)))
            };
            if let Err(rejected) = accepted {
                tracing::debug!(shard, read, "refused: {rejected}");
                self.deliver(shard, token, Outcome::Rejected(rejected));
            }
        }
        // More may be waiting: come back after this turn.
        if !self.submissions.is_empty() {
            self.shared.wake.notify_one();
        }
    }

    fn deliver(&mut self, shard: usize, token: u64, outcome: Outcome) {
        let Some(side) = self.shards.get(shard) else {
            tracing::error!(shard, "outcome for a shard that does not exist");
            return;
        };
        match side.completions.try_send((token, outcome)) {
            Ok(()) => self.to_wake[shard] = true,
            // The shard keeps at most as many writes in flight as its queue holds.
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                tracing::error!(shard, "completion queue full; outcome dropped")
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                tracing::debug!(shard, "shard gone; outcome dropped")
            }
        }
    }

    fn wake_shards(&mut self) {
        for (side, wake) in self.shards.iter_mut().zip(&mut self.to_wake) {
            if !std::mem::take(wake) {
                continue;
            }
            match side.wakeup.write(&[1]) {
                // WouldBlock: unread bytes are waiting already, the shard will wake anyway.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => tracing::debug!("shard wake-up: {e}"),
            }
        }
    }

    fn publish_health(&mut self) {
        let health = self.client.health();
        let (state, master, error) = &self.logged;
        if health.state != *state || health.master != *master {
            match (&health.state, &health.master) {
                (HaState::Ready, Some(m)) => tracing::info!(master = %m, "redis master verified"),
                (_, _) if *state == HaState::Ready => tracing::warn!(
                    pending = health.pending_writes,
                    "redis master lost ({}); holding writes",
                    health
                        .last_error
                        .as_ref()
                        .map_or_else(|| "no error recorded".to_owned(), ToString::to_string)
                ),
                _ => {}
            }
        }
        if health.last_error != *error {
            if let Some(e) = &health.last_error {
                tracing::warn!("redis: {e}");
            }
        }
        self.logged = (
            health.state,
            health.master.clone(),
            health.last_error.clone(),
        );
        *self.shared.health() = health;
        *self.shared.round_trips() = self.round_trips;
    }

    /// Answers every write still held (the shards must not wait for a thread that is gone).
    fn finish(&mut self) {
        let mut failed = 0usize;
        let retry_after_s = self.retry_after_s;
        let held = std::mem::take(&mut self.writes)
            .into_values()
            .chain(std::mem::take(&mut self.reads).into_values());
        for (shard, token, _) in held.collect::<Vec<_>>() {
            self.deliver(shard, token, Outcome::Failed { retry_after_s });
            failed += 1;
        }
        while let Ok(s) = self.submissions.try_recv() {
            self.deliver(s.shard, s.token, Outcome::Failed { retry_after_s });
            failed += 1;
        }
        self.wake_shards();
        self.conns.clear();
        tracing::info!(
            failed,
            "redis thread stopping; writes and reads still held were failed"
        );
    }
}

/// Turns a value read on `c` into the client's event: a pub/sub message, or the reply to the
/// oldest request. `None` while a multi-channel subscription is not complete.
fn route(c: &mut Conn, conn: ConnId, value: redis::Value) -> Option<Event> {
    if c.kind.is_subscriber() {
        if let Some((channel, payload)) = conn::as_message(&value) {
            return Some(Event::Message {
                conn,
                channel,
                payload,
            });
        }
    }
    let Some((request, expect)) = c.requests.front_mut() else {
        tracing::warn!(conn = conn.0, addr = %c.addr, "unsolicited reply; dropping the connection");
        return Some(Event::Disconnected { conn });
    };
    let request = *request;
    if let Expect::Subscriptions(left) = expect {
        if conn::is_subscribe_confirmation(&value) && *left > 1 {
            *left -= 1;
            return None;
        }
    }
    c.requests.pop_front();
    Some(Event::Reply {
        conn,
        request,
        reply: conn::to_reply(value),
    })
}
