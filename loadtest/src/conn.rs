//! A shard's way to the target: its UDP socket, one TCP, TLS or WebSocket connection kept for the
//! whole run (RFC 3261 §18: messages cut out of the stream by `net`'s `StreamFramer`,
//! Content-Length mandatory; over WebSocket, RFC 7118: one SIP message per WebSocket message,
//! framed by `net`'s sans-IO codec, `sipshard_net::websocket`, in the client role), or, with
//! `--connection-per-request`, a new connection for every request, closed when its final
//! response came (so that connection set-ups and TLS handshakes per second are what is
//! measured).
//!
//! Sends go through `&self` (the state sits in a `RefCell`; a write that would block waits in an
//! outbox flushed on the next call), so the shell's send closures can share the connection with
//! its receive loop. Everything fed by the peer is bounded: a stream's inbox holds at most one
//! message of `DEFAULT_MAX_MESSAGE_BYTES` plus one read; an outbox over [`MAX_OUTBOX`] refuses
//! further sends (they count as send errors and time out), so a server that stops reading cannot
//! make the generator grow without bound. TLS is rustls driven by hand over the non-blocking
//! socket (`read_tls`/`process_new_packets`/`write_tls`): the shard's single `ppoll` loop stays
//! the only place that waits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, HandshakeKind};
use sipshard_net::websocket::{self, Event, FrameDecoder, Opcode, Role};
use sipshard_net::{DEFAULT_MAX_MESSAGE_BYTES, Frame, StreamFramer};

use crate::tls::TlsClient;

/// The most bytes a connection keeps waiting to be written (about 4,000 REGISTERs).
pub const MAX_OUTBOX: usize = 2 << 20;

/// How long connecting (and a TLS handshake) may take before a persistent connection's run is
/// abandoned.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The transport of a run, as `--transport` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn parse(name: &str) -> Option<Transport> {
        match name.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            "ws" => Some(Transport::Ws),
            "wss" => Some(Transport::Wss),
            _ => None,
        }
    }

    /// The name in the JSON summary and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The transport in Via (`SIP/2.0/TLS`, RFC 3261 §18).
    pub fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The `transport` URI parameter of a Contact reached over this transport (none for UDP;
    /// `ws` for WS and WSS alike, RFC 7118 §5.2).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Ws | Transport::Wss => ";transport=ws",
        }
    }

    /// Over TLS (TLS and WSS).
    pub fn secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Over WebSocket (WS and WSS).
    pub fn websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// Reliable: requests are not retransmitted (RFC 3261 §17.1.2.2).
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }
}

/// What a shard's connections did (all zero over UDP).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Connections opened.
    pub opened: u64,
    /// TLS handshakes completed ...
    pub handshakes: u64,
    /// ... of which resumed a session.
    pub resumed: u64,
    /// Connections that ended in an error: refused, reset, a TLS alert or certificate error,
    /// bytes that are not SIP framing. Their outstanding requests time out.
    pub failed: u64,
    /// Connections the peer closed (or that sent a TLS close_notify) while requests were
    /// outstanding on them, or before their response.
    pub closed_by_peer: u64,
}

impl ConnStats {
    pub fn add(&mut self, other: &ConnStats) {
        self.opened += other.opened;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.failed += other.failed;
        self.closed_by_peer += other.closed_by_peer;
    }
}

/// How a stream connection is layered over TCP: TLS, WebSocket, both or neither.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub tls: Option<TlsClient>,
    pub websocket: Option<WsTarget>,
}

impl Layers {
    fn transport(&self) -> Transport {
        match (self.tls.is_some(), self.websocket.is_some()) {
            (false, false) => Transport::Tcp,
            (true, false) => Transport::Tls,
            (false, true) => Transport::Ws,
            (true, true) => Transport::Wss,
        }
    }
}

/// The WebSocket upgrade request's `Host` and path (`ws://HOST/PATH`).
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub host: String,
    pub path: String,
}

pub struct Conn {
    transport: Transport,
    inner: RefCell<Inner>,
}

enum Inner {
    Udp {
        socket: UdpSocket,
        target: SocketAddr,
    },
    Stream {
        stream: Box<Stream>,
        stats: ConnStats,
    },
    PerRequest(Box<Pool>),
}

impl Conn {
    pub fn udp(socket: UdpSocket, target: SocketAddr) -> Conn {
        Conn {
            transport: Transport::Udp,
            inner: RefCell::new(Inner::Udp { socket, target }),
        }
    }

    /// One connection to `target` from `local` (the kernel picks the port) with `layers` over
    /// it; returns once it is connected, the TLS handshake done and the WebSocket upgrade
    /// accepted, or fails saying why (refused, timed out, the certificate not trusted, the
    /// upgrade refused...).
    pub fn stream(target: SocketAddr, local: IpAddr, layers: &Layers) -> io::Result<Conn> {
        let mut stream = Stream::open(target, local, layers)?;
        let mut stats = ConnStats {
            opened: 1,
            ..ConnStats::default()
        };
        stream.establish(&mut stats)?;
        Ok(Conn {
            transport: layers.transport(),
            inner: RefCell::new(Inner::Stream {
                stream: Box::new(stream),
                stats,
            }),
        })
    }

    /// A new connection for each request, at most `limit` open at once, each closed when its
    /// final response came or `lifetime` after it was opened (the request's Timer F).
    pub fn per_request(
        target: SocketAddr,
        local: IpAddr,
        layers: Layers,
        limit: usize,
        lifetime: Duration,
    ) -> io::Result<Conn> {
        // SAFETY: epoll_create1 returns a new descriptor (owned from here on) or -1.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epoll` is a valid descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        Ok(Conn {
            transport: layers.transport(),
            inner: RefCell::new(Inner::PerRequest(Box::new(Pool {
                target,
                local,
                layers,
                limit,
                lifetime,
                epoll,
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                generations: Vec::new(),
                expiries: VecDeque::new(),
                next: None,
                ready: Vec::new(),
                polled: false,
                stats: ConnStats::default(),
            }))),
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The address requests come from. With a connection per request, the port is 0 until
    /// [`Conn::open_next`] names the connection the next request goes out on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &*self.inner.borrow() {
            Inner::Udp { socket, .. } => socket.local_addr(),
            Inner::Stream { stream, .. } => stream.socket.local_addr(),
            Inner::PerRequest(pool) => Ok(SocketAddr::new(pool.local, 0)),
        }
    }

    /// With a connection per request: opens the connection the next [`Conn::send`] uses and
    /// returns its local address (for the request's Via and Contact). `None` otherwise.
    pub fn open_next(&self) -> io::Result<Option<SocketAddr>> {
        match &mut *self.inner.borrow_mut() {
            Inner::PerRequest(pool) => pool.open_next().map(Some),
            _ => Ok(None),
        }
    }

    /// Sends one message (on a stream, queues what the socket cannot take now).
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        match &mut *self.inner.borrow_mut() {
            Inner::Udp { socket, target } => socket.send_to(message, *target).map(|_| ()),
            Inner::Stream { stream, stats } => stream.send(message, stats),
            Inner::PerRequest(pool) => pool.send(message),
        }
    }

    /// Writes what waits in the outboxes, as much as the sockets take.
    pub fn flush(&self) -> io::Result<()> {
        match &mut *self.inner.borrow_mut() {
            Inner::Udp { .. } => Ok(()),
            Inner::Stream { stream, stats } => stream.flush(stats),
            // Writes resume on each connection's writable event (`Pool::poll`).
            Inner::PerRequest(_) => Ok(()),
        }
    }

    /// Whether bytes wait to be written.
    pub fn pending_output(&self) -> bool {
        match &*self.inner.borrow() {
            Inner::Udp { .. } => false,
            Inner::Stream { stream, .. } => stream.pending_output(),
            Inner::PerRequest(_) => false,
        }
    }

    /// The next message received, copied to the front of `buf`: its length, or `WouldBlock`
    /// when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut *self.inner.borrow_mut() {
            Inner::Udp { socket, .. } => socket.recv_from(buf).map(|(n, _)| n),
            Inner::Stream { stream, stats } => stream.recv(buf, stats),
            Inner::PerRequest(pool) => pool.recv(buf),
        }
    }

    /// What the connections did so far.
    pub fn stats(&self) -> ConnStats {
        match &*self.inner.borrow() {
            Inner::Udp { .. } => ConnStats::default(),
            Inner::Stream { stats, .. } => *stats,
            Inner::PerRequest(pool) => pool.stats,
        }
    }

    /// Waits until a socket is readable (or writable, when it has bytes waiting to be written)
    /// or `timeout_ns` passed.
    pub fn wait(&self, timeout_ns: u64) {
        let inner = self.inner.borrow();
        let mut fds: Vec<libc::pollfd> = match &*inner {
            Inner::Udp { socket, .. } => vec![pollfd(socket.as_raw_fd(), false)],
            Inner::Stream { stream, .. } => vec![stream.pollfd()],
            // Readable when a connection has an event (or none is open: then it just sleeps).
            Inner::PerRequest(pool) => vec![pollfd(pool.epoll.as_raw_fd(), false)],
        };
        drop(inner);
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of its length, `ts` a valid timespec, no signal mask.
        // With no connection open, ppoll just sleeps.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            );
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd, output: bool) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: if output {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        },
        revents: 0,
    }
}

/// One TCP connection, with TLS over it or not, and WebSocket over that or not.
struct Stream {
    socket: TcpStream,
    tls: Option<Box<ClientConnection>>,
    websocket: Option<Box<WebSocket>>,
    /// Whether the handshake's end was counted.
    handshake_counted: bool,
    /// Bytes (plaintext) not yet written, or not yet taken by rustls.
    outbox: Vec<u8>,
    /// Bytes received (plaintext): `inbox[head..]` not yet cut into messages.
    inbox: Vec<u8>,
    head: usize,
    framer: StreamFramer,
    /// Nothing more is read or written: the peer closed the connection, or sent what is not SIP
    /// framing or not TLS, or the socket failed.
    closed: bool,
}

/// Lets the kernel pick the local port at `connect`, for that destination
/// (`IP_BIND_ADDRESS_NO_PORT`), rather than at `bind`, for any. With a new connection per request
/// the ports of earlier connections wait in TIME_WAIT; a port picked at `bind` must be free for
/// every destination, and past about 25,000 of them the kernel spent seconds searching (issue 7's
/// handshake benchmark). Best effort: without it the connection still works.
fn defer_port_choice(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its size, as
    // setsockopt(2) takes them.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Stream {
    /// Starts connecting `local` (port chosen by the kernel) to `target` without waiting: the
    /// socket is non-blocking from the start, reads and writes give `WouldBlock` until the
    /// connection is up (and its error after it failed).
    fn open(target: SocketAddr, local: IpAddr, layers: &Layers) -> io::Result<Stream> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        defer_port_choice(&socket);
        socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
        match socket.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let tls = match &layers.tls {
            Some(t) => Some(Box::new(
                ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        // The upgrade request goes first (through TLS, which sends it after its handshake).
        let mut outbox = Vec::new();
        let websocket = layers.websocket.as_ref().map(|target| {
            let ws = WebSocket::new();
            outbox = websocket::client_request(&target.host, &target.path, &ws.key);
            Box::new(ws)
        });
        Ok(Stream {
            socket: socket.into(),
            tls,
            websocket,
            handshake_counted: false,
            outbox,
            inbox: Vec::new(),
            head: 0,
            framer: StreamFramer::new(DEFAULT_MAX_MESSAGE_BYTES),
            closed: false,
        })
    }

    /// Waits (at most [`ESTABLISH_TIMEOUT`]) for the connection, its TLS handshake and its
    /// WebSocket upgrade.
    fn establish(&mut self, stats: &mut ConnStats) -> io::Result<()> {
        let deadline = Instant::now() + ESTABLISH_TIMEOUT;
        let layered = self.tls.is_some() || self.websocket.is_some();
        loop {
            self.flush(stats)?;
            let connected = if layered {
                self.tls.as_ref().is_none_or(|tls| !tls.is_handshaking())
                    && self.websocket.as_ref().is_none_or(|ws| ws.upgraded)
            } else {
                // Writable with no error pending: connected.
                self.wait_until(deadline, libc::POLLOUT)? && self.socket.peer_addr().is_ok()
            };
            if connected {
                self.count_handshake(stats);
                return Ok(());
            }
            if layered {
                match self.fill(stats).and_then(|()| self.upgrade(stats)) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(io::Error::new(
                            e.kind(),
                            "the server closed the connection during the handshake",
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                let events = if self.pending_output() {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                };
                self.wait_until(deadline, events)?;
            }
            if let Some(e) = self.socket.take_error()? {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connecting (and the TLS handshake, the WebSocket upgrade) took over 5 s",
                ));
            }
        }
    }

    /// Polls this socket for `events` until `deadline`; whether it became ready.
    fn wait_until(&self, deadline: Instant, events: libc::c_short) -> io::Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fd, 1, left.as_millis().min(10_000) as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(e) = self.socket.take_error()? {
            return Err(e);
        }
        Ok(n > 0)
    }

    fn count_handshake(&mut self, stats: &mut ConnStats) {
        let Some(tls) = &self.tls else {
            return;
        };
        if self.handshake_counted || tls.is_handshaking() {
            return;
        }
        self.handshake_counted = true;
        stats.handshakes += 1;
        if tls.handshake_kind() == Some(HandshakeKind::Resumed) {
            stats.resumed += 1;
        }
    }

    fn pollfd(&self) -> libc::pollfd {
        pollfd(self.socket.as_raw_fd(), self.pending_output())
    }

    /// Whether writing can make progress now: over TLS, whether rustls has records to write
    /// (plaintext it has not taken yet waits for the handshake, which waits for reading).
    fn pending_output(&self) -> bool {
        if self.closed {
            return false;
        }
        match &self.tls {
            Some(tls) => tls.wants_write(),
            None => !self.outbox.is_empty(),
        }
    }

    fn send(&mut self, message: &[u8], stats: &mut ConnStats) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let queued = self.outbox.len() + self.websocket.as_ref().map_or(0, |ws| ws.held.len());
        if queued + message.len() > MAX_OUTBOX {
            return Err(io::Error::other("the connection's outbox is full"));
        }
        match &mut self.websocket {
            None => self.outbox.extend_from_slice(message),
            // One SIP message per WebSocket message, in a text frame (RFC 7118 §5), held until
            // the upgrade is accepted (RFC 6455 §4.1: nothing is sent before).
            Some(ws) => {
                let mask = ws.mask();
                let out = if ws.upgraded {
                    &mut self.outbox
                } else {
                    &mut ws.held
                };
                websocket::encode_frame(Opcode::Text, true, message, Some(mask), out);
            }
        }
        self.flush(stats)
    }

    /// Checks the server's answer to the WebSocket upgrade once it is in the inbox; when it
    /// accepted, lets the held frames go.
    fn upgrade(&mut self, stats: &mut ConnStats) -> io::Result<()> {
        let Some(ws) = &mut self.websocket else {
            return Ok(());
        };
        if ws.upgraded {
            return Ok(());
        }
        match websocket::check_upgrade_response(&self.inbox[self.head..], &ws.key, MAX_HTTP_HEAD) {
            Ok(None) => Ok(()),
            Ok(Some(len)) => {
                self.head += len;
                ws.upgraded = true;
                self.outbox.append(&mut ws.held);
                self.flush(stats)
            }
            Err(e) => {
                self.fail(stats);
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("WebSocket upgrade: {e}"),
                ))
            }
        }
    }

    /// The next WebSocket message out of the inbox, copied to the front of `buf`, answering
    /// pings and the close frame on the way; `None` when the inbox holds no complete one.
    fn next_ws_message(
        &mut self,
        buf: &mut [u8],
        stats: &mut ConnStats,
    ) -> io::Result<Option<usize>> {
        let Some(ws) = &mut self.websocket else {
            return Ok(None);
        };
        if !ws.upgraded {
            return Ok(None);
        }
        let ended = loop {
            let mut input = &self.inbox[self.head..];
            let before = input.len();
            let event = ws.decoder.next_event(&mut input);
            self.head += before - input.len();
            match event {
                Ok(None) => return Ok(None),
                Ok(Some(Event::Message { payload, .. })) if payload.len() <= buf.len() => {
                    buf[..payload.len()].copy_from_slice(&payload);
                    return Ok(Some(payload.len()));
                }
                // Larger than a datagram: not a SIP message this client can take.
                Ok(Some(Event::Message { .. })) => {
                    websocket::encode_close(1009, "", Some(ws.mask()), &mut self.outbox);
                    break Err(io::ErrorKind::InvalidData);
                }
                Ok(Some(Event::Ping(payload))) => {
                    websocket::encode_pong(&payload, Some(ws.mask()), &mut self.outbox);
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close { code, .. })) => {
                    websocket::encode_close(
                        code.unwrap_or(1000),
                        "",
                        Some(ws.mask()),
                        &mut self.outbox,
                    );
                    break Ok(());
                }
                Err(e) => {
                    websocket::encode_close(e.close_code(), "", Some(ws.mask()), &mut self.outbox);
                    break Err(io::ErrorKind::InvalidData);
                }
            }
        };
        // The close frame goes out; then nothing more is read or written.
        let _ = self.flush(stats);
        match ended {
            Ok(()) => {
                self.peer_closed(stats);
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Err(kind) => {
                self.fail(stats);
                Err(kind.into())
            }
        }
    }

    fn peer_closed(&mut self, stats: &mut ConnStats) {
        if !self.closed {
            self.closed = true;
            stats.closed_by_peer += 1;
        }
    }

    /// Writes as much of the outbox as the socket takes (through rustls over TLS).
    fn flush(&mut self, stats: &mut ConnStats) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = match &mut self.tls {
            None => write_some(&mut self.socket, &mut self.outbox),
            Some(tls) => loop {
                if !self.outbox.is_empty() {
                    // Before the handshake's end rustls keeps what it takes (up to its limit).
                    let n = tls.writer().write(&self.outbox)?;
                    self.outbox.drain(..n);
                }
                if !tls.wants_write() {
                    break Ok(());
                }
                match tls.write_tls(&mut self.socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            },
        };
        if result.is_err() {
            self.fail(stats);
        }
        result
    }

    fn fail(&mut self, stats: &mut ConnStats) {
        if !self.closed {
            self.closed = true;
            stats.failed += 1;
        }
    }

    /// The next message, copied to the front of `buf`, or `WouldBlock`.
    fn recv(&mut self, buf: &mut [u8], stats: &mut ConnStats) -> io::Result<usize> {
        loop {
            if self.closed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.websocket.is_some() {
                self.upgrade(stats)?;
                if let Some(len) = self.next_ws_message(buf, stats)? {
                    return Ok(len);
                }
                self.inbox.drain(..self.head);
                self.head = 0;
                self.fill(stats)?;
                continue;
            }
            match self.framer.next_frame(&self.inbox[self.head..]) {
                Ok(Frame::Message { len }) if len <= buf.len() => {
                    buf[..len].copy_from_slice(&self.inbox[self.head..self.head + len]);
                    self.head += len;
                    return Ok(len);
                }
                Ok(Frame::Ping { len } | Frame::Pong { len }) => {
                    self.head += len;
                    continue;
                }
                Ok(Frame::Incomplete) => {}
                Ok(Frame::Message { .. }) | Err(_) => {
                    self.fail(stats);
                    return Err(io::ErrorKind::InvalidData.into());
                }
            }
            if self.head > 0 {
                self.inbox.drain(..self.head);
                self.head = 0;
            }
            self.fill(stats)?;
        }
    }

    /// Reads what the socket holds into the inbox (deciphered over TLS). `WouldBlock` when
    /// nothing was added.
    fn fill(&mut self, stats: &mut ConnStats) -> io::Result<()> {
        let old = self.inbox.len();
        let result = match &mut self.tls {
            None => {
                self.inbox.resize(old + 64 * 1024, 0);
                let read = self.socket.read(&mut self.inbox[old..]);
                self.inbox.truncate(old + *read.as_ref().unwrap_or(&0));
                read.map(|n| n > 0)
            }
            Some(tls) => read_tls(tls, &mut self.socket, &mut self.inbox),
        };
        self.count_handshake(stats);
        match result {
            Ok(true) => {
                // Over TLS the peer's records may call for an answer (the handshake), and the
                // handshake's end lets queued requests go.
                if self.tls.is_some() {
                    self.flush(stats)?;
                }
                if self.inbox.len() > old {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            }
            Ok(false) => {
                self.peer_closed(stats);
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.tls.is_some() {
                    self.flush(stats)?;
                }
                Err(e)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => {
                self.fail(stats);
                Err(e)
            }
        }
    }

    /// Ends the connection: a WebSocket close frame and a TLS close_notify if they can go at
    /// once, then the socket is closed when the stream is dropped.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        if let Some(ws) = self.websocket.as_mut().filter(|ws| ws.upgraded) {
            websocket::encode_close(1000, "", Some(ws.mask()), &mut self.outbox);
            // Failing to send it changes nothing: the connection is closed either way.
            let _ = self.flush(&mut ConnStats::default());
        }
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.socket);
        }
        self.closed = true;
    }
}

/// A connection ends cleanly however it ends: at the end of the run, or dropped after the check
/// before the run.
impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

/// The longest HTTP response head accepted for the WebSocket upgrade.
const MAX_HTTP_HEAD: usize = 8192;

/// The client side of a WebSocket connection (RFC 6455), over `sipshard_net::websocket`.
struct WebSocket {
    /// `Sec-WebSocket-Key` of the upgrade request.
    key: String,
    /// The server accepted the upgrade (101 with the `sip` subprotocol).
    upgraded: bool,
    decoder: FrameDecoder,
    /// Frames sent before the upgrade was accepted.
    held: Vec<u8>,
    /// The state of the frame masks' generator.
    masks: u64,
}

impl WebSocket {
    fn new() -> WebSocket {
        let random = random_bytes();
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&random[..16]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&random[16..]);
        WebSocket {
            key: websocket::client_key(nonce),
            upgraded: false,
            decoder: FrameDecoder::new(Role::Client, DEFAULT_MAX_MESSAGE_BYTES),
            held: Vec::new(),
            masks: u64::from_le_bytes(seed) | 1,
        }
    }

    /// A frame's mask (RFC 6455 §5.3): xorshift64* seeded from the kernel's random bytes for
    /// each connection. Masks keep a client from steering the bytes an intermediary sees; a load
    /// generator's need not resist prediction more than that, and one getrandom per connection
    /// rather than per frame keeps masking cheap at high rates.
    fn mask(&mut self) -> [u8; 4] {
        let mut x = self.masks;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.masks = x;
        let word = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32;
        word.to_le_bytes()
    }
}

/// 24 bytes from the kernel's random source (for the WebSocket key and the masks' seed); should
/// getrandom fail, the clock's nanoseconds and the process id stand in.
fn random_bytes() -> [u8; 24] {
    let mut bytes = [0u8; 24];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the valid buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = now ^ (u128::from(std::process::id()) << 64);
        bytes[..16].copy_from_slice(&mixed.to_le_bytes());
        bytes[16..].copy_from_slice(&(mixed as u64).rotate_left(17).to_le_bytes());
    }
    bytes
}

/// Writes as much of `outbox` as `socket` takes now and drops it from the outbox.
fn write_some(socket: &mut TcpStream, outbox: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    let result = loop {
        if written == outbox.len() {
            break Ok(());
        }
        match socket.write(&outbox[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    outbox.drain(..written);
    result
}

/// Reads TLS records from `socket` and appends their plaintext to `inbox`: `Ok(true)` when
/// something was read, `Ok(false)` when the peer closed (end of stream or close_notify),
/// `WouldBlock` when nothing was waiting, another error for a socket or TLS failure.
fn read_tls(
    tls: &mut ClientConnection,
    socket: &mut TcpStream,
    inbox: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut progressed = false;
    let mut eof = false;
    loop {
        match tls.read_tls(socket) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(_) => progressed = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
            break;
        }
    }
    tls.process_new_packets().map_err(io::Error::other)?;
    // Take the plaintext rustls holds (bounded by its buffer limit; the framer bounds ours).
    loop {
        let old = inbox.len();
        inbox.resize(old + 16 * 1024, 0);
        match tls.reader().read(&mut inbox[old..]) {
            Ok(0) => {
                inbox.truncate(old);
                return Ok(false);
            }
            Ok(n) => {
                inbox.truncate(old + n);
                progressed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                inbox.truncate(old);
                break;
            }
            Err(e) => {
                inbox.truncate(old);
                return Err(e);
            }
        }
    }
    if eof {
        return Ok(false);
    }
    if progressed {
        Ok(true)
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// The connections of `--connection-per-request`, watched by one edge-triggered epoll instance,
/// so that a round of receiving costs what is ready, not what is open (with thousands of
/// handshakes in flight against a slow server, polling every connection each round would slow
/// the sending it is measuring). The shard's `ppoll` waits on the epoll descriptor itself, which
/// keeps the wait's nanosecond timeout.
struct Pool {
    target: SocketAddr,
    local: IpAddr,
    layers: Layers,
    /// The most connections open at once.
    limit: usize,
    /// How long a connection may live (its request's Timer F).
    lifetime: Duration,
    epoll: OwnedFd,
    /// Open connections; `None`: a free slot.
    slots: Vec<Option<Stream>>,
    free: Vec<usize>,
    live: usize,
    /// Each slot's use count: tells an epoll event or an expiry for a closed connection from
    /// one for the connection now in its slot.
    generations: Vec<u32>,
    /// (deadline, slot, generation) in the order connections were opened, which is the order of
    /// their deadlines (one lifetime for all).
    expiries: VecDeque<(Instant, usize, u32)>,
    /// Opened by `open_next` for the next `send`.
    next: Option<Stream>,
    /// Slots with input not yet read dry (edge-triggered: each is read until it would block).
    ready: Vec<usize>,
    /// Whether this round of receiving has polled already (one poll per round).
    polled: bool,
    stats: ConnStats,
}

impl Pool {
    fn open_next(&mut self) -> io::Result<SocketAddr> {
        if self.next.is_none() {
            if self.live >= self.limit {
                return Err(io::Error::other(format!(
                    "{} connections open: the limit",
                    self.limit
                )));
            }
            self.next = Some(Stream::open(self.target, self.local, &self.layers)?);
            self.stats.opened += 1;
        }
        match &self.next {
            Some(stream) => stream.socket.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        self.open_next()?;
        let Some(mut stream) = self.next.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let result = stream.send(message, &mut self.stats);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        self.generations[i] = self.generations[i].wrapping_add(1);
        let generation = self.generations[i];
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: (u64::from(generation) << 32) | i as u64,
        };
        // SAFETY: a valid epoll descriptor, the stream's open socket, a valid event. Closing the
        // socket (dropping the stream) removes it from the epoll set.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                stream.socket.as_raw_fd(),
                &mut event,
            )
        };
        self.slots[i] = Some(stream);
        self.live += 1;
        self.expiries
            .push_back((Instant::now() + self.lifetime, i, generation));
        if added != 0 {
            let e = io::Error::last_os_error();
            self.close(i);
            return Err(e);
        }
        result
    }

    fn close(&mut self, i: usize) {
        if let Some(mut stream) = self.slots[i].take() {
            stream.close();
            self.free.push(i);
            self.live -= 1;
        }
    }

    /// The next message from any connection; a final response closes its connection.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            while let Some(&i) = self.ready.last() {
                let Some(stream) = self.slots[i].as_mut() else {
                    self.ready.pop();
                    continue;
                };
                match stream.recv(buf, &mut self.stats) {
                    Ok(n) => {
                        if is_final_response(&buf[..n]) {
                            self.close(i);
                            self.ready.pop();
                        }
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && !stream.closed => {
                        self.ready.pop();
                    }
                    // Failed or closed by the peer: nothing more will come.
                    Err(_) => {
                        self.close(i);
                        self.ready.pop();
                    }
                }
            }
            if self.polled {
                self.polled = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.poll();
            self.polled = true;
        }
    }

    /// Takes the events waiting (without waiting): writes to the connections that became
    /// writable, queues those with input; closes the connections past their deadline.
    fn poll(&mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: a valid epoll descriptor and an array of `events.len()` events; no wait.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                0,
            )
        };
        for event in events.iter().take(usize::try_from(n).unwrap_or(0)) {
            let (flags, data) = (event.events, event.u64);
            let (i, generation) = ((data & 0xffff_ffff) as usize, (data >> 32) as u32);
            if self.generations.get(i) != Some(&generation) {
                continue;
            }
            let Some(stream) = self.slots[i].as_mut() else {
                continue;
            };
            if flags & libc::EPOLLOUT as u32 != 0 {
                // A failure closes the stream (seen when it is read); its request times out.
                let _ = stream.flush(&mut self.stats);
            }
            if flags & !(libc::EPOLLOUT as u32) != 0 {
                self.ready.push(i);
            }
        }
        let now = Instant::now();
        while let Some(&(deadline, i, generation)) = self.expiries.front() {
            if deadline > now {
                break;
            }
            self.expiries.pop_front();
            if self.generations[i] == generation {
                self.close(i);
            }
        }
    }
}

/// Whether a message is a response with a final status (its connection's work is done).
fn is_final_response(message: &[u8]) -> bool {
    message.len() > 12 && message.starts_with(b"SIP/2.0 ") && matches!(message[8], b'2'..=b'6')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_responses_end_a_per_request_connection() {
        assert!(is_final_response(b"SIP/2.0 200 OK\r\n\r\n"));
        assert!(is_final_response(b"SIP/2.0 401 Unauthorized\r\n"));
        assert!(!is_final_response(b"SIP/2.0 100 Trying\r\n\r\n"));
        assert!(!is_final_response(b"OPTIONS sip:a SIP/2.0\r\n"));
        assert!(!is_final_response(b"SIP/2.0 2"));
    }

    #[test]
    fn websocket_keys_and_masks_differ() {
        let (mut a, mut b) = (WebSocket::new(), WebSocket::new());
        assert_ne!(a.key, b.key);
        assert_eq!(a.key.len(), 24, "16 bytes in base64");
        let masks: std::collections::HashSet<[u8; 4]> = (0..1000)
            .map(|_| a.mask())
            .chain((0..1000).map(|_| b.mask()))
            .collect();
        assert!(masks.len() > 1990, "{}", masks.len());
    }

    #[test]
    fn transports_name_themselves_as_sip_does() {
        for (name, via, param) in [
            ("udp", "UDP", ""),
            ("TCP", "TCP", ";transport=tcp"),
            ("tls", "TLS", ";transport=tls"),
            ("ws", "WS", ";transport=ws"),
            ("wss", "WSS", ";transport=ws"),
        ] {
            let t = Transport::parse(name).unwrap();
            assert_eq!((t.via(), t.uri_param()), (via, param));
            assert_eq!(t.reliable(), t != Transport::Udp);
            assert_eq!(t.name(), name.to_ascii_lowercase());
        }
        assert_eq!(Transport::parse("sctp"), None);
    }
}
