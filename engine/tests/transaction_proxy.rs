//! A forwarded INVITE through both sides of a transaction-stateful proxy, as the proxy core
//! drives them: the server transaction for the UAC, a client transaction for the branch, and a
//! lossy UDP link on both sides, all on a fake clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipshard_engine::transaction::{
    Action, ClientId, Peer, RequestMatch, ResponseMatch, ServerId, State, TimerConfig,
    TransactionId, TransactionTable,
};
use sipshard_net::{ForwardEdits, Message, Method, Transport, ViaStamp, response_to};

const UAC: Peer = Peer {
    transport: Transport::Udp,
    addr: SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        5060,
    ),
    conn: None,
};
const UAS: Peer = Peer {
    transport: Transport::Udp,
    addr: SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 4)),
        5060,
    ),
    conn: None,
};

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
Content-Length: 0\r\n\r\n";

/// The proxy core's side of the test: what it keeps per call, and the network it sends through.
struct Proxy {
    table: TransactionTable,
    server: Option<ServerId>,
    client: Option<ClientId>,
    /// Messages the network delivered, per peer, with their delivery time.
    delivered: Vec<(Duration, Peer, Vec<u8>)>,
    /// How many of the next sends to each peer the network loses.
    lose_to_uac: usize,
    lose_to_uas: usize,
    terminated: Vec<(Duration, TransactionId)>,
    t0: Instant,
}

impl Proxy {
    /// Steps 1 and 2: a new INVITE gets a server transaction; the proxy forwards it on a branch.
    fn on_request(&mut self, bytes: &[u8], from: Peer, now: Instant) -> RequestMatch {
        let request = Message::parse_datagram(bytes).unwrap();
        let verdict = self.table.handle_request(&request, from, now).unwrap();
        if let RequestMatch::New(server) = verdict {
            self.server = Some(server);
            let mut forwarded = Vec::new();
            ForwardEdits::new(&request)
                .stamp_top_via(&ViaStamp::for_request(&request, from.addr))
                .push_via("SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKproxy1")
                .decrement_max_forwards()
                .write(&mut forwarded);
            self.client = Some(self.table.start_client(forwarded.into(), UAS, now).unwrap());
        }
        self.pump(now);
        verdict
    }

    /// Step 3: responses from the branch go upstream through the server transaction (with a
    /// single branch, every response is the one to forward, §16.7).
    fn on_response(&mut self, bytes: &[u8], now: Instant) -> ResponseMatch {
        let response = Message::parse_datagram(bytes).unwrap();
        let verdict = self.table.handle_response(&response, now);
        if let (ResponseMatch::Deliver(_), Some(server)) = (verdict, self.server) {
            let mut upstream = Vec::new();
            ForwardEdits::new(&response)
                .remove_top_via()
                .write(&mut upstream);
            let status = response.status().unwrap();
            self.table
                .respond(server, status, upstream.into(), now)
                .unwrap();
        }
        self.pump(now);
        verdict
    }

    fn on_timers(&mut self, now: Instant) {
        self.table.handle_timeouts(now);
        self.pump(now);
    }

    /// The shard's loop: carry out every queued action.
    fn pump(&mut self, now: Instant) {
        while let Some(action) = self.table.poll_action() {
            match action {
                Action::Send { to, bytes, .. } => {
                    let lose = if to == UAC {
                        &mut self.lose_to_uac
                    } else {
                        &mut self.lose_to_uas
                    };
                    if *lose > 0 {
                        *lose -= 1;
                    } else {
                        self.delivered.push((now - self.t0, to, bytes.to_vec()));
                    }
                }
                Action::Terminated(id) => self.terminated.push((now - self.t0, id)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The messages delivered to `peer`, as delivery time and status code or method.
    fn summary(&self, peer: Peer) -> Vec<(Duration, String)> {
        self.delivered
            .iter()
            .filter(|(_, to, _)| *to == peer)
            .map(|(at, _, bytes)| {
                let m = Message::parse_datagram(bytes).unwrap();
                let what = match (m.status(), m.method()) {
                    (Some(status), _) => status.to_string(),
                    (None, Some(method)) => method.to_string(),
                    (None, None) => unreachable!(),
                };
                (*at, what)
            })
            .collect()
    }

    fn last_to(&self, peer: Peer) -> Vec<u8> {
        let (_, _, bytes) = self
            .delivered
            .iter()
            .rev()
            .find(|(_, to, _)| *to == peer)
            .unwrap();
        bytes.clone()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_forwarded_invite_answered_486_over_lossy_udp() {
    let t0 = Instant::now();
    let at = |offset: Duration| t0 + offset;
    let mut proxy = Proxy {
        table: TransactionTable::new(TimerConfig::default(), 8, 8),
        server: None,
        client: None,
        delivered: Vec::new(),
        lose_to_uac: 0,
        lose_to_uas: 1,
        terminated: Vec::new(),
        t0,
    };

    // The INVITE arrives: 100 (Trying) upstream at once; the forwarded INVITE is lost.
    assert!(matches!(
        proxy.on_request(INVITE, UAC, t0),
        RequestMatch::New(_)
    ));
    let (server, client) = (proxy.server.unwrap(), proxy.client.unwrap());
    // The UAC retransmits before hearing the 100; the server transaction answers it alone.
    assert_eq!(
        proxy.on_request(INVITE, UAC, at(ms(100))),
        RequestMatch::Absorbed
    );
    // Timer A retransmits the forwarded INVITE, which gets through.
    proxy.on_timers(at(ms(500)));
    let forwarded = proxy.last_to(UAS);
    let forwarded_msg = Message::parse_datagram(&forwarded).unwrap();
    assert_eq!(forwarded_msg.method(), Some(Method::Invite));
    assert_eq!(forwarded_msg.vias().count(), 2);

    // The UAS rings, then is busy; the 486 upstream is lost once.
    let mut ringing = Vec::new();
    response_to(&mut ringing, &forwarded_msg, 180, "Ringing", Some("uas-1")).finish(None, b"");
    assert_eq!(
        proxy.on_response(&ringing, at(ms(600))),
        ResponseMatch::Deliver(client)
    );
    proxy.lose_to_uac = 1;
    let mut busy = Vec::new();
    response_to(&mut busy, &forwarded_msg, 486, "Busy Here", Some("uas-1")).finish(None, b"");
    assert_eq!(
        proxy.on_response(&busy, at(ms(1000))),
        ResponseMatch::Deliver(client)
    );
    assert_eq!(
        proxy.table.state(TransactionId::Client(client)),
        Some(State::Completed)
    );
    assert_eq!(
        proxy.table.state(TransactionId::Server(server)),
        Some(State::Completed)
    );
    // The UAS retransmits its 486 (as if the ACK were lost): absorbed, and acknowledged again.
    assert_eq!(
        proxy.on_response(&busy, at(ms(1400))),
        ResponseMatch::Absorbed
    );

    // Timer G brings the 486 to the UAC, which acknowledges it.
    proxy.on_timers(at(ms(1500)));
    let upstream_486 = proxy.last_to(UAC);
    let upstream_486 = Message::parse_datagram(&upstream_486).unwrap();
    assert_eq!(upstream_486.status(), Some(486));
    assert_eq!(upstream_486.vias().count(), 1, "the proxy's Via removed");
    let mut uac_ack = Vec::new();
    let ack_head = String::from_utf8_lossy(INVITE)
        .replace("INVITE sip:", "ACK sip:")
        .replace("314159 INVITE", "314159 ACK")
        .replace(
            "<sip:bob@biloxi.example.com>\r\n",
            "<sip:bob@biloxi.example.com>;tag=uas-1\r\n",
        );
    uac_ack.extend_from_slice(ack_head.as_bytes());
    assert_eq!(
        proxy.on_request(&uac_ack, UAC, at(ms(1600))),
        RequestMatch::Absorbed
    );
    assert_eq!(
        proxy.table.state(TransactionId::Server(server)),
        Some(State::Confirmed)
    );

    // Run the clock out.
    while let Some(deadline) = proxy.table.next_deadline() {
        proxy.on_timers(deadline);
    }

    let s = |n: u64| ms(n);
    let strings = |v: &[(u64, &str)]| -> Vec<(Duration, String)> {
        v.iter().map(|(t, w)| (s(*t), w.to_string())).collect()
    };
    assert_eq!(
        proxy.summary(UAC),
        strings(&[(0, "100"), (100, "100"), (600, "180"), (1500, "486")])
    );
    assert_eq!(
        proxy.summary(UAS),
        strings(&[(500, "INVITE"), (1000, "ACK"), (1400, "ACK")])
    );
    // The hop-by-hop ACK downstream carries the UAS's tag and the proxy's branch.
    let ack = proxy
        .delivered
        .iter()
        .find(|(_, to, b)| *to == UAS && b.starts_with(b"ACK"))
        .map(|(_, _, b)| b.clone())
        .unwrap();
    let ack = Message::parse_datagram(&ack).unwrap();
    assert_eq!(ack.to().unwrap().tag(), Some("uas-1"));
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKproxy1"));
    assert_eq!(ack.vias().count(), 1);

    assert_eq!(
        proxy.terminated,
        [
            (
                ms(1600) + Duration::from_secs(5),
                TransactionId::Server(server)
            ),
            (
                ms(1000) + Duration::from_secs(32),
                TransactionId::Client(client)
            ),
        ]
    );
    assert_eq!(proxy.table.server_count() + proxy.table.client_count(), 0);
}
