//! Flood protection and hostile peers, end to end: the `sipshard` binary with
//! `[module::DoSProtection]` under a flood from 127.0.0.2 while clients on 127.0.0.1 and 127.0.0.3
//! keep being served; SIPVicious (Debian's `sipvicious` 0.3.3) enumerating and cracking from
//! 127.0.0.2 against a node with authentication; the size of what the node answers to short
//! unauthenticated UDP requests (amplification); and, on the shard core alone with a fake clock,
//! that retransmissions of requests already in a transaction create no new work even when the
//! transaction table is full.
//!
//! Only 127.0.0.0/8 is used; every external tool runs under `timeout` and is killed on drop.

mod core_support;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sipshard_engine::core::{CoreSettings, Inbound, Output, ShardCore};
use sipshard_net::{HeaderName, Message, Transport};
use support::{InjectionFile, Node, SIPP_TIMEOUT, Sipp, TempDir};

/// A UDP client bound to one loopback address, sending OPTIONS to the node.
struct Pinger {
    socket: UdpSocket,
    target: SocketAddr,
    sent: u32,
}

impl Pinger {
    fn new(local: &str, target: SocketAddr) -> Pinger {
        let socket = UdpSocket::bind((local, 0)).expect("bind a loopback UDP socket");
        Pinger {
            socket,
            target,
            sent: 0,
        }
    }

    fn options(&mut self) -> String {
        self.sent += 1;
        let local = self.socket.local_addr().expect("local address");
        format!(
            "OPTIONS sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-dos-{port}-{n};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ping@{ip}>;tag=p{port}\r\n\
             To: <sip:{target}>\r\n\
             Call-ID: dos-{port}-{n}@{ip}\r\n\
             CSeq: {n} OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            target = self.target,
            ip = local.ip(),
            port = local.port(),
            n = self.sent,
        )
    }

    fn send(&mut self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.target)
            .expect("send a datagram");
    }

    /// Sends an OPTIONS and waits up to `wait` for its 200.
    fn ping(&mut self, wait: Duration) -> bool {
        let request = self.options();
        self.send(request.as_bytes());
        let cseq = self.sent;
        let deadline = Instant::now() + wait;
        let mut buf = vec![0; 65_535];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("read timeout");
            let Ok(n) = self.socket.recv(&mut buf) else {
                return false;
            };
            let Ok(msg) = Message::parse_datagram(&buf[..n]) else {
                continue;
            };
            if msg.cseq().is_ok_and(|c| c.seq == cseq) && msg.status() == Some(200) {
                return true;
            }
        }
        false
    }

    /// Responses already waiting, read without blocking.
    fn drain(&self) -> usize {
        self.socket
            .set_nonblocking(true)
            .expect("non-blocking socket");
        let mut buf = vec![0; 65_535];
        let mut count = 0;
        while self.socket.recv(&mut buf).is_ok() {
            count += 1;
        }
        self.socket.set_nonblocking(false).expect("blocking socket");
        count
    }
}

/// Pings every `every` from `local` until `stop`; returns (answered, sent).
fn keep_pinging(
    local: &'static str,
    target: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u32, u32)> {
    thread::spawn(move || {
        let mut pinger = Pinger::new(local, target);
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if pinger.ping(Duration::from_secs(1)) {
                answered += 1;
            }
            thread::sleep(every.saturating_sub(started.elapsed()));
        }
        (answered, pinger.sent)
    })
}

/// Lines of the node's log that announce a ban of `source`.
fn ban_lines(node: &Node, source: &str) -> usize {
    node.process
        .stderr()
        .lines()
        .filter(|line| line.contains("banned") && line.contains(source))
        .count()
}

#[test]
fn a_flood_of_20_times_the_rate_is_banned_while_others_are_served() {
    let port = support::free_port();
    let node = Node::start_on(
        port,
        &[
            "--threads",
            "2",
            "--set",
            "module::DoSProtection/packet-rate-limit=50",
            "--set",
            "module::DoSProtection/time-period=1000",
            "--set",
            "module::DoSProtection/ban-time=1",
        ],
    );
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let stop = Arc::new(AtomicBool::new(false));
    // 10/s each: 127.0.0.1 is trusted (as in Flexisip), 127.0.0.3 is limited like anyone.
    let trusted = keep_pinging(
        "127.0.0.1",
        target,
        Duration::from_millis(100),
        stop.clone(),
    );
    let limited = keep_pinging(
        "127.0.0.3",
        target,
        Duration::from_millis(100),
        stop.clone(),
    );
    thread::sleep(Duration::from_millis(300));

    // 1000 OPTIONS a second from 127.0.0.2 for 2 s: 20 times the limit.
    let mut flooder = Pinger::new("127.0.0.2", target);
    let started = Instant::now();
    let mut answered = 0;
    for tick in 0..200u32 {
        for _ in 0..10 {
            let request = flooder.options();
            flooder.send(request.as_bytes());
        }
        answered += flooder.drain();
        let due = started + Duration::from_millis(10) * (tick + 1);
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    thread::sleep(Duration::from_millis(200));
    answered += flooder.drain();
    let flood_sent = flooder.sent;
    // Banned: even a single polite request is ignored now.
    let after_flood = flooder.ping(Duration::from_secs(1));

    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (trusted_ok, trusted_sent) = trusted.join().expect("the 127.0.0.1 client");
    let (limited_ok, limited_sent) = limited.join().expect("the 127.0.0.3 client");
    eprintln!(
        "flood: {answered} of {flood_sent} answered in {:?}; 127.0.0.1: {trusted_ok}/{trusted_sent}; \
         127.0.0.3: {limited_ok}/{limited_sent}",
        started.elapsed()
    );
    // The burst (50 packets) plus what refills before the ban (a few ms at 50/s).
    assert!(
        (40..=60).contains(&answered),
        "{answered} flood requests answered\n{node:?}"
    );
    assert!(!after_flood, "127.0.0.2 is still served after its flood");
    assert_eq!(
        trusted_ok, trusted_sent,
        "127.0.0.1 missed answers\n{node:?}"
    );
    assert_eq!(
        limited_ok, limited_sent,
        "127.0.0.3 missed answers\n{node:?}"
    );
    assert!(trusted_sent >= 20 && limited_sent >= 20);
    assert_eq!(ban_lines(&node, "127.0.0.2"), 1, "{node:?}");
    assert_eq!(ban_lines(&node, "127.0.0.3"), 0);
}

/// A node with authentication on (users 100, 101 and 105) and the password file it reads.
struct AuthNode {
    node: Node,
    port: u16,
    _dir: TempDir,
}

const PASSWORDS: &str = "version:1\n\
    100@127.0.0.1 clrtxt:n0t-a-guessable-pw ;\n\
    101@127.0.0.1 clrtxt:n0r-this-one ;\n\
    105@127.0.0.1 clrtxt:1234 ;\n";

fn auth_node(extra: &[&str]) -> AuthNode {
    let dir = TempDir::new("dos-passwords");
    let path = dir.join("passwords");
    std::fs::write(&path, PASSWORDS).expect("write the password file");
    let file_path = format!("module::Authentication/file-path={}", path.display());
    let mut args = vec![
        "--threads",
        "2",
        "--set",
        "module::Authentication/enabled=true",
        "--set",
        &file_path,
    ];
    args.extend_from_slice(extra);
    let port = support::free_port();
    AuthNode {
        node: Node::start_on(port, &args),
        port,
        _dir: dir,
    }
}

/// SIPp registers `user` with its password from 127.0.0.1 (digest MD5).
fn legitimate_register(port: u16, user: &str, password: &str) -> support::SippResult {
    let users = InjectionFile::sequential(&[&format!("{user};127.0.0.1:5070;")]);
    Sipp::run(
        "register_auth.xml",
        &format!("127.0.0.1:{port}"),
        &["-inf", users.path(), "-au", user, "-ap", password],
        SIPP_TIMEOUT,
    )
}

/// Runs one SIPVicious tool (`svwar`, `svcrack`) from `bind` with `args`, under `timeout`.
///
/// Debian's sipvicious 0.3.3 parses `-b/--bindingip` but its `main()` never passes it on, so
/// the tools always send from the address the kernel picks (127.0.0.1 towards 127.0.0.1). The
/// tool's own `main()` is run with the binding address its option meant to set.
fn sipvicious(tool: &str, bind: &str, args: &[&str], limit_s: u32) -> std::process::Child {
    let class = if tool == "svwar" {
        "TakeASip"
    } else {
        "ASipOfRedWine"
    };
    let script = format!(
        "import sys\n\
         from sipvicious import {tool} as m\n\
         original = m.{class}.__init__\n\
         def init(self, *a, **k):\n\
         \x20   k['bindingip'] = '{bind}'\n\
         \x20   original(self, *a, **k)\n\
         m.{class}.__init__ = init\n\
         sys.argv = ['{tool}'] + sys.argv[1:]\n\
         sys.exit(m.main())\n"
    );
    assert!(
        std::path::Path::new("/usr/share/sipvicious/sipvicious").is_dir(),
        "sipvicious is not installed (apt-get install sipvicious; scripts/test-all does)"
    );
    Command::new("timeout")
        .args(["-s", "KILL", &limit_s.to_string(), "python3", "-c", &script])
        .args(args)
        .env("PYTHONPATH", "/usr/share/sipvicious")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"))
}

/// Waits for a tool and returns its output (stdout and stderr).
fn output_of(child: std::process::Child) -> String {
    let output = child.wait_with_output().expect("wait for the tool");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Kills a child still running when a test fails.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn sipvicious_finds_no_extension_and_cracks_no_password() {
    let mut node = auth_node(&[]);
    let port = node.port.to_string();
    legitimate_register(node.port, "100", "n0t-a-guessable-pw").assert_success(1);

    // svwar compares the answer for each extension with the answer for a random one: every
    // user, existing or not, gets the same 401.
    for method in ["REGISTER", "INVITE"] {
        let war = sipvicious(
            "svwar",
            "127.0.0.2",
            // Its own port, so that nothing svwar provoked can reach svcrack below on 5060.
            &[
                "-p",
                &port,
                "-P",
                "5062",
                "-e100-140",
                "-m",
                method,
                "--force",
                "127.0.0.1",
            ],
            60,
        );
        let out = output_of(war);
        eprintln!("svwar -m {method}:\n{out}");
        assert!(out.contains("found nothing"), "svwar -m {method}: {out}");
    }
    legitimate_register(node.port, "101", "n0r-this-one").assert_success(1);

    // svcrack tries 1000..1300 on 105, whose password is 1234. The flood guard (20 packets a
    // second, 60 at once) bans it long before: it finds nothing and gives up.
    let started = Instant::now();
    let mut crack = KillOnDrop(Some(sipvicious(
        "svcrack",
        "127.0.0.2",
        &[
            "-p",
            &port,
            "-u",
            "105",
            "-r1000-1300",
            "--maximumtime",
            "5",
            "127.0.0.1",
        ],
        60,
    )));
    // Meanwhile the real 100 keeps registering from 127.0.0.1.
    let mut registered = 0;
    while crack
        .0
        .as_mut()
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    {
        legitimate_register(node.port, "100", "n0t-a-guessable-pw").assert_success(1);
        registered += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let out = output_of(crack.0.take().expect("svcrack"));
    eprintln!(
        "svcrack ({:?}, {registered} registrations meanwhile):\n{out}",
        started.elapsed()
    );
    assert!(!out.contains("1234"), "svcrack found the password: {out}");
    assert!(out.contains("found nothing"), "{out}");
    assert!(registered >= 3, "{registered}");
    assert_eq!(ban_lines(&node.node, "127.0.0.2"), 1, "{:?}", node.node);
    // 105 itself is not locked out: the lockouts and the ban are on the source.
    legitimate_register(node.port, "105", "1234").assert_success(1);
    node.node.process.assert_running();
}

/// Sends one datagram from 127.0.0.2 and returns the first final response.
fn exchange(port: u16, request: &str) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
        .send_to(request.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    let mut buf = vec![0; 65_535];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to {request:?}: {e}"));
        if !buf.starts_with(b"SIP/2.0 1") {
            return buf[..n].to_vec();
        }
    }
}

/// Every datagram the node sends back to one request within `window`.
fn answers_within(port: u16, request: &str, window: Duration) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind");
    socket
        .send_to(request.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    let end = Instant::now() + window;
    let mut answers = Vec::new();
    let mut buf = vec![0; 65_535];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => answers.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    answers
}

#[test]
fn answers_to_short_unauthenticated_udp_requests_stay_within_3x() {
    let node = auth_node(&[
        "--set",
        "module::Authentication/available-algorithms=SHA-512-256 SHA-256 MD5",
    ]);
    // The shortest REGISTER the parser takes: compact headers, no Max-Forwards, no Contact.
    let tiny = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
                v:SIP/2.0/UDP a;branch=z9hG4bK1;rport\r\n\
                f:<sip:a@127.0.0.1>;tag=1\r\n\
                t:<sip:a@127.0.0.1>\r\n\
                i:1\r\n\
                CSeq:1 REGISTER\r\n\r\n";
    let phone = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-phone-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@127.0.0.1>;tag=8f2a1c\r\n\
         To: <sip:100@127.0.0.1>\r\n\
         Call-ID: 4f1c2e9a-7b3d-4e5f-9a1b-2c3d4e5f6a7b@127.0.0.2\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:100@127.0.0.2:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000000000001>\"\r\n\
         Expires: 600\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, NOTIFY, REFER, INFO, UPDATE\r\n\
         User-Agent: {}\r\n\
         Content-Length: 0\r\n\r\n",
        "Linphone/5.2 (belle-sip/5.2)"
    );
    let invite = "INVITE sip:105@127.0.0.1 SIP/2.0\r\n\
                  v:SIP/2.0/UDP a;branch=z9hG4bK2;rport\r\n\
                  f:<sip:100@127.0.0.1>;tag=1\r\n\
                  t:<sip:105@127.0.0.1>\r\n\
                  i:2\r\n\
                  CSeq:1 INVITE\r\n\r\n";
    let options = "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
                   v:SIP/2.0/UDP a;branch=z9hG4bK3;rport\r\n\
                   f:<sip:a@127.0.0.1>;tag=1\r\n\
                   t:<sip:a@127.0.0.1>\r\n\
                   i:3\r\n\
                   CSeq:1 OPTIONS\r\n\r\n";
    let broken =
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nv:SIP/2.0/UDP a;branch=z9hG4bK4;rport\r\ni:4\r\n\r\n";
    let challenges = |response: &[u8]| {
        Message::parse_datagram(response)
            .expect("parses")
            .values(HeaderName::WwwAuthenticate)
            .count()
            + Message::parse_datagram(response)
                .expect("parses")
                .values(HeaderName::ProxyAuthenticate)
                .count()
    };
    for (name, request, expected_challenges) in [
        ("tiny REGISTER", tiny, 1),
        ("phone REGISTER", phone.as_str(), 3),
        ("tiny INVITE", invite, 1),
        ("tiny OPTIONS", options, 0),
        ("REGISTER without CSeq", broken, 0),
    ] {
        let response = exchange(node.port, request);
        let ratio = response.len() as f64 / request.len() as f64;
        let status = String::from_utf8_lossy(&response[..12]).into_owned();
        eprintln!(
            "{name}: {} bytes -> {status} {} bytes ({ratio:.2}x, {} challenges)",
            request.len(),
            response.len(),
            challenges(&response)
        );
        assert!(ratio <= 3.0, "{name}: {ratio:.2}x");
        assert_eq!(challenges(&response), expected_challenges, "{name}");
    }

    // A forged INVITE gets its 407 once, not again on Timer G (0.5 s, 1.5 s, ...) for 32 s:
    // only the caller's own retransmission would bring it back.
    let forged = invite.replace("z9hG4bK2", "z9hG4bK2-forged");
    let answers = answers_within(node.port, &forged, Duration::from_millis(2200));
    let statuses: Vec<String> = answers
        .iter()
        .map(|a| String::from_utf8_lossy(&a[..12]).into_owned())
        .collect();
    assert_eq!(
        statuses,
        ["SIP/2.0 100 ", "SIP/2.0 407 "],
        "one 100 and one 407 in 2.2 s"
    );

    // More Vias than any real path: 400, no larger than the request.
    let vias: String = (0..80)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bK-hop{i}\r\n",
                i % 250
            )
        })
        .collect();
    let deep = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK5;rport\r\n{vias}\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: 5\r\nCSeq: 1 OPTIONS\r\n\r\n"
    );
    let response = exchange(node.port, &deep);
    assert!(
        response.starts_with(b"SIP/2.0 400 Too Many Vias"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(response.len() <= deep.len() + 128);
}

fn core_settings(transaction_capacity: usize) -> CoreSettings {
    CoreSettings {
        transaction_capacity,
        ..core_support::core_settings()
    }
}

/// What the core sent: (destination, bytes).
fn receive(
    core: &mut ShardCore,
    from: &str,
    bytes: &str,
    now: Instant,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let inbound = Inbound {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().expect("address"),
        remote: from.parse().expect("address"),
        conn: None,
    };
    core.on_datagram(bytes.as_bytes(), inbound, now, &mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send { to, bytes, .. } => Some((to, bytes.to_vec())),
            _ => None,
        })
        .collect()
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    Message::parse_datagram(bytes).ok()?.status()
}

#[test]
fn retransmissions_create_no_new_work_even_when_the_table_is_full() {
    // One server transaction per shard: the table is full as soon as a call is in progress.
    let mut core = ShardCore::new(0, 1, core_settings(1));
    let now = Instant::now();
    let register = "REGISTER sip:example.org SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-reg-1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@example.org>;tag=r1\r\n\
        To: <sip:alice@example.org>\r\n\
        Call-ID: reg-1\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:alice@127.0.0.2:5070>\r\n\
        Content-Length: 0\r\n\r\n";
    let first = receive(&mut core, "127.0.0.2:5070", register, now);
    let again = receive(&mut core, "127.0.0.2:5070", register, now);
    assert_eq!(status_of(&first[0].1), Some(200));
    assert_eq!(first, again, "the retransmission gets the same 200, resent");
    assert_eq!(
        core.counters().registers_accepted,
        1,
        "and is not registered again"
    );

    let invite = |call: &str| {
        format!(
            "INVITE sip:alice@example.org SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.9:5090;branch=z9hG4bK-{call}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@example.org>;tag=b-{call}\r\n\
             To: <sip:alice@example.org>\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    // The call takes the one transaction (the REGISTER's, completed, is reclaimed) and is
    // forwarded to alice.
    let sent = receive(&mut core, "127.0.0.9:5090", &invite("call-1"), now);
    let to_alice = |sent: &[(SocketAddr, Vec<u8>)]| {
        sent.iter()
            .filter(|(to, _)| *to == "127.0.0.2:5070".parse::<SocketAddr>().expect("address"))
            .count()
    };
    assert_eq!(to_alice(&sent), 1);
    assert_eq!(core.counters().forwarded, 1);
    // Its retransmissions are absorbed: the 100 Trying again, nothing forwarded, no 503.
    for _ in 0..5 {
        let sent = receive(&mut core, "127.0.0.9:5090", &invite("call-1"), now);
        assert_eq!(to_alice(&sent), 0);
        let statuses: Vec<_> = sent.iter().map(|(_, b)| status_of(b)).collect();
        assert_eq!(statuses, [Some(100)]);
    }
    assert_eq!(core.counters().forwarded, 1);
    assert_eq!(core.counters().overloaded, 0);
    // A new request is what the full table refuses: 503 with Retry-After.
    let sent = receive(&mut core, "127.0.0.9:5090", &invite("call-2"), now);
    assert_eq!(status_of(&sent[0].1), Some(503));
    let refusal = Message::parse_datagram(&sent[0].1).expect("parses");
    assert!(refusal.other_value("Retry-After").is_some());
    assert_eq!(core.counters().overloaded, 1);
}

/// A TCP connection from `local` to the node, OPTIONS sent on it: the status of the answer, or
/// `None` when the node closed the connection (or said nothing within 2 s).
fn options_over_tcp(local: &str, port: u16) -> (Option<std::net::TcpStream>, Option<u16>) {
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let ip: Ipv4Addr = local.parse().expect("an IPv4 loopback address");
    socket
        .bind(&SocketAddr::from((ip, 0)).into())
        .expect("bind a loopback address");
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect to the node");
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let me = stream.local_addr().expect("local address");
    let request = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-conn-{p}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:c@{ip}>;tag=c{p}\r\n\
         To: <sip:127.0.0.1>\r\n\
         Call-ID: conn-{p}@{ip}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        ip = me.ip(),
        p = me.port(),
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (None, None);
    }
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(n) if n > 12 => (Some(stream), status_of(&buf[..n])),
        _ => (None, None),
    }
}

/// `max-connections-per-address`: past it, a source's new connections are closed at once;
/// its open ones, and other sources, are served.
#[test]
fn connections_past_the_per_address_limit_are_closed() {
    let port = support::free_port();
    let node = Node::start_on(
        port,
        &[
            "--threads",
            "1",
            "--set",
            "global/max-connections-per-address=3",
        ],
    );
    let mut open = Vec::new();
    for i in 0..3 {
        let (stream, status) = options_over_tcp("127.0.0.2", port);
        assert_eq!(
            status,
            Some(200),
            "connection {i} within the limit\n{node:?}"
        );
        open.push(stream);
    }
    for i in 3..5 {
        let (_, status) = options_over_tcp("127.0.0.2", port);
        assert_eq!(
            status, None,
            "connection {i} past the limit must be closed\n{node:?}"
        );
    }
    // Another address is not affected.
    let (_, other) = options_over_tcp("127.0.0.3", port);
    assert_eq!(other, Some(200), "127.0.0.3\n{node:?}");
    // Closing one makes room again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = options_over_tcp("127.0.0.2", port);
        if status == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room 5 s after a connection closed\n{node:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
