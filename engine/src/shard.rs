//! The shard runtime: the thin shell of glommio I/O around a [`ShardCore`].
//!
//! One shard per core, each on its own glommio executor pinned to that core. A shard binds its
//! own SO_REUSEPORT UDP socket and TCP listener for every listen address (the kernel spreads
//! datagrams and connections over the shards), owns the connections it accepted or opened, and
//! feeds everything it receives to its core, then carries out what the core asks for. Cores talk
//! to each other only through the bounded channel mesh.
//!
//! Messages to other shards are batched: what one burst of datagrams (or one batch received from
//! another shard) produces for a shard goes to it as one channel message. Waking an idle executor
//! costs tens of microseconds (an eventfd write, and a process-wide memory barrier each time an
//! executor goes to sleep), far more than handling a REGISTER, so a busy shard pays it once per
//! burst rather than once per request.
//!
//! Nothing here decides anything about SIP: that is the core's job, so it can be tested without
//! sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::StreamExt;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use glommio::{spawn_local, timer};
use sipshard_net::{Frame, StreamFramer, Transport};
use tracing::{debug, info, warn};

use sipshard_registrar::redis_bridge;
use sipshard_registrar::redis_thread::{self, Outcome, ShardLink};

use crate::core::{
    CacheChange, ConnId, Counters, DatabaseResult, Inbound, Output, ShardCore, ShardMsg,
};
use crate::dos::{FloodGuard, FloodSettings};
use crate::reload::PasswordReload;
use crate::tls;
use crate::transaction::TransactionId;

/// How often the shard looks at its timer table. SIP timers are hundreds of milliseconds and
/// more (T1 = 500 ms), so 10 ms resolution costs nothing in accuracy and keeps the loop simple.
const TIMER_TICK: Duration = Duration::from_millis(10);

/// Outbound messages queued per stream connection before new ones are dropped (and counted).
const CONNECTION_QUEUE: usize = 256;

/// Datagrams read in one burst (without waiting) before the shard flushes its batches to other
/// shards and lets its other tasks run.
const UDP_BURST: usize = 32;

/// What one shard sends another in one channel message.
pub type ShardBatch = Vec<ShardMsg>;

/// What the runtime needs to know, decided by the node from the configuration.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub listens: Vec<(Transport, SocketAddr)>,
    pub max_message_bytes: usize,
    /// Read size for stream sockets.
    pub read_chunk_bytes: usize,
    /// `[module::DoSProtection]`; `None` when disabled.
    pub flood: Option<FloodSettings>,
    /// Addresses exempt from `max_connections_per_address` (white-list, cluster nodes, loopback).
    pub trusted: Vec<IpAddr>,
    /// Stream connections one shard holds at most.
    pub max_connections: usize,
    /// Stream connections one shard accepts from one address.
    pub max_connections_per_address: usize,
    /// The TLS server configuration, shared by the shards; `Some` when a listen is TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The per-shard I/O state shared by the shard's tasks (all on one thread).
struct Shell {
    id: usize,
    core: RefCell<ShardCore>,
    settings: RuntimeSettings,
    udp: Vec<UdpEndpoint>,
    mesh: Senders<ShardBatch>,
    /// Messages for each shard, sent by [`flush_batches`].
    batches: RefCell<Vec<ShardBatch>>,
    /// This shard's link to the Redis thread (Redis mode).
    database: Option<ShardLink>,
    /// The password file as last read (SIGHUP), taken up on the timer tick.
    password_reload: Option<Arc<PasswordReload>>,
    connections: RefCell<Connections>,
}

/// One bound UDP socket: glommio's handle to wait on it, and a second handle to the same socket
/// to read what is already queued without waiting.
struct UdpEndpoint {
    local: SocketAddr,
    socket: Rc<UdpSocket>,
    queued: socket2::Socket,
}

/// A connection's bounded queue of messages to write.
type Outbox = LocalSender<Rc<[u8]>>;

struct Connections {
    shard: usize,
    next_id: u64,
    by_id: HashMap<ConnId, (SocketAddr, Rc<Outbox>)>,
    by_remote: HashMap<SocketAddr, ConnId>,
    /// Connections per remote address.
    per_address: HashMap<IpAddr, usize>,
}

/// Runs one shard until the process ends. Binds every listen address; a bind failure is
/// returned (the node stops: no half-working server).
pub async fn run(
    shard: usize,
    core: ShardCore,
    settings: RuntimeSettings,
    mesh: MeshBuilder<ShardBatch, Full>,
    mut database: Option<ShardLink>,
    password_reload: Option<Arc<PasswordReload>>,
    bound: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut core = core;
    core.set_flood_guard(settings.flood.clone().map(FloodGuard::new));
    let database_wakeup = database.as_mut().and_then(ShardLink::take_wakeup);
    let (senders, mut receivers) = match mesh.join().await {
        Ok(joined) => joined,
        Err(_) => {
            let _ = bound.send(Err("could not join the shard mesh".into()));
            return;
        }
    };
    let mut udp = Vec::new();
    let mut listeners = Vec::new();
    for &(transport, addr) in &settings.listens {
        let result = match transport {
            Transport::Udp => bind_udp(addr)
                .map(|(socket, queued)| {
                    udp.push(UdpEndpoint {
                        local: addr,
                        socket: Rc::new(socket),
                        queued,
                    })
                })
                .map_err(glommio::GlommioError::from),
            Transport::Tcp => {
                TcpListener::bind(addr).map(|l| listeners.push((Transport::Tcp, addr, l)))
            }
            Transport::Tls if settings.tls.is_some() => {
                TcpListener::bind(addr).map(|l| listeners.push((Transport::Tls, addr, l)))
            }
            other => {
                let _ = bound.send(Err(format!(
                    "{other} listening is not supported yet ({addr})"
                )));
                return;
            }
        };
        if let Err(e) = result {
            let _ = bound.send(Err(format!("cannot listen on {transport} {addr}: {e}")));
            return;
        }
    }
    let _ = bound.send(Ok(()));

    let shards = senders.nr_consumers();
    let shell = Rc::new(Shell {
        id: shard,
        core: RefCell::new(core),
        settings,
        udp,
        mesh: senders,
        batches: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
        database,
        password_reload,
        connections: RefCell::new(Connections::new(shard)),
    });
    let mut tasks = Vec::new();
    for index in 0..shell.udp.len() {
        tasks.push(spawn_local(udp_loop(shell.clone(), index)));
    }
    for (transport, local, listener) in listeners {
        tasks.push(spawn_local(accept_loop(
            shell.clone(),
            transport,
            local,
            listener,
        )));
    }
    for (_, receiver) in receivers.streams() {
        let shell = shell.clone();
        tasks.push(spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                let mut out = Vec::new();
                {
                    let mut core = shell.core.borrow_mut();
                    let now = Instant::now();
                    for msg in batch {
                        core.on_shard_message(msg, now, &mut out);
                    }
                }
                perform(&shell, out).await;
                flush_batches(&shell).await;
            }
        }));
    }
    if let Some(wakeup) = database_wakeup {
        tasks.push(spawn_local(database_loop(shell.clone(), wakeup)));
    }
    tasks.push(spawn_local(timer_loop(shell.clone())));
    for task in tasks {
        task.await;
    }
}

/// Kernel buffer size asked for on each UDP socket. The default (about 200 KiB) overflows within
/// milliseconds at tens of thousands of datagrams a second, and every overflow costs a
/// retransmission; the kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// A SO_REUSEPORT UDP socket (one per shard on the same address) with large kernel buffers, and
/// a duplicate of its descriptor for [`try_recv`].
fn bind_udp(addr: SocketAddr) -> std::io::Result<(UdpSocket, socket2::Socket)> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    // Best effort: a smaller buffer than asked for is still a working socket.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&SockAddr::from(addr))?;
    let queued = socket.try_clone()?;
    Ok((UdpSocket::from(socket), queued))
}

/// Reads one datagram if one is queued, without waiting (`WouldBlock` otherwise). The socket
/// stays in blocking mode for glommio's io_uring reads; `MSG_DONTWAIT` applies to this call only.
fn try_recv(socket: &socket2::Socket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the receive only writes
    // initialised bytes, so `buf` stays a valid `[u8]`.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (len, from) = socket.recv_from_with_flags(uninit, libc::MSG_DONTWAIT)?;
    let from = from
        .as_socket()
        .ok_or_else(|| std::io::Error::other("datagram from a non-IP address"))?;
    Ok((len, from))
}

/// Waits for a datagram, then reads up to a burst of those already queued, then flushes the
/// batches for other shards and yields to the shard's other tasks (timers, connections, the
/// mesh), which a saturated socket would otherwise starve.
async fn udp_loop(shell: Rc<Shell>, index: usize) {
    let endpoint = &shell.udp[index];
    let (local, socket) = (endpoint.local, endpoint.socket.clone());
    let mut buf = vec![0u8; 65535];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, remote)) => on_datagram(&shell, local, &buf[..len], remote).await,
            // ICMP errors surface here on Linux; they concern one earlier send only.
            Err(e) => debug!(%local, "udp receive error: {e}"),
        }
        for _ in 1..UDP_BURST {
            match try_recv(&shell.udp[index].queued, &mut buf) {
                Ok((len, remote)) => on_datagram(&shell, local, &buf[..len], remote).await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => debug!(%local, "udp receive error: {e}"),
            }
        }
        flush_batches(&shell).await;
        glommio::yield_if_needed().await;
    }
}

async fn on_datagram(shell: &Rc<Shell>, local: SocketAddr, bytes: &[u8], remote: SocketAddr) {
    let from = Inbound {
        transport: Transport::Udp,
        local,
        remote,
        conn: None,
    };
    let mut out = Vec::new();
    {
        let mut core = shell.core.borrow_mut();
        let now = Instant::now();
        if !core.admit(remote.ip(), now) {
            return;
        }
        core.on_datagram(bytes, from, now, &mut out);
    }
    perform(shell, out).await;
}

/// Accepts the connections of one TCP or TLS listener. A TLS connection counts (limits, and as
/// the peer's connection for sends, which wait in its queue) from the TCP accept on; it is served
/// once its handshake completes.
async fn accept_loop(
    shell: Rc<Shell>,
    transport: Transport,
    local: SocketAddr,
    listener: TcpListener,
) {
    let acceptor = match (transport, &shell.settings.tls) {
        (Transport::Tls, Some(config)) => Some(futures_rustls::TlsAcceptor::from(config.clone())),
        _ => None,
    };
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        match stream {
            Ok(stream) => {
                let remote = match stream.peer_addr() {
                    Ok(remote) => remote,
                    Err(_) => continue,
                };
                if !admit_connection(&shell, remote) {
                    // Dropping the stream closes it.
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let (conn, rx) = shell.connections.borrow_mut().add(remote);
                let shell = shell.clone();
                match &acceptor {
                    None => {
                        spawn_local(serve_connection(
                            shell,
                            stream,
                            Transport::Tcp,
                            local,
                            remote,
                            conn,
                            rx,
                        ))
                        .detach();
                    }
                    Some(acceptor) => {
                        let accept = acceptor.accept(stream);
                        spawn_local(async move {
                            match handshake(accept).await {
                                Ok(tls) => {
                                    serve_connection(
                                        shell,
                                        tls,
                                        Transport::Tls,
                                        local,
                                        remote,
                                        conn,
                                        rx,
                                    )
                                    .await
                                }
                                Err(e) => {
                                    debug!(%remote, "TLS handshake failed: {e}");
                                    // Dropping the stream (in `accept`) closed it.
                                    shell.connections.borrow_mut().remove(conn);
                                }
                            }
                        })
                        .detach();
                    }
                }
            }
            Err(e) => warn!(%local, "accept failed: {e}"),
        }
    }
}

/// Runs a server TLS handshake to its end, or fails it after [`tls::HANDSHAKE_TIMEOUT`] (a peer
/// that connects and sends nothing, or trickles its hello, holds a connection no longer).
async fn handshake(
    accept: futures_rustls::Accept<TcpStream>,
) -> std::io::Result<futures_rustls::server::TlsStream<TcpStream>> {
    let timeout = async {
        timer::sleep(tls::HANDSHAKE_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no complete handshake in time",
        ))
    };
    let mut stream = futures_lite::future::or(accept, timeout).await?;
    // Sends what the handshake left queued (TLS 1.3 session tickets) without waiting for the
    // first response.
    stream.flush().await?;
    Ok(stream)
}

/// Whether to keep a connection just accepted from `remote`: within the shard's limits (in
/// total, and per address unless trusted) and admitted by the flood guard. A refused one is
/// closed at once, counted.
fn admit_connection(shell: &Shell, remote: SocketAddr) -> bool {
    let settings = &shell.settings;
    let ip = remote.ip().to_canonical();
    let (total, from_address) = shell.connections.borrow().counts(ip);
    let within = total < settings.max_connections
        && (from_address < settings.max_connections_per_address || settings.trusted.contains(&ip));
    let mut core = shell.core.borrow_mut();
    if within && core.admit(ip, Instant::now()) {
        return true;
    }
    core.count_connection_refused();
    debug!(%remote, total, from_address, "connection refused");
    false
}

/// Reads SIP messages from one connection (TCP, or TLS once its handshake is done) and writes
/// what the shard queues for it.
async fn serve_connection<S>(
    shell: Rc<Shell>,
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    conn: ConnId,
    rx: local_channel::LocalReceiver<Rc<[u8]>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = spawn_local(async move {
        while let Some(bytes) = rx.recv().await {
            // TLS buffers what it encrypts until flushed; for TCP the flush costs nothing.
            if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let from = Inbound {
        transport,
        local,
        remote,
        conn: Some(conn),
    };
    let max = shell.settings.max_message_bytes;
    let mut framer = StreamFramer::new(max);
    let mut buf: Vec<u8> = Vec::with_capacity(shell.settings.read_chunk_bytes);
    let mut chunk = vec![0u8; shell.settings.read_chunk_bytes];
    let mut out = Vec::new();
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match framer.next_frame(&buf) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Ping { len }) => {
                    buf.drain(..len);
                    out.push(Output::Send {
                        transport,
                        to: remote,
                        conn: Some(conn),
                        bytes: Rc::from(&b"\r\n"[..]),
                        txn: None,
                    });
                }
                Ok(Frame::Pong { len }) => {
                    buf.drain(..len);
                }
                Ok(Frame::Message { len }) => {
                    let admitted = {
                        let mut core = shell.core.borrow_mut();
                        let now = Instant::now();
                        let admitted = core.admit(remote.ip(), now);
                        if admitted {
                            core.on_stream_message(&buf[..len], from, now, &mut out);
                        }
                        admitted
                    };
                    if !admitted {
                        // Banned: what it sent before is answered, then the connection closes.
                        perform(&shell, std::mem::take(&mut out)).await;
                        flush_batches(&shell).await;
                        break 'read;
                    }
                    buf.drain(..len);
                }
                Err(e) => {
                    shell
                        .core
                        .borrow_mut()
                        .on_unframeable(&buf, e, from, &mut out);
                    perform(&shell, std::mem::take(&mut out)).await;
                    flush_batches(&shell).await;
                    break 'read;
                }
            }
        }
        perform(&shell, std::mem::take(&mut out)).await;
        flush_batches(&shell).await;
    }
    shell.connections.borrow_mut().remove(conn);
    // Dropping the sender (in remove) ends the writer once its queue is flushed.
    writer_task.await;
    debug!(%remote, "connection closed");
}

/// Takes the Redis thread's completions for this shard whenever it signals some (a byte on the
/// wake-up socket; several completions may share one) and hands them to the core.
async fn database_loop(shell: Rc<Shell>, wakeup: std::os::unix::net::UnixStream) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` hands over sole ownership of an open socket descriptor, which the
    // glommio stream then owns and closes.
    let mut wakeup = unsafe { glommio::net::UnixStream::from_raw_fd(wakeup.into_raw_fd()) };
    let mut buf = [0u8; 64];
    loop {
        let stopped = !matches!(wakeup.read(&mut buf).await, Ok(n) if n > 0);
        let mut out = Vec::new();
        if let Some(link) = &shell.database {
            let mut core = shell.core.borrow_mut();
            // Changes first: a completion queued after a change must find the cache already
            // invalidated (the core then does not cache what it carries).
            while let Some(change) = link.try_change() {
                core.on_cache_change(match change {
                    redis_thread::CacheChange::Changed(aor) => CacheChange::Changed(aor),
                    redis_thread::CacheChange::Resync => CacheChange::Resync,
                });
            }
            while let Some((token, outcome)) = link.try_completion() {
                let result = match outcome {
                    Outcome::Acked(reply) => DatabaseResult::Reply(reply),
                    Outcome::Failed { retry_after_s } => {
                        DatabaseResult::Unavailable { retry_after_s }
                    }
                    Outcome::Rejected(why) => {
                        debug!("registrar write refused: {why}");
                        DatabaseResult::Unavailable {
                            retry_after_s: DATABASE_RETRY_AFTER_S,
                        }
                    }
                };
                core.on_database_result(token, result, Instant::now(), &mut out);
            }
        }
        perform(&shell, out).await;
        flush_batches(&shell).await;
        if stopped {
            // The Redis thread is gone: writes still waiting are answered 503 when their wait
            // limit passes.
            warn!(shard = shell.id, "the Redis thread stopped");
            return;
        }
    }
}

/// Retry-After of the 503 for a write the Redis thread refused at once (queue or journal full).
const DATABASE_RETRY_AFTER_S: u32 = 5;

/// How often a shard logs its counters when something went wrong since the last report.
const REPORT_INTERVAL: Duration = Duration::from_secs(60);

async fn timer_loop(shell: Rc<Shell>) {
    let mut out = Vec::new();
    let mut wall_second = 0;
    let mut next_report = Instant::now() + REPORT_INTERVAL;
    let mut reported = Counters::default();
    let mut passwords_read = 0;
    loop {
        timer::sleep(TIMER_TICK).await;
        if let Some(reload) = &shell.password_reload {
            let generation = reload.generation();
            if generation != passwords_read {
                passwords_read = generation;
                shell.core.borrow_mut().set_password_db(reload.current());
            }
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let second = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != wall_second {
            wall_second = second;
            shell.core.borrow_mut().set_wall_clock(wall);
        }
        if now >= next_report {
            next_report = now + REPORT_INTERVAL;
            let counters = shell.core.borrow().counters().clone();
            let troubled = counters.overloaded != reported.overloaded
                || counters.malformed != reported.malformed
                || counters.send_failures != reported.send_failures
                || counters.flood_dropped != reported.flood_dropped
                || counters.connections_refused != reported.connections_refused;
            if troubled {
                warn!(
                    shard = shell.id,
                    overloaded = counters.overloaded - reported.overloaded,
                    malformed = counters.malformed - reported.malformed,
                    send_failures = counters.send_failures - reported.send_failures,
                    flood_dropped = counters.flood_dropped - reported.flood_dropped,
                    connections_refused =
                        counters.connections_refused - reported.connections_refused,
                    "in the last minute"
                );
            }
            reported = counters;
        }
        let due = shell
            .core
            .borrow()
            .next_deadline()
            .is_some_and(|d| d <= now);
        if due {
            shell.core.borrow_mut().on_timers(now, &mut out);
            perform(&shell, std::mem::take(&mut out)).await;
            flush_batches(&shell).await;
        }
    }
}

/// Carries out what the core asked for. Sends never block the shard on a slow peer: stream
/// writes are queued per connection (bounded), datagrams go straight to the socket. Messages for
/// other shards join their batch; [`flush_batches`] sends them.
async fn perform(shell: &Rc<Shell>, outputs: Vec<Output>) {
    let mut pending = std::collections::VecDeque::from(outputs);
    while let Some(output) = pending.pop_front() {
        let mut more = Vec::new();
        match output {
            Output::Send {
                transport,
                to,
                conn,
                bytes,
                txn,
            } => {
                if !send(shell, transport, to, conn, bytes).await {
                    report_failure(shell, txn, &mut more);
                }
            }
            Output::ToShard { shard, msg } => match shell.batches.borrow_mut().get_mut(shard) {
                Some(batch) => batch.push(msg),
                None => shell.core.borrow_mut().count_send_failure(),
            },
            Output::ToDatabase { token, call } => {
                // A read-only script (a lookup) is a read: it is served by a replica while no
                // master is known, and never journaled.
                let read = call.script.read_only;
                let submitted = match (&shell.database, redis_bridge::to_write(call)) {
                    (Some(link), Some(write)) if read => link.submit_read(token, write),
                    (Some(link), Some(write)) => link.submit(token, write),
                    _ => Err(redis_thread::SubmitError::Gone),
                }
                .map_err(|e| debug!("registrar database request not queued: {e}"))
                .is_ok();
                if !submitted {
                    let unavailable = DatabaseResult::Unavailable {
                        retry_after_s: DATABASE_RETRY_AFTER_S,
                    };
                    shell.core.borrow_mut().on_database_result(
                        token,
                        unavailable,
                        Instant::now(),
                        &mut more,
                    );
                }
            }
        }
        pending.extend(more);
    }
}

/// Sends each shard its batch, one channel message per shard. A full channel means that shard is
/// overloaded: whatever waited on the batch's messages is answered 503 by the core (which may
/// queue messages for other shards again, hence the bounded loop).
async fn flush_batches(shell: &Rc<Shell>) {
    for _ in 0..4 {
        let batches: Vec<(usize, ShardBatch)> = shell
            .batches
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(shard, batch)| (shard, std::mem::take(batch)))
            .collect();
        if batches.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for (shard, batch) in batches {
            if let Err(e) = shell.mesh.try_send_to(shard, batch) {
                let mut core = shell.core.borrow_mut();
                match e {
                    glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(batch)) => {
                        let now = Instant::now();
                        for msg in batch {
                            core.on_shard_unreachable(msg, now, &mut out);
                        }
                    }
                    _ => core.count_send_failure(),
                }
            }
        }
        perform(shell, out).await;
    }
}

fn report_failure(shell: &Rc<Shell>, txn: Option<TransactionId>, out: &mut Vec<Output>) {
    let mut core = shell.core.borrow_mut();
    match txn {
        Some(txn) => core.on_send_failed(txn, Instant::now(), out),
        None => core.count_send_failure(),
    }
}

/// Sends one message; false when it could not be handed to the kernel or a connection queue.
async fn send(
    shell: &Rc<Shell>,
    transport: Transport,
    to: SocketAddr,
    conn: Option<ConnId>,
    bytes: Rc<[u8]>,
) -> bool {
    if transport == Transport::Udp {
        let socket = shell
            .udp
            .iter()
            .find(|endpoint| endpoint.local.is_ipv4() == to.is_ipv4())
            .map(|endpoint| endpoint.socket.clone());
        return match socket {
            Some(socket) => match socket.send_to(&bytes, to).await {
                Ok(_) => true,
                Err(e) => {
                    debug!(remote = %to, "udp send failed: {e}");
                    false
                }
            },
            None => false,
        };
    }
    let existing = shell.connections.borrow().sender(conn, to);
    match existing {
        Some(tx) => tx.try_send(bytes).is_ok(),
        None if transport == Transport::Tcp => connect_and_send(shell, to, bytes).await,
        None => {
            // Outgoing TLS (and WebSocket) connections are not opened yet: only a connection
            // the peer opened can carry them.
            debug!(remote = %to, "no open {transport} connection to send on");
            false
        }
    }
}

/// Opens a TCP connection to a peer with none (a registered contact, a next hop) and serves it
/// like an accepted one, so responses on it come back to this shard.
async fn connect_and_send(shell: &Rc<Shell>, to: SocketAddr, bytes: Rc<[u8]>) -> bool {
    match TcpStream::connect_timeout(to, Duration::from_secs(2)).await {
        Ok(stream) => {
            let Ok(local) = stream.local_addr() else {
                return false;
            };
            let _ = stream.set_nodelay(true);
            let (conn, rx) = shell.connections.borrow_mut().add(to);
            let queued = shell
                .connections
                .borrow()
                .by_id
                .get(&conn)
                .is_some_and(|(_, tx)| tx.try_send(bytes).is_ok());
            spawn_local(serve_connection(
                shell.clone(),
                stream,
                Transport::Tcp,
                local,
                to,
                conn,
                rx,
            ))
            .detach();
            queued
        }
        Err(e) => {
            info!(remote = %to, "connect failed: {e}");
            false
        }
    }
}

impl Connections {
    fn new(shard: usize) -> Connections {
        Connections {
            shard,
            next_id: 0,
            by_id: HashMap::new(),
            by_remote: HashMap::new(),
            per_address: HashMap::new(),
        }
    }

    /// Connections in all, and from `ip`.
    fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let from_ip = self.per_address.get(&ip).copied().unwrap_or(0);
        (self.by_id.len(), from_ip)
    }

    /// Registers a connection and its bounded outbound queue. Ids carry the shard number in
    /// their top bits so any shard can tell which one owns a connection.
    fn add(&mut self, remote: SocketAddr) -> (ConnId, local_channel::LocalReceiver<Rc<[u8]>>) {
        let (tx, rx) = local_channel::new_bounded::<Rc<[u8]>>(CONNECTION_QUEUE);
        self.next_id += 1;
        let id = ((self.shard as u64) << 48) | self.next_id;
        self.by_id.insert(id, (remote, Rc::new(tx)));
        self.by_remote.insert(remote, id);
        *self
            .per_address
            .entry(remote.ip().to_canonical())
            .or_default() += 1;
        (id, rx)
    }

    /// The queue of connection `conn` if this shard holds it, else of any connection to `to`.
    fn sender(&self, conn: Option<ConnId>, to: SocketAddr) -> Option<Rc<Outbox>> {
        conn.and_then(|id| self.by_id.get(&id))
            .or_else(|| self.by_remote.get(&to).and_then(|id| self.by_id.get(id)))
            .map(|(_, tx)| tx.clone())
    }

    fn remove(&mut self, id: ConnId) {
        if let Some((remote, _)) = self.by_id.remove(&id) {
            if self.by_remote.get(&remote) == Some(&id) {
                self.by_remote.remove(&remote);
            }
            let ip = remote.ip().to_canonical();
            if let Some(count) = self.per_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
    }
}
