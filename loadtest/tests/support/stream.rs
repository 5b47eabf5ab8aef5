//! A SIP responder over TCP or TLS, with WebSocket over them or not, written here (a thread per
//! connection, 200 to every request, messages cut out by Content-Length or one per WebSocket
//! message, the server side of `sipshard_net::websocket`), with what it saw; and test certificates (rcgen: a CA and
//! a server certificate it signed, as PEM files), for the transport tests and the node's TLS
//! listen. Only 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use sipshard_net::websocket::{self, Event, FrameDecoder, Opcode, Role};
use sipshard_net::{Frame, HeaderName, Message, StreamFramer};

/// A CA and a server certificate it signed for `127.0.0.1` and `localhost`, as PEM files in a
/// directory removed on drop.
pub struct Certificates {
    pub dir: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Certificates {
    pub fn new(label: &str) -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("sipshard-load test CA {label}"));
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let dir = super::out_path(&format!("certs-{label}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("certificate directory");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
        std::fs::write(dir.join("cert.pem"), format!("{}{}", cert.pem(), ca.pem()))
            .expect("cert.pem");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key.pem");
        Certificates {
            chain: vec![cert.der().clone(), ca.der().clone()],
            key: key.serialize_der(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(self.chain.clone(), key)
                .expect("server certificate and key"),
        )
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the responder saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicU64,
    pub answered: AtomicU64,
    /// Connections whose TLS handshake failed (the client refused the certificate).
    pub failed_handshakes: AtomicU64,
    /// WebSocket upgrades accepted, and close frames received.
    pub upgrades: AtomicU64,
    pub ws_closes: AtomicU64,
    /// The top Via's transport and the Contact of every request, in arrival order.
    pub requests: Mutex<Vec<(String, Option<String>)>>,
}

pub struct StreamResponder {
    pub addr: String,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for StreamResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers 200 to every request on every connection, over TLS with `certificates`' server
/// certificate when given; `silent`: reads requests, answers none, and closes the connection
/// after `silent` of them.
pub fn responder(certificates: Option<&Certificates>, silent: Option<u64>) -> StreamResponder {
    start(certificates, silent, false)
}

/// As [`responder`], over WebSocket (RFC 7118): the upgrade must offer `sip`.
pub fn ws_responder(certificates: Option<&Certificates>) -> StreamResponder {
    start(certificates, None, true)
}

fn start(certificates: Option<&Certificates>, silent: Option<u64>, ws: bool) -> StreamResponder {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let config = certificates.map(Certificates::server_config);
    let r = StreamResponder {
        addr: listener.local_addr().expect("address").to_string(),
        seen: Arc::default(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (stop, seen) = (Arc::clone(&r.stop), Arc::clone(&r.seen));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            seen.connections.fetch_add(1, Ordering::Relaxed);
            let (stop, seen, config) = (Arc::clone(&stop), Arc::clone(&seen), config.clone());
            std::thread::spawn(move || serve(stream, config, silent, ws, &stop, &seen));
        }
    });
    r
}

/// A connection, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ServerConnection, TcpStream>>),
}

impl Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(buf),
            Io::Tls(s) => s.write_all(buf).and_then(|()| s.flush()),
        }
    }
}

fn serve(
    stream: TcpStream,
    config: Option<Arc<ServerConfig>>,
    silent: Option<u64>,
    ws: bool,
    stop: &AtomicBool,
    seen: &Seen,
) {
    stream.set_nonblocking(false).expect("blocking");
    // rustls writes a flight as several records: no Nagle delay between them.
    stream.set_nodelay(true).expect("no delay");
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let mut io = match config {
        None => Io::Plain(stream),
        Some(config) => {
            let mut conn = ServerConnection::new(config).expect("server connection");
            let mut stream = stream;
            while conn.is_handshaking() {
                match conn.complete_io(&mut stream) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                    Err(_) => {
                        seen.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            Io::Tls(Box::new(rustls::StreamOwned::new(conn, stream)))
        }
    };
    let mut framer = StreamFramer::new(65536);
    // Over WebSocket: the decoder once the upgrade is accepted.
    let mut decoder: Option<FrameDecoder> = None;
    let mut inbox = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match io.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let mut out = Vec::new();
        let mut requests = Vec::new();
        if !ws {
            loop {
                match framer.next_frame(&inbox) {
                    Ok(Frame::Message { len }) => requests.push(inbox.drain(..len).collect()),
                    Ok(Frame::Ping { len } | Frame::Pong { len }) => {
                        inbox.drain(..len);
                    }
                    Ok(Frame::Incomplete) => break,
                    // Not SIP (a WebSocket upgrade, say): hang up.
                    Err(_) => return,
                }
            }
        } else {
            if decoder.is_none() {
                match websocket::parse_upgrade(&inbox, 8192) {
                    Ok(None) => continue,
                    Ok(Some(upgrade)) => {
                        inbox.drain(..upgrade.head_len);
                        out.extend_from_slice(&websocket::upgrade_response(&upgrade));
                        seen.upgrades.fetch_add(1, Ordering::Relaxed);
                        decoder = Some(FrameDecoder::new(Role::Server, 65536));
                    }
                    Err(e) => {
                        let _ = io.write_all(&e.response());
                        return;
                    }
                }
            }
            let Some(decoder) = decoder.as_mut() else {
                return;
            };
            let mut input = &inbox[..];
            let closing = loop {
                match decoder.next_event(&mut input) {
                    Ok(Some(Event::Message { payload, .. })) => requests.push(payload),
                    Ok(Some(Event::Ping(p))) => websocket::encode_pong(&p, None, &mut out),
                    Ok(Some(Event::Pong(_))) => {}
                    Ok(Some(Event::Close { code, .. })) => {
                        seen.ws_closes.fetch_add(1, Ordering::Relaxed);
                        websocket::encode_close(code.unwrap_or(1000), "", None, &mut out);
                        break true;
                    }
                    Ok(None) => break false,
                    Err(e) => {
                        websocket::encode_close(e.close_code(), "", None, &mut out);
                        break true;
                    }
                }
            };
            inbox.clear();
            if closing {
                let _ = io.write_all(&out);
                return;
            }
        }
        for request in requests {
            let Some(response) = answer(&request, seen) else {
                continue;
            };
            count += 1;
            if silent.is_some() {
                continue;
            }
            if ws {
                websocket::encode_frame(Opcode::Text, true, &response, None, &mut out);
            } else {
                out.extend_from_slice(&response);
            }
            seen.answered.fetch_add(1, Ordering::Relaxed);
        }
        if silent.is_some_and(|n| count >= n) {
            return;
        }
        if !out.is_empty() && io.write_all(&out).is_err() {
            return;
        }
    }
}

/// Records a request and writes the 200 answering it (`None` for what is not a request).
fn answer(request: &[u8], seen: &Seen) -> Option<Vec<u8>> {
    let msg = Message::parse_datagram(request).ok()?;
    let transport = msg.top_via().ok()?.transport.to_owned();
    let contact = msg
        .headers()
        .find(|h| h.name == HeaderName::Contact)
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    seen.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((transport, contact));
    let text = std::str::from_utf8(request).ok()?;
    let copied: String = text
        .split("\r\n")
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    Some(format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n").into_bytes())
}
