//! A shard's connection to the target: its UDP socket, or one TCP connection (RFC 3261 §18:
//! messages cut out of the stream by `net`'s `StreamFramer`, Content-Length mandatory). Sends go
//! through `&self` (a TCP send that would block waits in an outbox flushed on the next call), so
//! the shell's send closures can share it.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use sipshard_net::{DEFAULT_MAX_MESSAGE_BYTES, Frame, StreamFramer};

pub enum Conn {
    Udp {
        socket: UdpSocket,
        target: SocketAddr,
    },
    Tcp(Box<Tcp>),
}

pub struct Tcp {
    stream: TcpStream,
    /// Bytes not yet written (the socket's buffer was full).
    outbox: RefCell<Vec<u8>>,
    /// Bytes received: `inbox[head..]` not yet cut into messages.
    inbox: Vec<u8>,
    head: usize,
    framer: StreamFramer,
    /// The peer closed the connection, or sent bytes that are not SIP framing: nothing more
    /// is read; what is outstanding times out.
    closed: bool,
}

impl Conn {
    /// One TCP connection to `target` (the kernel picks the local address), non-blocking, without
    /// Nagle's delay.
    pub fn tcp(target: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&target, std::time::Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn::Tcp(Box::new(Tcp {
            stream,
            outbox: RefCell::new(Vec::new()),
            inbox: Vec::with_capacity(64 * 1024),
            head: 0,
            framer: StreamFramer::new(DEFAULT_MAX_MESSAGE_BYTES),
            closed: false,
        })))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Udp { socket, .. } => socket.local_addr(),
            Conn::Tcp(t) => t.stream.local_addr(),
        }
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Conn::Udp { socket, .. } => socket.as_raw_fd(),
            Conn::Tcp(t) => t.stream.as_raw_fd(),
        }
    }

    /// Whether the transport is reliable: requests are not retransmitted (RFC 3261 §17.1.2.2).
    pub fn reliable(&self) -> bool {
        matches!(self, Conn::Tcp(_))
    }

    /// Sends one message (on TCP, queues what the socket cannot take now).
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp { socket, target } => socket.send_to(message, target).map(|_| ()),
            Conn::Tcp(t) => {
                if t.closed {
                    return Err(io::ErrorKind::NotConnected.into());
                }
                t.outbox.borrow_mut().extend_from_slice(message);
                self.flush()
            }
        }
    }

    /// Writes what waits in the outbox, as much as the socket takes.
    pub fn flush(&self) -> io::Result<()> {
        let Conn::Tcp(t) = self else {
            return Ok(());
        };
        let mut outbox = t.outbox.borrow_mut();
        let mut written = 0;
        let result = loop {
            if written == outbox.len() {
                break Ok(());
            }
            match (&t.stream).write(&outbox[written..]) {
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

    /// Whether bytes wait to be written.
    pub fn pending_output(&self) -> bool {
        match self {
            Conn::Udp { .. } => false,
            Conn::Tcp(t) => !t.outbox.borrow().is_empty(),
        }
    }

    /// The next message received, copied to the front of `buf`: its length, or `WouldBlock`
    /// when none is waiting.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Conn::Udp { socket, .. } => return socket.recv_from(buf).map(|(n, _)| n),
            Conn::Tcp(t) => t,
        };
        loop {
            if t.closed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match t.framer.next_frame(&t.inbox[t.head..]) {
                Ok(Frame::Message { len }) if len <= buf.len() => {
                    buf[..len].copy_from_slice(&t.inbox[t.head..t.head + len]);
                    t.head += len;
                    return Ok(len);
                }
                Ok(Frame::Ping { len } | Frame::Pong { len }) => {
                    t.head += len;
                    continue;
                }
                Ok(Frame::Incomplete) => {}
                Ok(Frame::Message { .. }) | Err(_) => {
                    t.closed = true;
                    return Err(io::ErrorKind::InvalidData.into());
                }
            }
            if t.head > 0 {
                t.inbox.drain(..t.head);
                t.head = 0;
            }
            let old = t.inbox.len();
            t.inbox.resize(old + 64 * 1024, 0);
            let read = (&t.stream).read(&mut t.inbox[old..]);
            t.inbox.truncate(old + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    t.closed = true;
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
