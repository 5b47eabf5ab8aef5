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
use sipshard_net::{Frame, StreamFramer, Transport, websocket};
use tracing::{debug, info, warn};

use sipshard_registrar::redis_bridge;
use sipshard_registrar::redis_thread::{self, Outcome, ShardLink};

use crate::admin::{self, BindingsAnswer, Query, ShardOps};
use crate::core::{
    CacheChange, ConnId, Counters, DatabaseResult, Inbound, Output, ShardCore, ShardMsg,
};
use crate::dos::{FloodGuard, FloodSettings};
use crate::lifecycle::Phase;
use crate::metrics::{HANDLING_BOUNDS, Histogram, ShardSnapshot};
use crate::reload::PasswordReload;
use crate::tls;
use crate::transaction::TransactionId;

/// How often the shard looks at its timer table. SIP timers are hundreds of milliseconds and
/// more (T1 = 500 ms), so 10 ms resolution costs nothing in accuracy and keeps the loop simple.
const TIMER_TICK: Duration = Duration::from_millis(10);

/// Outbound messages queued per stream connection before new ones are dropped (and counted).
/// Room for the answers to what one read brought (16 KiB of requests) and to the requests still
/// waiting on other shards, above [`READ_PAUSE_QUEUE`].
const CONNECTION_QUEUE: usize = 1024;

/// A connection's reader stops reading while this many messages wait in its outbox, so that its
/// peer's own requests cannot fill the queue (see `Reading::outbox_drained`).
const READ_PAUSE_QUEUE: usize = 64;

/// How often a paused reader looks at its outbox again.
const READ_PAUSE_POLL: Duration = Duration::from_millis(1);

/// Datagrams read in one burst (without waiting) before the shard flushes its batches to other
/// shards and lets its other tasks run.
const UDP_BURST: usize = 32;

/// What one shard sends another in one channel message.
pub type ShardBatch = Vec<MeshMsg>;

/// A message between shards: for the receiving core, or for the receiving shell, which owns a
/// connection the sender needs.
#[derive(Debug)]
pub enum MeshMsg {
    Core(ShardMsg),
    Transmit(Transmit),
    /// A [`Transmit`] whose connection is gone, back to its sender with its bytes: the sender
    /// sends them as if it had known no connection (another one to the address, or a new one).
    Returned(Transmit),
    /// A [`Transmit`] for the receiving shard's transaction `txn` could not be written (its
    /// connection's queue is full).
    TransmitFailed {
        txn: TransactionId,
    },
}

/// Bytes to write on stream connection `conn`, which the receiving shard owns (a connection
/// lives on the shard that accepted or opened it), for `to` over `transport`. A failure is
/// reported back to shard `from` when `txn` is set.
#[derive(Debug)]
pub struct Transmit {
    conn: ConnId,
    transport: Transport,
    to: SocketAddr,
    bytes: Box<[u8]>,
    from: usize,
    txn: Option<TransactionId>,
}

/// The shard that owns connection `conn` (its index is in the id's top 16 bits).
fn owner_of(conn: ConnId) -> usize {
    (conn >> 48) as usize
}

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
    /// The TLS server configuration, shared by the shards; `Some` when a listen is TLS or WSS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The configuration of the TLS connections the shards open.
    pub tls_client: Arc<rustls::ClientConfig>,
    /// A connection that carried nothing for this long is closed (`idle-timeout`).
    pub idle_timeout: Duration,
    /// Longest a peer may take to complete a message it started (`incomplete-message-timeout`).
    pub incomplete_message_timeout: Duration,
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
    /// The admin endpoint's link and the node's lifecycle.
    ops: ShardOps,
    /// Time spent handling each received message (published with the counters).
    handling: RefCell<Histogram>,
    /// The listeners' accept tasks: dropped (cancelled, closing the listeners) when draining.
    accepts: RefCell<Vec<glommio::Task<()>>>,
    /// Admin `/bindings` queries waiting for a Redis read, by the core's token, with whether
    /// the cache held the AOR. Bounded by the core's database waits.
    operator_reads: RefCell<HashMap<u64, (crossbeam_channel::Sender<BindingsAnswer>, bool)>>,
}

/// One bound UDP socket: glommio's handle to wait on it, and a second handle to the same socket
/// to read what is already queued without waiting.
struct UdpEndpoint {
    local: SocketAddr,
    socket: Rc<UdpSocket>,
    queued: socket2::Socket,
}

/// A connection's bounded queue of what to write on it.
type Outbox = LocalSender<Outgoing>;

struct Connections {
    shard: usize,
    next_id: u64,
    by_id: HashMap<ConnId, (SocketAddr, Rc<Outbox>)>,
    by_remote: HashMap<SocketAddr, ConnId>,
    /// Connections per remote address.
    per_address: HashMap<IpAddr, usize>,
}

/// Runs one shard until the node stops ([`crate::lifecycle`]). Binds every listen address; a
/// bind failure is returned (the node stops: no half-working server).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    shard: usize,
    core: ShardCore,
    settings: RuntimeSettings,
    mesh: MeshBuilder<ShardBatch, Full>,
    mut database: Option<ShardLink>,
    password_reload: Option<Arc<PasswordReload>>,
    ops: ShardOps,
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
            Transport::Tcp | Transport::Ws => {
                TcpListener::bind(addr).map(|l| listeners.push((transport, addr, l)))
            }
            Transport::Tls | Transport::Wss if settings.tls.is_some() => {
                TcpListener::bind(addr).map(|l| listeners.push((transport, addr, l)))
            }
            other => {
                let _ = bound.send(Err(format!(
                    "{other} listening needs a TLS certificate ({addr})"
                )));
                return;
            }
        };
        if let Err(e) = result {
            let _ = bound.send(Err(format!("cannot listen on {transport} {addr}: {e}")));
            return;
        }
    }
    // Before the node's `listening on`, which follows the last shard's report.
    ops.lifecycle.set_listening(shard);
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
        ops,
        handling: RefCell::new(Histogram::new(&HANDLING_BOUNDS)),
        accepts: RefCell::new(Vec::new()),
        operator_reads: RefCell::new(HashMap::new()),
    });
    let mut tasks = Vec::new();
    for index in 0..shell.udp.len() {
        tasks.push(spawn_local(udp_loop(shell.clone(), index)));
    }
    for (transport, local, listener) in listeners {
        let accept = spawn_local(accept_loop(shell.clone(), transport, local, listener));
        shell.accepts.borrow_mut().push(accept);
    }
    for (_, receiver) in receivers.streams() {
        let shell = shell.clone();
        tasks.push(spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                let mut out = Vec::new();
                let mut transmits = Vec::new();
                let mut returned = Vec::new();
                {
                    let mut core = shell.core.borrow_mut();
                    let now = Instant::now();
                    for msg in batch {
                        match msg {
                            MeshMsg::Core(msg) => core.on_shard_message(msg, now, &mut out),
                            MeshMsg::TransmitFailed { txn } => {
                                core.on_send_failed(txn, now, &mut out)
                            }
                            MeshMsg::Transmit(transmit) => transmits.push(transmit),
                            MeshMsg::Returned(transmit) => returned.push(transmit),
                        }
                    }
                }
                for transmit in transmits {
                    transmit_here(&shell, transmit);
                }
                for t in returned {
                    if !send(&shell, t.transport, t.to, None, t.bytes.into(), t.txn).await {
                        report_failure(&shell, t.txn, &mut out);
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
    // The timer loop returns when the node stops; dropping `tasks` then cancels the others.
    spawn_local(timer_loop(shell.clone())).await;
    drop(tasks);
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
        shell.handling.borrow_mut().observe(now.elapsed());
    }
    perform(shell, out).await;
}

/// Accepts the connections of one TCP, TLS, WS or WSS listener. A TLS connection counts (limits,
/// and as the peer's connection for sends, which wait in its queue) from the TCP accept on; it is
/// served once its handshake completes.
async fn accept_loop(
    shell: Rc<Shell>,
    transport: Transport,
    local: SocketAddr,
    listener: TcpListener,
) {
    let acceptor = match (transport, &shell.settings.tls) {
        (Transport::Tls | Transport::Wss, Some(config)) => {
            Some(futures_rustls::TlsAcceptor::from(config.clone()))
        }
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
                            shell, stream, transport, local, remote, conn, rx,
                        ))
                        .detach();
                    }
                    Some(acceptor) => {
                        let accept = acceptor.accept(stream);
                        spawn_local(async move {
                            match handshake(accept).await {
                                Ok(tls) => {
                                    serve_connection(shell, tls, transport, local, remote, conn, rx)
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
    let mut stream = within(
        tls::HANDSHAKE_TIMEOUT,
        accept,
        "no complete handshake in time",
    )
    .await?;
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

/// Serves one connection (TCP, TLS once its handshake is done, WebSocket once upgraded): reads
/// SIP messages and hands them to the core, and writes what the shard queues for it.
async fn serve_connection<S>(
    shell: Rc<Shell>,
    mut stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    conn: ConnId,
    rx: local_channel::LocalReceiver<Outgoing>,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let websocket = matches!(transport, Transport::Ws | Transport::Wss);
    let mut frames = Vec::new();
    if websocket {
        match accept_websocket(&shell, &mut stream, remote).await {
            Some(after_head) => frames = after_head,
            None => {
                shell.connections.borrow_mut().remove(conn);
                return;
            }
        }
    }
    let (mut reader, writer) = futures_lite::io::split(stream);
    let writer_task = spawn_local(write_loop(writer, rx, websocket));
    let from = Inbound {
        transport,
        local,
        remote,
        conn: Some(conn),
    };
    let mut connection = Reading {
        shell: &shell,
        from,
        outbox: shell.connections.borrow().by_id(conn),
        chunk: vec![0u8; shell.settings.read_chunk_bytes],
        message_started: None,
    };
    if websocket {
        connection.websocket_messages(&mut reader, frames).await;
    } else {
        connection.sip_messages(&mut reader).await;
    }
    // Dropping the last senders (the reader's, and the one in `remove`) ends the writer once its
    // queue is flushed, and the writer's end closes the connection.
    drop(connection);
    shell.connections.borrow_mut().remove(conn);
    writer_task.await;
    debug!(%remote, "connection closed");
}

/// What the shard writes on a connection.
#[derive(Debug)]
enum Outgoing {
    /// A SIP message (in a WebSocket message on a WebSocket connection, RFC 7118 §5).
    Message(Rc<[u8]>),
    /// Bytes written as they are: a WebSocket control frame.
    Raw(Vec<u8>),
}

/// Writes what is queued for a connection until its queue closes.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    rx: local_channel::LocalReceiver<Outgoing>,
    websocket: bool,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // What else is queued goes out in the same write: one TLS record and one send for
        // several messages, so a busy connection's writer keeps up with its reader.
        batch.clear();
        append_outgoing(&mut batch, first, websocket);
        while batch.len() < WRITE_BATCH_BYTES {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(next)) => append_outgoing(&mut batch, next, websocket),
                // Nothing queued, or the queue closed (the next `recv` says so).
                _ => break,
            }
        }
        // TLS buffers what it encrypts until flushed; for TCP the flush costs nothing.
        if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
}

/// Bytes gathered into one write by [`write_loop`] (more once the last message is in).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Appends what `outgoing` puts on the wire: a SIP message (in a WebSocket frame on a WebSocket
/// connection: text when it is, RFC 7118 §5 allows either and browsers expect text), or raw
/// bytes.
fn append_outgoing(batch: &mut Vec<u8>, outgoing: Outgoing, websocket: bool) {
    match outgoing {
        Outgoing::Message(message) if websocket => {
            let opcode = match std::str::from_utf8(&message) {
                Ok(_) => websocket::Opcode::Text,
                Err(_) => websocket::Opcode::Binary,
            };
            websocket::encode_frame(opcode, true, &message, None, batch);
        }
        Outgoing::Message(message) => batch.extend_from_slice(&message),
        Outgoing::Raw(bytes) => batch.extend_from_slice(&bytes),
    }
}

/// Longest WebSocket upgrade request head read.
const MAX_UPGRADE_HEAD: usize = 8 * 1024;

/// Reads the WebSocket opening handshake (RFC 6455 §4.2, RFC 7118 §4.1: the `sip` subprotocol)
/// within `incomplete-message-timeout` and answers it: 101, and the bytes read after the head
/// (the first frames); or the HTTP error and `None` (the connection closes).
async fn accept_websocket<S>(shell: &Shell, stream: &mut S, remote: SocketAddr) -> Option<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + shell.settings.incomplete_message_timeout;
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    let answer = loop {
        let limit = deadline.saturating_duration_since(Instant::now());
        let n = match within(
            limit,
            stream.read(&mut chunk),
            "no complete upgrade in time",
        )
        .await
        {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    shell.core.borrow_mut().count_connection_timed_out();
                }
                debug!(%remote, "WebSocket upgrade not received: {e}");
                return None;
            }
        };
        head.extend_from_slice(&chunk[..n]);
        match websocket::parse_upgrade(&head, MAX_UPGRADE_HEAD) {
            Ok(None) => continue,
            Ok(Some(upgrade)) => break Ok(upgrade),
            Err(e) => break Err(e),
        }
    };
    let (response, frames) = match answer {
        Ok(upgrade) => (
            websocket::upgrade_response(&upgrade),
            Some(head.split_off(upgrade.head_len)),
        ),
        Err(e) => {
            debug!(%remote, "WebSocket upgrade refused: {e}");
            shell.core.borrow_mut().count_malformed();
            (e.response(), None)
        }
    };
    let written = stream.write_all(&response).await.and(stream.flush().await);
    frames.filter(|_| written.is_ok())
}

/// The read side of one connection.
struct Reading<'a> {
    shell: &'a Rc<Shell>,
    from: Inbound,
    /// The connection's own outbox: reading waits while it is well filled.
    outbox: Option<Rc<Outbox>>,
    chunk: Vec<u8>,
    /// When the first byte of the message in progress arrived, while one is.
    message_started: Option<Instant>,
}

impl Reading<'_> {
    /// Reads the next bytes into `chunk`: their count, or `None` when the connection is done —
    /// closed, failed, idle past `idle-timeout`, or with a message in progress for longer than
    /// `incomplete-message-timeout` (a slow sender).
    async fn read<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Option<usize> {
        if !self.outbox_drained().await {
            return None;
        }
        let settings = &self.shell.settings;
        let (limit, why) = match self.message_started {
            Some(started) => (
                (started + settings.incomplete_message_timeout)
                    .saturating_duration_since(Instant::now()),
                "a message not completed in time",
            ),
            None => (settings.idle_timeout, "idle"),
        };
        match within(limit, reader.read(&mut self.chunk), why).await {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                debug!(remote = %self.from.remote, "closing the connection: {e}");
                self.shell.core.borrow_mut().count_connection_timed_out();
                None
            }
            Err(_) => None,
        }
    }

    /// Waits while the connection's outbox holds [`READ_PAUSE_QUEUE`] messages or more, so a peer
    /// that sends requests faster than it reads their answers is slowed down by TCP's flow
    /// control instead of losing answers to a full queue. False (close the connection) when the
    /// peer does not read for `incomplete-message-timeout`.
    async fn outbox_drained(&self) -> bool {
        let Some(outbox) = &self.outbox else {
            return true;
        };
        let started = Instant::now();
        while outbox.len() >= READ_PAUSE_QUEUE {
            if started.elapsed() > self.shell.settings.incomplete_message_timeout {
                debug!(remote = %self.from.remote, "closing the connection: it reads nothing");
                self.shell.core.borrow_mut().count_connection_timed_out();
                return false;
            }
            timer::sleep(READ_PAUSE_POLL).await;
        }
        true
    }

    /// Updates the start of the message in progress after a read: none when nothing is left
    /// over; now when what is left started after a complete message; else unchanged.
    fn track_progress(&mut self, pending: bool, completed: bool) {
        self.message_started = match (pending, completed, self.message_started) {
            (false, _, _) => None,
            (true, false, Some(started)) => Some(started),
            (true, _, _) => Some(Instant::now()),
        };
    }

    /// Hands one SIP message to the core, if the flood guard admits its source: false when it
    /// does not (the connection is then closed).
    fn deliver(&self, message: &[u8], out: &mut Vec<Output>) -> bool {
        let mut core = self.shell.core.borrow_mut();
        let now = Instant::now();
        if !core.admit(self.from.remote.ip(), now) {
            return false;
        }
        match self.from.transport {
            Transport::Ws | Transport::Wss => {
                core.on_websocket_message(message, self.from, now, out)
            }
            _ => core.on_stream_message(message, self.from, now, out),
        }
        self.shell.handling.borrow_mut().observe(now.elapsed());
        true
    }

    /// SIP over TCP or TLS: messages framed by Content-Length (RFC 3261 §18.3), CRLF keep-alives
    /// answered (RFC 5626 §4.4.1).
    async fn sip_messages<R: AsyncRead + Unpin>(&mut self, reader: &mut R) {
        let shell = self.shell;
        let from = self.from;
        let mut framer = StreamFramer::new(shell.settings.max_message_bytes);
        let mut buf: Vec<u8> = Vec::with_capacity(shell.settings.read_chunk_bytes);
        let mut out = Vec::new();
        'read: while let Some(n) = self.read(reader).await {
            buf.extend_from_slice(&self.chunk[..n]);
            let mut completed = false;
            loop {
                match framer.next_frame(&buf) {
                    Ok(Frame::Incomplete) => break,
                    Ok(Frame::Ping { len }) => {
                        buf.drain(..len);
                        out.push(Output::Send {
                            transport: from.transport,
                            to: from.remote,
                            conn: from.conn,
                            bytes: Rc::from(&b"\r\n"[..]),
                            txn: None,
                        });
                    }
                    Ok(Frame::Pong { len }) => {
                        buf.drain(..len);
                    }
                    Ok(Frame::Message { len }) => {
                        if !self.deliver(&buf[..len], &mut out) {
                            // Banned: what it sent before is answered, then the connection
                            // closes.
                            break 'read;
                        }
                        buf.drain(..len);
                        completed = true;
                    }
                    Err(e) => {
                        shell
                            .core
                            .borrow_mut()
                            .on_unframeable(&buf, e, from, &mut out);
                        break 'read;
                    }
                }
            }
            self.track_progress(!buf.is_empty(), completed);
            perform(shell, std::mem::take(&mut out)).await;
            flush_batches(shell).await;
        }
        perform(shell, out).await;
        flush_batches(shell).await;
    }

    /// SIP over WebSocket (RFC 7118 §5): one SIP message per WebSocket message; pings answered,
    /// a close echoed; a protocol error closes the connection with its close code.
    async fn websocket_messages<R: AsyncRead + Unpin>(&mut self, reader: &mut R, first: Vec<u8>) {
        let shell = self.shell;
        let Some(control) = self
            .from
            .conn
            .and_then(|c| shell.connections.borrow().by_id(c))
        else {
            return;
        };
        let mut decoder =
            websocket::FrameDecoder::new(websocket::Role::Server, shell.settings.max_message_bytes);
        let mut out = Vec::new();
        let mut input_owned = first;
        'read: loop {
            let mut input: &[u8] = &input_owned;
            let mut completed = false;
            loop {
                let mut reply = Vec::new();
                match decoder.next_event(&mut input) {
                    Ok(None) => break,
                    Ok(Some(websocket::Event::Message { payload, .. })) => {
                        if !self.deliver(&payload, &mut out) {
                            break 'read;
                        }
                        completed = true;
                    }
                    Ok(Some(websocket::Event::Ping(payload))) => {
                        websocket::encode_pong(&payload, None, &mut reply);
                    }
                    Ok(Some(websocket::Event::Pong(_))) => {}
                    Ok(Some(websocket::Event::Close { code, .. })) => {
                        websocket::encode_close(code.unwrap_or(1000), "", None, &mut reply);
                        let _ = control.try_send(Outgoing::Raw(reply));
                        break 'read;
                    }
                    Err(e) => {
                        debug!(remote = %self.from.remote, "WebSocket: {e}");
                        shell.core.borrow_mut().count_malformed();
                        websocket::encode_close(e.close_code(), "", None, &mut reply);
                        let _ = control.try_send(Outgoing::Raw(reply));
                        break 'read;
                    }
                }
                if !reply.is_empty() && control.try_send(Outgoing::Raw(reply)).is_err() {
                    // A peer that does not read what it asks for is not kept.
                    break 'read;
                }
            }
            self.track_progress(decoder.buffered() > 0, completed);
            perform(shell, std::mem::take(&mut out)).await;
            flush_batches(shell).await;
            let Some(n) = self.read(reader).await else {
                break;
            };
            input_owned.clear();
            input_owned.extend_from_slice(&self.chunk[..n]);
        }
        perform(shell, out).await;
        flush_batches(shell).await;
    }
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
    let mut ops = OpsState {
        next_publish: Instant::now(),
        draining: false,
    };
    loop {
        timer::sleep(TIMER_TICK).await;
        if !operate(&shell, &mut ops, &mut out) {
            return;
        }
        if !out.is_empty() {
            perform(&shell, std::mem::take(&mut out)).await;
        }
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

/// How often a shard publishes its figures for the admin endpoint.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The timer loop's operations state.
struct OpsState {
    next_publish: Instant,
    draining: bool,
}

/// A shard's operations work on each tick: it answers the admin endpoint's questions (a Redis
/// read goes to `out`), publishes its figures once a second, and follows the node's lifecycle:
/// on draining it closes its listeners and has its core refuse new requests, then reports what
/// it still owes; false once it must stop.
fn operate(shell: &Shell, state: &mut OpsState, out: &mut Vec<Output>) -> bool {
    let now = Instant::now();
    while let Ok(query) = shell.ops.queries.try_recv() {
        answer_query(shell, query, now, out);
    }
    let reads = shell.core.borrow_mut().take_operator_reads();
    for (token, read) in reads {
        if let Some((reply, cached)) = shell.operator_reads.borrow_mut().remove(&token) {
            let contacts = read.map(|bindings| {
                bindings
                    .iter()
                    .map(|b| admin::ContactView::from(b).to_json(now))
                    .collect()
            });
            // The endpoint may have stopped waiting: then nobody wants the answer.
            let _ = reply.try_send(BindingsAnswer {
                redis: true,
                cached,
                contacts,
            });
        }
    }
    let lifecycle = &shell.ops.lifecycle;
    match lifecycle.phase() {
        Phase::Running => {}
        Phase::Draining => {
            if !state.draining {
                state.draining = true;
                let retry_after_s = u32::try_from(lifecycle.grace().as_secs())
                    .unwrap_or(u32::MAX)
                    .max(1);
                shell.core.borrow_mut().set_draining(retry_after_s);
                // Dropping the accept tasks closes the listeners: the kernel refuses new
                // connections. Connections already open are still served.
                shell.accepts.borrow_mut().clear();
                info!(
                    shard = shell.id,
                    "draining: listeners closed, new requests refused"
                );
            }
            lifecycle.set_in_progress(shell.id, shell.core.borrow().in_progress());
        }
        Phase::Stopping => {
            publish(shell);
            return false;
        }
    }
    if now >= state.next_publish {
        state.next_publish = now + PUBLISH_INTERVAL;
        publish(shell);
    }
    true
}

/// Copies the shard's figures into its snapshot for the admin thread (one uncontended lock).
fn publish(shell: &Shell) {
    let snapshot = {
        let core = shell.core.borrow();
        let (server_transactions, client_transactions) = core.transactions_open();
        let (bindings, aors) = core.bindings_held();
        ShardSnapshot {
            counters: core.counters().clone(),
            auth: core.auth_counters().copied(),
            flood: core.flood_counters().cloned(),
            server_transactions,
            client_transactions,
            connections: shell.connections.borrow().by_id.len(),
            bindings,
            aors,
            in_progress: core.in_progress(),
            handling: shell.handling.borrow().clone(),
        }
    };
    *shell
        .ops
        .snapshot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
}

/// Answers an admin query: from the store in memory mode; in Redis mode by a read from Redis
/// (answered by [`operate`] when it completes).
fn answer_query(shell: &Shell, query: Query, now: Instant, out: &mut Vec<Output>) {
    match query {
        Query::Bindings { aor, reply } => {
            let mut core = shell.core.borrow_mut();
            let held = core.bindings_of(&aor, now);
            if shell.database.is_none() {
                let contacts = held
                    .unwrap_or_default()
                    .iter()
                    .map(|b| admin::ContactView::from(b).to_json(now))
                    .collect();
                let answer = BindingsAnswer {
                    redis: false,
                    cached: false,
                    contacts: Ok(contacts),
                };
                // The endpoint may have stopped waiting: then nobody wants the answer.
                let _ = reply.try_send(answer);
                return;
            }
            match core.read_bindings(&aor, now, out) {
                Some(token) => {
                    let cached = held.is_some();
                    shell
                        .operator_reads
                        .borrow_mut()
                        .insert(token, (reply, cached));
                }
                None => {
                    let _ = reply.try_send(BindingsAnswer {
                        redis: true,
                        cached: held.is_some(),
                        contacts: Err("too many requests waiting for Redis".into()),
                    });
                }
            }
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
                if !send(shell, transport, to, conn, bytes, txn).await {
                    report_failure(shell, txn, &mut more);
                }
            }
            Output::ToShard { shard, msg } => match shell.batches.borrow_mut().get_mut(shard) {
                Some(batch) => batch.push(MeshMsg::Core(msg)),
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
                            match msg {
                                MeshMsg::Core(msg) => core.on_shard_unreachable(msg, now, &mut out),
                                MeshMsg::Transmit(Transmit { txn: Some(txn), .. }) => {
                                    core.on_send_failed(txn, now, &mut out)
                                }
                                // The transaction that waits on it times out.
                                MeshMsg::Transmit(Transmit { txn: None, .. })
                                | MeshMsg::Returned(_)
                                | MeshMsg::TransmitFailed { .. } => core.count_send_failure(),
                            }
                        }
                    }
                    _ => core.count_send_failure(),
                }
            }
        }
        perform(shell, out).await;
    }
}

/// Writes a [`Transmit`] from another shard on this shard's connection; returns it to that shard
/// if the connection is gone, or tells it the write failed if the connection's queue is full.
fn transmit_here(shell: &Rc<Shell>, transmit: Transmit) {
    let from = transmit.from;
    let Some(tx) = shell.connections.borrow().by_id(transmit.conn) else {
        let mut batches = shell.batches.borrow_mut();
        match batches.get_mut(from) {
            Some(batch) => batch.push(MeshMsg::Returned(transmit)),
            None => shell.core.borrow_mut().count_send_failure(),
        }
        return;
    };
    let txn = transmit.txn;
    if tx
        .try_send(Outgoing::Message(Rc::from(transmit.bytes)))
        .is_ok()
    {
        return;
    }
    match (txn, shell.batches.borrow_mut().get_mut(from)) {
        (Some(txn), Some(batch)) => batch.push(MeshMsg::TransmitFailed { txn }),
        _ => shell.core.borrow_mut().count_send_failure(),
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
///
/// Over a stream transport with a known connection: a connection of another shard gets the
/// bytes through that shard ([`MeshMsg::Transmit`]). When the connection is gone the message
/// goes over another connection to the same address, or a new one (RFC 3261 §18.1.1 for
/// requests to a contact, §18.2.2 for responses); a WebSocket client cannot take a new one, and
/// a TCP/TLS peer that refuses it (a UA behind NAT) fails within [`CONNECT_TIMEOUT`], so the
/// caller gets its 480 then rather than at the transaction timeout.
async fn send(
    shell: &Rc<Shell>,
    transport: Transport,
    to: SocketAddr,
    conn: Option<ConnId>,
    bytes: Rc<[u8]>,
    txn: Option<TransactionId>,
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
    if let Some(conn) = conn {
        let owner = owner_of(conn);
        if owner != shell.id {
            let transmit = MeshMsg::Transmit(Transmit {
                conn,
                transport,
                to,
                bytes: bytes.as_ref().into(),
                from: shell.id,
                txn,
            });
            return match shell.batches.borrow_mut().get_mut(owner) {
                Some(batch) => {
                    batch.push(transmit);
                    true
                }
                None => false,
            };
        }
        let own = shell.connections.borrow().by_id(conn);
        if let Some(tx) = own {
            return tx.try_send(Outgoing::Message(bytes)).is_ok();
        }
    }
    let existing = shell.connections.borrow().to_remote(to);
    match existing {
        Some(tx) => tx.try_send(Outgoing::Message(bytes)).is_ok(),
        None if matches!(transport, Transport::Tcp | Transport::Tls) => {
            open_connection(shell, transport, to, bytes, txn)
        }
        None => {
            // A WebSocket peer is a client: only a connection it opened can reach it.
            debug!(remote = %to, "no open {transport} connection to send on");
            false
        }
    }
}

/// How long connecting to a peer may take (the TCP handshake; TLS then has its own timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a TCP or TLS connection to a peer with none (a registered contact, a next hop), with
/// `bytes` first in its queue, and serves it like an accepted one, so responses on it come back
/// to this shard. The connection counts from now: what else is sent to `to` meanwhile waits in
/// its queue. Connecting happens in its own task; if it fails, the send is reported failed to
/// the transaction `txn` (messages queued after it wait for their own timeouts).
fn open_connection(
    shell: &Rc<Shell>,
    transport: Transport,
    to: SocketAddr,
    bytes: Rc<[u8]>,
    txn: Option<TransactionId>,
) -> bool {
    let (conn, rx) = shell.connections.borrow_mut().add(to);
    let queued = shell
        .connections
        .borrow()
        .by_id(conn)
        .is_some_and(|tx| tx.try_send(Outgoing::Message(bytes)).is_ok());
    let shell = shell.clone();
    spawn_local(async move {
        let failure = match connect(&shell, transport, to).await {
            Ok((local, Connected::Tcp(stream))) => {
                serve_connection(shell, stream, transport, local, to, conn, rx).await;
                return;
            }
            Ok((local, Connected::Tls(stream))) => {
                serve_connection(shell, *stream, transport, local, to, conn, rx).await;
                return;
            }
            Err(e) => e,
        };
        info!(remote = %to, "{transport} connection failed: {failure}");
        shell.connections.borrow_mut().remove(conn);
        let mut out = Vec::new();
        report_failure(&shell, txn, &mut out);
        perform(&shell, out).await;
        flush_batches(&shell).await;
    })
    .detach();
    queued
}

/// A connection this shard opened.
enum Connected {
    Tcp(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `to`, and for TLS runs the client handshake, verifying the peer's certificate
/// (see [`tls::server_name`]). Returns our local address too.
async fn connect(
    shell: &Shell,
    transport: Transport,
    to: SocketAddr,
) -> std::io::Result<(SocketAddr, Connected)> {
    let stream = TcpStream::connect_timeout(to, CONNECT_TIMEOUT).await?;
    let local = stream.local_addr()?;
    let _ = stream.set_nodelay(true);
    if transport != Transport::Tls {
        return Ok((local, Connected::Tcp(stream)));
    }
    let connector = futures_rustls::TlsConnector::from(shell.settings.tls_client.clone());
    let handshake = connector.connect(tls::server_name(to), stream);
    let stream = within(
        tls::HANDSHAKE_TIMEOUT,
        handshake,
        "no complete handshake in time",
    )
    .await?;
    Ok((local, Connected::Tls(Box::new(stream))))
}

/// Runs `work`, or fails it with a `TimedOut` error saying `what` after `limit`.
async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = std::io::Result<T>>,
    what: &'static str,
) -> std::io::Result<T> {
    let timeout = async {
        timer::sleep(limit).await;
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
    };
    futures_lite::future::or(work, timeout).await
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
    fn add(&mut self, remote: SocketAddr) -> (ConnId, local_channel::LocalReceiver<Outgoing>) {
        let (tx, rx) = local_channel::new_bounded::<Outgoing>(CONNECTION_QUEUE);
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

    /// The queue of connection `conn`, if this shard holds it.
    fn by_id(&self, conn: ConnId) -> Option<Rc<Outbox>> {
        self.by_id.get(&conn).map(|(_, tx)| tx.clone())
    }

    /// The queue of this shard's latest connection with `remote`.
    fn to_remote(&self, remote: SocketAddr) -> Option<Rc<Outbox>> {
        self.by_remote.get(&remote).and_then(|&id| self.by_id(id))
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
