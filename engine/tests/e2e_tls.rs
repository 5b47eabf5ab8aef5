//! End-to-end tests of TLS listens (`sips:`): real handshakes with certificates generated here
//! (rcgen: a CA and a node certificate for localhost and 127.0.0.1), a Rust client on rustls
//! trusting that CA, the node on 127.0.0.1.
//!
//! SIPp is not used: the Debian build on these machines (3.6.1, "SCTP-PCAP-RTPSTREAM") is built
//! without OpenSSL (`-t l1` exits with "To use a TLS transport you must compile SIPp with
//! OpenSSL"), so the Rust client does what a phone does.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::{TestCa, Validity};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use support::sip_stream::{SipStream, answer, headers};
use support::{LOOPBACK, Node, TempDir};

/// The node's handshake timeout (`tls::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A CA and a node certificate it signed, written as PEM files.
struct Certificates {
    dir: TempDir,
    ca: TestCa,
}

impl Certificates {
    /// A node certificate for `names` (DNS names or IP addresses), signed by a fresh CA.
    fn new(names: &[&str]) -> Certificates {
        let ca = TestCa::new();
        let leaf = ca.issue(names, Validity::Now);
        let dir = TempDir::new("tls-certs");
        leaf.write(dir.path(), "cert");
        std::fs::write(
            dir.join("agent.pem"),
            format!("{}{}", leaf.chain_pem, leaf.key_pem),
        )
        .expect("write agent.pem");
        Certificates { ca, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `--set` arguments naming the certificate and key files.
    fn file_args(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("global/tls-certificates-file={}", self.path("cert.pem")),
            "--set".into(),
            format!(
                "global/tls-certificates-private-key={}",
                self.path("cert.key")
            ),
        ]
    }

    /// `--set` arguments naming the directory holding agent.pem.
    fn dir_args(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("global/tls-certificates-dir={}", self.dir.path().display()),
        ]
    }

    /// A client configuration trusting the CA, limited to `versions`.
    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der()).expect("CA into the root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Starts the node listening on `sips:127.0.0.1:PORT` only, with `tls_args`.
fn start_node(tls_args: &[String]) -> (Node, u16) {
    let port = support::free_port();
    let transports = format!("global/transports=sips:{LOOPBACK}:{port}");
    let mut args: Vec<&str> = vec![
        "--set",
        &transports,
        "--set",
        "module::Registrar/reg-domains=127.0.0.1 localhost",
        "--threads",
        "2",
    ];
    args.extend(tls_args.iter().map(String::as_str));
    (Node::start(&args), port)
}

/// One TLS connection to the node, speaking SIP.
struct Client {
    sip: SipStream<StreamOwned<ClientConnection, TcpStream>>,
    local_port: u16,
}

impl Client {
    fn connect(port: u16, config: Arc<ClientConfig>, name: &str) -> Client {
        let tcp = TcpStream::connect((LOOPBACK, port)).expect("connect to the node");
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let local_port = tcp.local_addr().unwrap().port();
        let server_name = ServerName::try_from(name.to_owned()).expect("server name");
        let conn = ClientConnection::new(config, server_name).expect("client connection");
        let mut tls = StreamOwned::new(conn, tcp);
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                        && Instant::now() < deadline => {}
                Err(e) => panic!("TLS handshake with the node failed: {e}"),
            }
        }
        Client {
            sip: SipStream::new(tls),
            local_port,
        }
    }

    fn send(&mut self, message: &str) {
        self.sip.send(message);
    }

    fn read_message(&mut self) -> String {
        self.sip.read_message()
    }

    fn read_final_response(&mut self) -> String {
        self.sip.read_final_response()
    }

    fn tls(&self) -> &ClientConnection {
        &self.sip.stream.conn
    }
}

fn register(user: &str, port: u16, client: &Client, call_id: &str) -> String {
    let lp = client.local_port;
    format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-{call_id}-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=reg-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:{lp};transport=tls>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// REGISTER over TLS gets 200 with the binding; then, on the same connection, an OPTIONS for
/// the user just registered is routed by the node back over that connection (Via says TLS),
/// and the client's 200 is relayed back to it. A second connection resumes the TLS session.
#[test]
fn register_then_options_over_one_tls_connection() {
    let certs = Certificates::new(&["localhost", "127.0.0.1"]);
    let (mut node, port) = start_node(&certs.file_args());
    let config = certs.client(&[&rustls::version::TLS13]);
    let mut client = Client::connect(port, config.clone(), "localhost");

    client.send(&register("alice", port, &client, "tls-reg-1"));
    let ok = client.read_final_response();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
    let contacts = headers(&ok, "Contact").join(",");
    assert!(
        contacts.contains(&format!(
            "sip:alice@127.0.0.1:{};transport=tls",
            client.local_port
        )),
        "200 without the binding:\n{ok}"
    );

    let lp = client.local_port;
    client.send(&format!(
        "OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-tls-opt-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@127.0.0.1>;tag=opt-1\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: tls-opt-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    ));
    let forwarded = client.read_message();
    assert!(
        forwarded.starts_with("OPTIONS sip:alice@127.0.0.1:"),
        "expected the OPTIONS routed back over the connection, got:\n{forwarded}"
    );
    let vias = headers(&forwarded, "Via");
    assert!(
        vias.first().is_some_and(|v| v.starts_with("SIP/2.0/TLS ")),
        "the node's Via does not say TLS:\n{forwarded}"
    );
    client.send(&answer(&forwarded, "200 OK", "alice-1"));
    let relayed = client.read_final_response();
    assert!(
        relayed.starts_with("SIP/2.0 200 ") && relayed.contains("tls-opt-1"),
        "the OPTIONS's 200 was not relayed back:\n{relayed}"
    );
    assert_eq!(
        headers(&relayed, "Via").len(),
        1,
        "the relayed 200 must carry only the client's Via:\n{relayed}"
    );

    // Session resumption: a new connection with the same client configuration (which kept
    // the node's tickets) resumes instead of a full handshake.
    let second = Client::connect(port, config, "localhost");
    assert_eq!(
        second.tls().handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the second TLS 1.3 connection did not resume the session"
    );
    node.process.assert_running();
}

/// TLS 1.2 works too, with the certificate and key in one agent.pem found through
/// `tls-certificates-dir`.
#[test]
fn tls12_and_agent_pem() {
    let certs = Certificates::new(&["localhost", "127.0.0.1"]);
    let (mut node, port) = start_node(&certs.dir_args());
    let mut client = Client::connect(port, certs.client(&[&rustls::version::TLS12]), "127.0.0.1");
    assert_eq!(
        client.tls().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    client.send(&register("carol", port, &client, "tls12-reg-1"));
    let ok = client.read_final_response();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
    let stderr = node.process.stderr();
    assert!(
        !stderr.contains("SubjectAltNames"),
        "a covering certificate was warned about:\n{stderr}"
    );
    node.process.assert_running();
}

/// A client that connects and never completes the handshake is disconnected after the
/// handshake timeout; meanwhile another client registers without waiting for it.
#[test]
fn stalled_handshake_is_cut_off_while_others_are_served() {
    let certs = Certificates::new(&["localhost", "127.0.0.1"]);
    let (mut node, port) = start_node(&certs.file_args());
    let started = Instant::now();
    // Two stalled peers: one silent, one that sent half a ClientHello's record header.
    let mut silent = TcpStream::connect((LOOPBACK, port)).unwrap();
    let mut partial = TcpStream::connect((LOOPBACK, port)).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();

    let served = Instant::now();
    let mut client = Client::connect(port, certs.client(&[&rustls::version::TLS13]), "localhost");
    client.send(&register("dave", port, &client, "tls-stall-1"));
    let ok = client.read_final_response();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
    assert!(
        served.elapsed() < HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "the served client waited {:?}",
        served.elapsed()
    );

    for (label, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT + Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 64];
        let closed = loop {
            match stream.read(&mut byte) {
                Ok(0) => break true,
                // An alert may come before the close.
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                Err(e) => panic!("{label} peer: no close within the timeout ({e})"),
            }
        };
        assert!(closed);
        let after = started.elapsed();
        assert!(
            after >= HANDSHAKE_TIMEOUT - Duration::from_millis(500)
                && after < HANDSHAKE_TIMEOUT + Duration::from_secs(4),
            "{label} peer closed after {after:?}, expected about {HANDSHAKE_TIMEOUT:?}"
        );
    }
    node.process.assert_running();
}

/// A certificate whose SubjectAltNames miss the node's names: the node starts and warns, naming
/// what is not covered.
#[test]
fn uncovered_names_are_warned_about() {
    let certs = Certificates::new(&["other.example.org"]);
    let (mut node, port) = start_node(&certs.file_args());
    let deadline = Instant::now() + Duration::from_secs(5);
    let stderr = loop {
        let stderr = node.process.stderr();
        if stderr.contains("SubjectAltNames") || Instant::now() > deadline {
            break stderr;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        stderr.contains("do not cover 127.0.0.1, localhost"),
        "no RFC 5922 warning:\n{stderr}"
    );
    // It still serves (for a client that does not check the name).
    let tcp = TcpStream::connect((LOOPBACK, port));
    assert!(tcp.is_ok(), "not listening: {tcp:?}");
    node.process.assert_running();
}

/// Runs the node with `args` and expects it to refuse to start: exit 2, one line on stderr.
fn refused(args: &[String]) -> String {
    let binary = env!("CARGO_BIN_EXE_sipshard");
    let port = support::free_port();
    let mut all: Vec<String> = vec![
        "--set".into(),
        format!("global/transports=sips:{LOOPBACK}:{port}"),
    ];
    all.extend(args.iter().cloned());
    let mut child = Command::new(binary)
        .args(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipshard");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sipshard {all:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{all:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

/// Bad or missing certificate files stop the node with one line naming the file (exit 2).
#[test]
fn bad_certificate_files_refuse_to_start() {
    let certs = Certificates::new(&["localhost"]);
    let missing = PathBuf::from(certs.path("nowhere.pem"));
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-file={}", missing.display()),
        "--set".into(),
        format!(
            "global/tls-certificates-private-key={}",
            certs.path("cert.key")
        ),
    ]);
    assert!(
        line.contains("nowhere.pem") && line.contains("cannot read"),
        "{line}"
    );

    // The key file given as the certificate: no certificate in it.
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-file={}", certs.path("cert.key")),
        "--set".into(),
        format!(
            "global/tls-certificates-private-key={}",
            certs.path("cert.key")
        ),
    ]);
    assert!(line.contains("no PEM CERTIFICATE"), "{line}");

    // The certificate given as the key: no key in it.
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-file={}", certs.path("cert.pem")),
        "--set".into(),
        format!(
            "global/tls-certificates-private-key={}",
            certs.path("cert.pem")
        ),
    ]);
    assert!(line.contains("no PEM private key"), "{line}");

    // A key of another certificate.
    let other = Certificates::new(&["localhost"]);
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-file={}", certs.path("cert.pem")),
        "--set".into(),
        format!(
            "global/tls-certificates-private-key={}",
            other.path("cert.key")
        ),
    ]);
    assert!(line.contains(" and key "), "{line}");

    // A certificate file without its key setting.
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-file={}", certs.path("cert.pem")),
    ]);
    assert!(line.contains("tls-certificates-private-key"), "{line}");

    // The default directory (/etc/flexisip/tls/) without agent.pem.
    let empty = TempDir::new("tls-empty");
    let line = refused(&[
        "--set".into(),
        format!("global/tls-certificates-dir={}", empty.path().display()),
    ]);
    assert!(
        line.contains("agent.pem") && line.contains("cannot read"),
        "{line}"
    );
}

/// Whether the node refuses a client using `config`: its handshake fails, or (TLS 1.3, where
/// the server checks the client's certificate after the client finished) the first exchange
/// ends in an alert or a close instead of an answer.
fn refuses(port: u16, config: Arc<ClientConfig>) -> bool {
    let tcp = TcpStream::connect((LOOPBACK, port)).expect("connect to the node");
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).expect("client connection");
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return true;
        }
    }
    let options = "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK-mtls-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:eve@127.0.0.1>;tag=mtls-1\r\n\
         To: <sip:127.0.0.1>\r\n\
         Call-ID: mtls-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n";
    if tls.write_all(options.as_bytes()).and(tls.flush()).is_err() {
        return true;
    }
    let mut answer = [0u8; 16];
    !matches!(tls.read(&mut answer), Ok(n) if n > 0)
}

/// `tls-verify-incoming` with `tls-certificates-ca-file` (mutual TLS, as between cluster nodes):
/// a client presenting a certificate from that CA registers; one presenting none, or a
/// self-signed one, is refused.
#[test]
fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let certs = Certificates::new(&["localhost", "127.0.0.1"]);
    let ca_file = certs.dir.join("ca.pem");
    std::fs::write(&ca_file, certs.ca.pem()).unwrap();
    let mut args = certs.file_args();
    args.extend([
        "--set".to_owned(),
        "global/tls-verify-incoming=true".to_owned(),
        "--set".to_owned(),
        format!("global/tls-certificates-ca-file={}", ca_file.display()),
    ]);
    let (mut node, port) = start_node(&args);

    let trusted = certs.ca.issue(&["client.example.org"], Validity::Now);
    let mut client = Client::connect(port, certs.ca.client_config(Some(&trusted)), "localhost");
    client.send(&register("frank", port, &client, "mtls-reg-1"));
    let ok = client.read_final_response();
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");

    assert!(
        refuses(port, certs.ca.client_config(None)),
        "a client without a certificate was served"
    );
    let stranger = certs::self_signed(&["client.example.org"]);
    assert!(
        refuses(port, certs.ca.client_config(Some(&stranger))),
        "a client with a self-signed certificate was served"
    );
    node.process.assert_running();
}
