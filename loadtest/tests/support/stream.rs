//! A SIP responder over TCP or TLS written here (a thread per connection, 200 to every request,
//! messages cut out by Content-Length), with what it saw; and test certificates (rcgen: a CA and
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
            std::thread::spawn(move || serve(stream, config, silent, &stop, &seen));
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
        loop {
            match framer.next_frame(&inbox).expect("well-framed requests") {
                Frame::Message { len } => {
                    let request = inbox.drain(..len).collect::<Vec<u8>>();
                    let msg = Message::parse_datagram(&request).expect("a request");
                    let transport = msg.top_via().expect("Via").transport.to_owned();
                    let contact = msg
                        .headers()
                        .find(|h| h.name == HeaderName::Contact)
                        .map(|h| String::from_utf8_lossy(h.value).into_owned());
                    seen.requests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((transport, contact));
                    count += 1;
                    if silent.is_some() {
                        continue;
                    }
                    let text = std::str::from_utf8(&request).expect("UTF-8");
                    let copied: String = text
                        .split("\r\n")
                        .filter(|l| {
                            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                                .iter()
                                .any(|p| l.starts_with(p))
                        })
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    out.extend_from_slice(
                        format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n").as_bytes(),
                    );
                    seen.answered.fetch_add(1, Ordering::Relaxed);
                }
                Frame::Ping { len } | Frame::Pong { len } => {
                    inbox.drain(..len);
                }
                Frame::Incomplete => break,
            }
        }
        if silent.is_some_and(|n| count >= n) {
            return;
        }
        if !out.is_empty() && io.write_all(&out).is_err() {
            return;
        }
    }
}
