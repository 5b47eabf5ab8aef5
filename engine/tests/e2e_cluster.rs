//! Three sipshard nodes serving one domain, as in the Flexisip HA deployment
//! (`../shared/seed/flexisip-ha.txt`): nodes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 with
//! `[cluster] enabled`, `nodes` and `internal-transport` (TCP between nodes), sharing one Redis
//! HA lab (3 servers, 3 sentinels: `registrar/tests/support/redis_lab.rs`). Scenarios of issue 8:
//! 1. A registers through node 1 over TCP; B calls A through node 2: the INVITE reaches A over
//!    A's own connection (node 2 routes it along the Path node 1 stored, node 1 delivers it by
//!    the flow token), the ACK and both sides' BYEs follow the Record-Route through both nodes;
//! 2. the same with A on UDP and B calling through node 3, which reads A's binding from Redis
//!    (a fetch through node 3 lists it); A's new contact is used at once (pub/sub coherence);
//!    a UDP client behind a NAT is reached at the source address node 1 recorded;
//! 3. one AOR registered through two nodes at once with different CSeqs (same Call-ID): every
//!    node lists the binding of the higher CSeq (RFC 3261 §10.3 step 7);
//! 4. node 1 killed: B's call is answered at once (not after a transaction timeout), A
//!    re-registers through node 2 and B's next call reaches it;
//! 5. the Redis master killed during cross-node calls: the calls keep completing.
//!
//! A and B are small user agents written here (blocking sockets with timeouts) rather than
//! SIPp: they check which socket a request arrives on and which nodes it went through (its
//! Vias), which SIPp cannot assert. Every step is bounded in time; the processes (nodes, Redis,
//! sentinels) are killed on drop, also when a test fails. The scenarios share one lock: each
//! starts nine processes on a 2-core machine.
//! `cargo test -p sipshard-engine --test e2e_cluster -- --test-threads 2 --nocapture`.

#[path = "../../registrar/tests/support/redis_lab.rs"]
mod redis_lab;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use redis_lab::{LabOptions, RedisLab};
use sipshard_net::{HeaderName, Message};
use support::Node;

/// How long a step waits for the message it expects.
const STEP: Duration = Duration::from_secs(5);
/// The domain the cluster serves.
const DOMAIN: &str = "example.org";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// The lab and three nodes; node `i` listens on 127.0.0.(2+i), UDP and TCP.
struct Cluster {
    lab: RedisLab,
    nodes: Vec<Option<Node>>,
    addrs: Vec<SocketAddr>,
}

impl Cluster {
    /// The lab and the nodes, with `extra` settings (`section/key=value`) on every node.
    fn start(extra: &[&str]) -> Cluster {
        let lab = RedisLab::start(LabOptions::ha());
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::new([127, 0, 0, 2 + i].into(), support::free_port()))
            .collect();
        let sentinels: Vec<String> = (0..lab.options().sentinels)
            .map(|i| lab.sentinel_addr(i).to_string())
            .collect();
        let nodes_list = addrs
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cluster = Cluster {
            lab,
            nodes: Vec::new(),
            addrs: addrs.clone(),
        };
        for addr in &addrs {
            let sets = [
                format!("global/transports=sip:{addr}"),
                format!("module::Registrar/reg-domains={DOMAIN}"),
                "module::Registrar/db-implementation=redis".to_owned(),
                format!(
                    "module::Registrar/redis-sentinel-addresses={}",
                    sentinels.join(" ")
                ),
                format!(
                    "module::Registrar/redis-sentinel-master-name={}",
                    cluster.lab.options().master_name
                ),
                format!(
                    "module::Registrar/redis-auth-password={}",
                    cluster.lab.password().unwrap_or("")
                ),
                "module::Registrar/redis-failover-hold=10s".to_owned(),
                // No admin endpoint: three nodes would contend for its default address.
                "global/admin-listen=".to_owned(),
                "cluster/enabled=true".to_owned(),
                format!("cluster/nodes={nodes_list}"),
                format!("cluster/internal-transport=sip:{addr};transport=tcp"),
            ];
            let mut args = vec!["--threads", "2"];
            for set in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
                args.extend(["--set", set]);
            }
            cluster.nodes.push(Some(Node::start(&args)));
        }
        cluster
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.addrs[node]
    }

    /// Kills node `i` (SIGKILL, as a host failure).
    fn kill(&mut self, node: usize) {
        self.nodes[node] = None;
    }

    /// The nodes' logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.iter().flatten() {
            out.push_str(&format!("{node:?}\n"));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// A user agent
// ---------------------------------------------------------------------------------------------

/// A received message, owned.
#[derive(Clone)]
struct Msg {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.bytes))
    }
}

impl Msg {
    fn parsed(&self) -> Message<'_> {
        Message::parse_datagram(&self.bytes).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn status(&self) -> Option<u16> {
        self.parsed().status()
    }

    fn method(&self) -> Option<String> {
        self.parsed().method().map(|m| m.as_str().to_owned())
    }

    fn call_id(&self) -> String {
        self.parsed().call_id().unwrap_or("").to_owned()
    }

    fn cseq_method(&self) -> String {
        self.parsed()
            .cseq()
            .map(|c| c.method.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The values of a Route/Record-Route/Contact-like header, `<uri>` each, in order.
    fn uris(&self, name: HeaderName) -> Vec<String> {
        self.parsed()
            .name_addrs(name)
            .map(|v| format!("<{}>", v.expect("a valid value").uri.as_str()))
            .collect()
    }

    /// The sent-by of every Via, top first.
    fn via_hosts(&self) -> Vec<String> {
        self.parsed()
            .vias()
            .map(|v| {
                let v = v.expect("a valid Via");
                match v.port {
                    Some(port) => format!("{}:{port}", v.host.text),
                    None => v.host.text.to_owned(),
                }
            })
            .collect()
    }

    /// Contacts of a REGISTER's 200 OK: (URI, expires).
    fn contacts(&self) -> Vec<(String, Option<u32>)> {
        self.parsed()
            .contacts()
            .filter_map(|c| {
                let c = c.expect("a valid Contact");
                Some((c.address()?.uri.as_str().to_owned(), c.expires_s()))
            })
            .collect()
    }

    /// The raw lines of the headers named `name` (full names: the test writes no compact ones
    /// and the nodes add none).
    fn header_lines(&self, name: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
        head.split("\r\n")
            .skip(1)
            .filter(|line| {
                line.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
            .map(str::to_owned)
            .collect()
    }
}

enum Socket {
    Tcp { stream: TcpStream, buf: Vec<u8> },
    Udp(UdpSocket),
}

/// A user agent on 127.0.0.1: one TCP connection to a node, or one UDP socket.
struct Ua {
    user: &'static str,
    socket: Socket,
    local: SocketAddr,
    /// The address its Via and Contact name: `local`, or a private address behind a NAT.
    advertised: SocketAddr,
    /// The node it sends out-of-dialog requests to (its outbound proxy, as a client picks one
    /// of the SRV targets).
    node: SocketAddr,
    next: u32,
}

impl Ua {
    fn tcp(user: &'static str, node: SocketAddr) -> Ua {
        let stream = TcpStream::connect_timeout(&node, STEP)
            .unwrap_or_else(|e| panic!("{user}: cannot connect to {node}: {e}"));
        let local = stream.local_addr().expect("a local address");
        Ua {
            user,
            socket: Socket::Tcp {
                stream,
                buf: Vec::new(),
            },
            local,
            advertised: local,
            node,
            next: 0,
        }
    }

    fn udp(user: &'static str, node: SocketAddr) -> Ua {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let local = socket.local_addr().expect("a local address");
        Ua {
            user,
            socket: Socket::Udp(socket),
            local,
            advertised: local,
            node,
            next: 0,
        }
    }

    fn transport(&self) -> &'static str {
        match self.socket {
            Socket::Tcp { .. } => "TCP",
            Socket::Udp(_) => "UDP",
        }
    }

    fn contact(&self) -> String {
        match self.socket {
            Socket::Tcp { .. } => format!("sip:{}@{};transport=tcp", self.user, self.advertised),
            Socket::Udp(_) => format!("sip:{}@{}", self.user, self.advertised),
        }
    }

    fn unique(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    fn via(&mut self) -> String {
        let n = self.unique();
        format!(
            "Via: SIP/2.0/{} {};branch=z9hG4bK-{}-{n};rport",
            self.transport(),
            self.advertised,
            self.user
        )
    }

    /// Sends to `to` (UDP), or on the connection (TCP, whatever `to` says: a connection-bound
    /// client has no other way out).
    fn send(&mut self, text: &str, to: SocketAddr) {
        match &mut self.socket {
            Socket::Tcp { stream, .. } => stream
                .write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("{}: write: {e}", self.user)),
            Socket::Udp(socket) => {
                socket
                    .send_to(text.as_bytes(), to)
                    .unwrap_or_else(|e| panic!("{}: send: {e}", self.user));
            }
        }
    }

    /// The next message, or `None` after `timeout`.
    fn recv(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        match &mut self.socket {
            Socket::Udp(socket) => {
                let mut buf = vec![0; 65_535];
                loop {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    socket
                        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .ok()?;
                    match socket.recv_from(&mut buf) {
                        Ok((n, _)) if buf[..n].iter().all(|b| b.is_ascii_whitespace()) => {}
                        Ok((n, _)) => {
                            return Some(Msg {
                                bytes: buf[..n].to_vec(),
                            });
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None;
                        }
                        Err(e) => panic!("{}: recv: {e}", self.user),
                    }
                }
            }
            Socket::Tcp { stream, buf } => loop {
                if let Some(frame) = cut_frame(buf) {
                    return Some(Msg { bytes: frame });
                }
                let left = deadline.checked_duration_since(Instant::now())?;
                stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .ok()?;
                let mut chunk = [0; 16 * 1024];
                match stream.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return None;
                    }
                    Err(_) => return None,
                }
            },
        }
    }

    /// Waits for the message `wanted` picks (others — provisionals, retransmissions, messages
    /// of earlier calls — are skipped); panics with `what` after [`STEP`].
    fn expect(&mut self, what: &str, wanted: impl Fn(&Msg) -> bool) -> Msg {
        self.expect_within(STEP, what, wanted)
    }

    fn expect_within(&mut self, limit: Duration, what: &str, wanted: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(msg) if wanted(&msg) => return msg,
                Some(msg) => skipped.push(msg),
                None => panic!(
                    "{} ({}) got no {what} within {limit:?}; skipped {skipped:?}",
                    self.user, self.local
                ),
            }
        }
    }

    /// Answers a request with `status`, copying Via, From, To (a tag added), Call-ID, CSeq and
    /// Record-Route (§12.1.1) and giving its Contact.
    fn respond(&mut self, request: &Msg, status: u16, to_tag: &str) {
        let reason = match status {
            180 => "Ringing",
            200 => "OK",
            _ => "Busy Here",
        };
        let mut text = format!("SIP/2.0 {status} {reason}\r\n");
        for line in request.header_lines("Via") {
            text.push_str(&line);
            text.push_str("\r\n");
        }
        for name in ["From", "Call-ID", "CSeq", "Record-Route"] {
            for line in request.header_lines(name) {
                text.push_str(&line);
                text.push_str("\r\n");
            }
        }
        for line in request.header_lines("To") {
            if line.contains(";tag=") {
                text.push_str(&line);
            } else {
                text.push_str(&format!("{line};tag={to_tag}"));
            }
            text.push_str("\r\n");
        }
        text.push_str(&format!(
            "Contact: <{}>\r\nContent-Length: 0\r\n\r\n",
            self.contact()
        ));
        // Responses go where the top Via says (received/rport: the node that sent it).
        let to = response_destination(request);
        self.send(&text, to);
    }

    /// The ACK of a non-2xx final response to `invite` (§17.1.1.3: hop by hop, with the
    /// INVITE's Request-URI, top Via, From and Call-ID and the response's To), so that the node
    /// stops retransmitting the response.
    fn ack_failure(&mut self, invite: &str, response: &Msg, to: SocketAddr) {
        let lines: Vec<&str> = invite.split("\r\n").collect();
        let uri = lines[0].split(' ').nth(1).unwrap_or("");
        let pick = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(name))
                .copied()
                .unwrap_or("")
        };
        let ack = format!(
            "ACK {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n",
            pick("Via:"),
            pick("From:"),
            response.header_lines("To")[0],
            pick("Call-ID:")
        );
        self.send(&ack, to);
    }

    /// REGISTERs `contact` (this agent's own by default) for `expires` seconds with `call_id`
    /// and `cseq` through `node`; returns the final response.
    fn register(&mut self, node: SocketAddr, call_id: &str, cseq: u32, contacts: &str) -> Msg {
        let via = self.via();
        let text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
From: <sip:{user}@{DOMAIN}>;tag=r{cseq}\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n",
            user = self.user
        );
        self.send(&text, node);
        self.expect("final response to REGISTER", |m| {
            m.call_id() == call_id && m.status().is_some_and(|s| s >= 200)
        })
    }

    /// Registers its own contact (3600 s) through its node, with an instance named after the
    /// user: a new socket of the same user replaces the binding (RFC 5626 §4.1). 200 expected.
    fn register_self(&mut self, call_id: &str, cseq: u32) {
        let contact = format!(
            "Contact: <{}>;+sip.instance=\"<urn:test:{}>\"\r\nExpires: 3600\r\n",
            self.contact(),
            self.user
        );
        let node = self.node;
        let ok = self.register(node, call_id, cseq, &contact);
        assert_eq!(ok.status(), Some(200), "{} registers: {ok:?}", self.user);
    }
}

/// One message cut from a TCP stream (CRLF keep-alives skipped; Content-Length framing).
fn cut_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    if buf.len() < end + length {
        return None;
    }
    Some(buf.drain(..end + length).collect())
}

/// §18.2.2: the top Via's received/rport, else its sent-by.
fn response_destination(request: &Msg) -> SocketAddr {
    let parsed = request.parsed();
    let via = parsed.top_via().expect("a Via");
    let ip = via
        .received()
        .unwrap_or(via.host.text)
        .parse()
        .expect("an IP in the Via");
    let port = match via.rport() {
        Some(Some(port)) => port,
        _ => via.port.unwrap_or(5060),
    };
    SocketAddr::new(ip, port)
}

/// The address a `<sip:...>` route names (IP literal; UDP unless `transport=`).
fn route_addr(route: &str) -> SocketAddr {
    let uri = route.trim_matches(['<', '>']);
    let host_port = uri
        .strip_prefix("sip:")
        .expect("a sip: URI")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let host_port = host_port.split(';').next().unwrap_or("");
    host_port.parse().expect("host:port")
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangsUp {
    Caller,
    Callee,
}

/// One side's view of a dialog (§12.1): where its requests go, and the tags.
struct DialogSide {
    call_id: String,
    remote_target: String,
    routes: Vec<String>,
    local_tag: String,
    remote_user: &'static str,
    remote_tag: String,
}

impl DialogSide {
    /// Sends an in-dialog request from `ua` along the route set (to the first route's address;
    /// §12.2.1.1 with loose routers).
    fn send(&self, ua: &mut Ua, method: &str, cseq: u32) {
        let via = ua.via();
        let text = format!(
            "{method} {target} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\nRoute: {routes}\r\n\
From: <sip:{user}@{DOMAIN}>;tag={local}\r\nTo: <sip:{remote}@{DOMAIN}>;tag={remote_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            target = self.remote_target,
            routes = self.routes.join(", "),
            user = ua.user,
            local = self.local_tag,
            remote = self.remote_user,
            remote_tag = self.remote_tag,
            call_id = self.call_id,
        );
        ua.send(&text, route_addr(&self.routes[0]));
    }

    /// `ua` sends a BYE, `peer` (whose side is `peer_side`) answers 200: the BYE as `peer`
    /// received it.
    fn hang_up(&self, ua: &mut Ua, cseq: u32, peer: &mut Ua, peer_side: &DialogSide) -> Msg {
        self.send(ua, "BYE", cseq);
        let call_id = self.call_id.as_str();
        let bye = peer.expect("BYE", |m| {
            m.method().as_deref() == Some("BYE") && m.call_id() == call_id
        });
        peer.respond(&bye, 200, &peer_side.local_tag);
        let ok = ua.expect("200 OK to BYE", |m| {
            m.call_id() == call_id && m.cseq_method() == "BYE" && m.status().is_some()
        });
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        bye
    }
}

/// What a completed call showed.
struct CallTrace {
    /// The nodes (Via sent-by) the INVITE went through on its way to the callee, nearest first.
    invite_path: Vec<String>,
    /// The same for the ACK and the BYE.
    ack_path: Vec<String>,
    bye_path: Vec<String>,
}

/// `caller` calls `callee` (sip:user@DOMAIN) through the caller's node: 180 and 200 from the
/// callee, the ACK, then a BYE from `hangs_up`, answered 200. Every step within [`STEP`].
fn call(caller: &mut Ua, callee: &mut Ua, call_id: &str, hangs_up: HangsUp) -> CallTrace {
    let via = caller.via();
    let invite = format!(
        "INVITE sip:{callee}@{DOMAIN} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
From: <sip:{caller}@{DOMAIN}>;tag=c-{call_id}\r\nTo: <sip:{callee}@{DOMAIN}>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n",
        callee = callee.user,
        caller = caller.user,
        contact = caller.contact()
    );
    let node = caller.node;
    caller.send(&invite, node);

    let received = callee.expect("INVITE", |m| {
        m.method().as_deref() == Some("INVITE") && m.call_id() == call_id
    });
    let to_tag = format!("t-{call_id}");
    callee.respond(&received, 180, &to_tag);
    callee.respond(&received, 200, &to_tag);

    let ok = caller.expect("200 OK to INVITE", |m| {
        m.call_id() == call_id
            && m.cseq_method() == "INVITE"
            && m.status().is_some_and(|s| s >= 200)
    });
    assert_eq!(ok.status(), Some(200), "the call is answered: {ok:?}");
    // §12.1.2: the caller's route set is the Record-Route reversed, its remote target the
    // callee's Contact; §12.1.1: the callee's route set is the Record-Route as it came.
    let mut caller_routes = ok.uris(HeaderName::RecordRoute);
    caller_routes.reverse();
    assert!(!caller_routes.is_empty(), "the nodes Record-Route: {ok:?}");
    let caller_side = DialogSide {
        call_id: call_id.to_owned(),
        remote_target: ok.uris(HeaderName::Contact)[0]
            .trim_matches(['<', '>'])
            .to_owned(),
        routes: caller_routes,
        local_tag: format!("c-{call_id}"),
        remote_user: callee.user,
        remote_tag: to_tag.clone(),
    };
    let callee_side = DialogSide {
        call_id: call_id.to_owned(),
        remote_target: caller.contact(),
        routes: received.uris(HeaderName::RecordRoute),
        local_tag: to_tag,
        remote_user: caller.user,
        remote_tag: caller_side.local_tag.clone(),
    };

    caller_side.send(caller, "ACK", 1);
    let ack = callee.expect("ACK", |m| {
        m.method().as_deref() == Some("ACK") && m.call_id() == call_id
    });
    let bye = match hangs_up {
        HangsUp::Caller => caller_side.hang_up(caller, 2, callee, &callee_side),
        HangsUp::Callee => callee_side.hang_up(callee, 1, caller, &caller_side),
    };
    let nodes_of = |m: &Msg| {
        let mut hops = m.via_hosts();
        hops.pop(); // the sender's own
        hops
    };
    CallTrace {
        invite_path: nodes_of(&received),
        ack_path: nodes_of(&ack),
        bye_path: nodes_of(&bye),
    }
}

fn hop(addr: SocketAddr) -> String {
    addr.to_string()
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1: A on TCP through node 1, B (UDP) calls through node 2. The INVITE arrives on A's own
/// connection via node 2 then node 1; ACK and BYE (from B, then from A in a second call) go
/// through both nodes, as the Record-Route says.
#[test]
fn tcp_client_of_node_1_called_through_node_2() {
    let _serial = serial();
    let began = Instant::now();
    let cluster = Cluster::start(&[]);
    let (n1, n2) = (cluster.addr(0), cluster.addr(1));
    let mut alice = Ua::tcp("alice", n1);
    alice.register_self("reg-alice-1", 1);
    let mut bob = Ua::udp("bob", n2);

    let trace = call(&mut bob, &mut alice, "call-1a", HangsUp::Caller);
    // Received on Alice's TCP stream (the only socket she has): her own connection.
    assert_eq!(
        trace.invite_path,
        [hop(n1), hop(n2)],
        "INVITE: node 2, then node 1"
    );
    assert_eq!(
        trace.ack_path,
        [hop(n1), hop(n2)],
        "ACK along the route set"
    );
    assert_eq!(
        trace.bye_path,
        [hop(n1), hop(n2)],
        "BYE from B along the route set"
    );

    let trace = call(&mut bob, &mut alice, "call-1b", HangsUp::Callee);
    assert_eq!(trace.invite_path, [hop(n1), hop(n2)]);
    assert_eq!(
        trace.bye_path,
        [hop(n2), hop(n1)],
        "A's BYE: node 1, then node 2, then B"
    );
    drop(cluster);
    eprintln!("scenario 1: {:?}", began.elapsed());
}

/// 2: A on UDP through node 1; node 3 reads A's binding from Redis (a fetch through node 3
/// lists it) and B's call through node 3 reaches A directly. A then moves to a new socket; the
/// next call through node 3, sent as soon as the 200 OK came, reaches the new one. A client
/// behind a NAT is called at the address its REGISTER came from.
#[test]
fn udp_client_of_node_1_called_through_node_3() {
    let _serial = serial();
    let began = Instant::now();
    let cluster = Cluster::start(&[]);
    let (n1, n3) = (cluster.addr(0), cluster.addr(2));
    let mut alice = Ua::udp("alice", n1);
    alice.register_self("reg-alice-2", 1);
    let mut bob = Ua::udp("bob", n3);

    // A REGISTER without Contact through node 3 lists Alice's bindings (§10.2.3).
    let fetch = Ua::udp("alice", n3).register(n3, "fetch-alice-2", 1, "");
    assert_eq!(fetch.status(), Some(200), "{fetch:?}");
    let listed: Vec<String> = fetch.contacts().into_iter().map(|(uri, _)| uri).collect();
    assert_eq!(
        listed,
        [alice.contact()],
        "node 3 reads A's binding from Redis"
    );

    let trace = call(&mut bob, &mut alice, "call-2a", HangsUp::Caller);
    assert_eq!(trace.invite_path, [hop(n3)], "UDP: node 3 reaches A itself");
    assert_eq!(trace.bye_path, [hop(n3)]);

    // A moves to a new socket: the same instance, so its binding is replaced (RFC 5626 §4.1).
    let mut moved = Ua::udp("alice", n1);
    moved.register_self("reg-alice-2", 2);
    let trace = call(&mut bob, &mut moved, "call-2b", HangsUp::Callee);
    assert_eq!(trace.invite_path, [hop(n3)]);
    assert!(
        alice.recv(Duration::from_millis(200)).is_none(),
        "the old socket gets nothing"
    );

    // Behind a NAT: Via and Contact name a private address. Node 1 recorded where the REGISTER
    // came from (RFC 3581); node 3 reads that from Redis and sends the INVITE there.
    let mut natted = Ua::udp("nat", n1);
    natted.advertised = "10.255.255.1:5060".parse().expect("an address");
    natted.register_self("reg-nat-2", 1);
    let via = bob.via();
    let invite = format!(
        "INVITE sip:nat@{DOMAIN} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
From: <sip:bob@{DOMAIN}>;tag=c2c\r\nTo: <sip:nat@{DOMAIN}>\r\nCall-ID: call-2c\r\n\
CSeq: 1 INVITE\r\nContact: <{}>\r\nContent-Length: 0\r\n\r\n",
        bob.contact()
    );
    bob.send(&invite, n3);
    let received = natted.expect("INVITE at the address behind the NAT", |m| {
        m.method().as_deref() == Some("INVITE") && m.call_id() == "call-2c"
    });
    assert_eq!(received.via_hosts()[..1], [hop(n3)]);
    natted.respond(&received, 486, "t-2c");
    let busy = bob.expect("486", |m| {
        m.call_id() == "call-2c" && m.status().is_some_and(|s| s >= 200)
    });
    assert_eq!(busy.status(), Some(486), "{busy:?}");
    bob.ack_failure(&invite, &busy, n3);
    drop(cluster);
    eprintln!("scenario 2: {:?}", began.elapsed());
}

/// 3: the same contact of one AOR registered through node 1 (CSeq 10, 3600 s) and node 2 (CSeq
/// 9, 1200 s) at the same moment, with the same Call-ID, five times: whatever the order, §10.3
/// step 7 keeps the higher CSeq's binding, and every node lists it.
#[test]
fn concurrent_registers_through_two_nodes_follow_section_10_3() {
    let _serial = serial();
    let began = Instant::now();
    let cluster = Cluster::start(&[]);
    for round in 0..5 {
        let user = ["carol", "dan", "erin", "frank", "grace"][round];
        let call_id = format!("conc-{round}");
        let contact = format!("sip:{user}@127.0.0.1:{}", 7000 + round);
        let (n1, n2) = (cluster.addr(0), cluster.addr(1));
        let high = {
            let (contact, call_id) = (contact.clone(), call_id.clone());
            thread::spawn(move || {
                let mut ua = Ua::udp(user, n1);
                ua.register(
                    n1,
                    &call_id,
                    10,
                    &format!("Contact: <{contact}>\r\nExpires: 3600\r\n"),
                )
            })
        };
        let mut ua = Ua::udp(user, n2);
        let low = ua.register(
            n2,
            &call_id,
            9,
            &format!("Contact: <{contact}>\r\nExpires: 1200\r\n"),
        );
        let high = high.join().expect("the CSeq 10 REGISTER");
        assert_eq!(high.status(), Some(200), "CSeq 10 always applies: {high:?}");
        assert!(low.status().is_some(), "{low:?}");
        for node in 0..3 {
            let mut fetcher = Ua::udp(user, cluster.addr(node));
            let fetch = fetcher.register(cluster.addr(node), &format!("f-{round}-{node}"), 1, "");
            assert_eq!(fetch.status(), Some(200), "{fetch:?}");
            let contacts = fetch.contacts();
            assert_eq!(contacts.len(), 1, "node {}: {contacts:?}", node + 1);
            let (uri, expires) = &contacts[0];
            assert_eq!(uri, &contact);
            let expires = expires.unwrap_or(0);
            assert!(
                (3500..=3600).contains(&expires),
                "round {round}, node {}: the CSeq 10 binding (3600 s) stays, got {expires} s \
                 (CSeq 9 answered {:?})",
                node + 1,
                low.status()
            );
        }
    }
    drop(cluster);
    eprintln!("scenario 3: {:?}", began.elapsed());
}

/// 4: node 1, which holds A's TCP connection, is killed. B's call through node 2 fails within
/// a transaction timeout (at once when node 2 finds it cannot connect to node 1; Timer B, 64·T1,
/// when the INVITE went into a connection node 1's death had not yet closed); A re-registers
/// through node 2 (same instance: its binding is replaced) and B's next call reaches it. T1 is
/// 100 ms here, so that Timer B is 6.4 s.
#[test]
fn node_1_killed_and_its_client_re_registers_through_node_2() {
    let _serial = serial();
    let began = Instant::now();
    let t1 = Duration::from_millis(100);
    let mut cluster = Cluster::start(&["global/sip-t1=100ms"]);
    let (n1, n2) = (cluster.addr(0), cluster.addr(1));
    let mut alice = Ua::tcp("alice", n1);
    alice.register_self("reg-alice-4", 1);
    let mut bob = Ua::udp("bob", n2);
    let trace = call(&mut bob, &mut alice, "call-4a", HangsUp::Caller);
    assert_eq!(trace.invite_path, [hop(n1), hop(n2)]);

    cluster.kill(0);
    // B's next call comes a moment later, as a person's would.
    thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let via = bob.via();
    let invite = format!(
        "INVITE sip:alice@{DOMAIN} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
From: <sip:bob@{DOMAIN}>;tag=c4b\r\nTo: <sip:alice@{DOMAIN}>\r\nCall-ID: call-4b\r\n\
CSeq: 1 INVITE\r\nContact: <{}>\r\nContent-Length: 0\r\n\r\n",
        bob.contact()
    );
    bob.send(&invite, n2);
    let timer_b = 64 * t1;
    let failed = bob.expect_within(
        timer_b + Duration::from_secs(2),
        "final response while node 1 is down",
        |m| m.call_id() == "call-4b" && m.status().is_some_and(|s| s >= 200),
    );
    let waited = asked.elapsed();
    assert!(
        failed.status().is_some_and(|s| s >= 400),
        "{failed:?}\n{}",
        cluster.logs()
    );
    bob.ack_failure(&invite, &failed, n2);

    let mut alice = Ua::tcp("alice", n2);
    alice.register_self("reg-alice-4", 2);
    let trace = call(&mut bob, &mut alice, "call-4c", HangsUp::Callee);
    assert_eq!(
        trace.invite_path,
        [hop(n2)],
        "node 2 holds A's new connection"
    );
    drop(cluster);
    eprintln!(
        "scenario 4: a call while node 1 was down answered {} after {waited:?}; {:?} in all",
        failed.status().unwrap_or(0),
        began.elapsed()
    );
}

/// 5: B calls A (TCP, node 1) through node 2 over and over; after three calls the Redis master
/// is SIGKILLed. Every call completes: node 2 reads A's binding from its cache or a replica
/// while the sentinels elect a new master, and from the new master after.
#[test]
fn redis_master_killed_during_cross_node_calls() {
    let _serial = serial();
    let began = Instant::now();
    let mut cluster = Cluster::start(&[]);
    let (n1, n2) = (cluster.addr(0), cluster.addr(1));
    let mut alice = Ua::tcp("alice", n1);
    alice.register_self("reg-alice-5", 1);
    let mut bob = Ua::udp("bob", n2);
    let old = cluster.lab.redis_addr(0);
    let mut killed_at = None;
    let mut failover = None;
    let mut calls = 0;
    while killed_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(8)) {
        if calls == 3 {
            cluster.lab.kill(0);
            killed_at = Some(Instant::now());
        }
        let hangs_up = if calls % 2 == 0 {
            HangsUp::Caller
        } else {
            HangsUp::Callee
        };
        let trace = call(&mut bob, &mut alice, &format!("call-5-{calls}"), hangs_up);
        assert_eq!(trace.invite_path, [hop(n1), hop(n2)]);
        calls += 1;
        if failover.is_none() && killed_at.is_some() {
            let masters = cluster.lab.current_master_per_sentinels();
            if masters.iter().flatten().any(|m| *m != old) {
                failover = killed_at.map(|at| at.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    drop(cluster);
    eprintln!(
        "scenario 5: {calls} calls completed, the master killed after 3 (sentinels named another \
         after {failover:?}); {:?} in all",
        began.elapsed()
    );
}
