//! Client transactions (RFC 3261 §17.1, RFC 6026 §8.4) driven through `TransactionTable` with a
//! fake clock: an `Instant` base plus offsets, advanced from deadline to deadline.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sipshard_engine::transaction::{
    Action, ClientId, ClientKey, Peer, ResponseMatch, State, TimerConfig, TimerKind,
    TransactionError, TransactionId, TransactionTable,
};
use sipshard_net::{HeaderName, Message, Method, Transport, response_to};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const T4: Duration = Duration::from_secs(5);

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: SocketAddr::from(([192, 0, 2, 4], 5060)),
        conn: None,
    }
}

fn table() -> TransactionTable {
    TransactionTable::new(TimerConfig::default(), 16, 16)
}

/// A request as the proxy forwards it: its own Via on top (here sharing a line with the UAC's),
/// Route headers on two lines, a Record-Route and a body.
fn forwarded(method: &str, branch: &str) -> Rc<[u8]> {
    format!(
        "{method} sip:bob@192.0.2.4:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP proxy.example.com:5060;branch={branch}, SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n\
Route: <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>, <sip:p4.example.com;lr>\r\n\
Record-Route: <sip:proxy.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 {method}\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n"
    )
    .into_bytes()
    .into()
}

fn invite() -> Rc<[u8]> {
    forwarded("INVITE", "z9hG4bKprx1")
}

/// The downstream server's response to `request`, with To tag `tag`.
fn response(request: &[u8], status: u16, tag: &str) -> Vec<u8> {
    let message = Message::parse_datagram(request).unwrap();
    let mut out = Vec::new();
    response_to(&mut out, &message, status, "Reason", Some(tag)).finish(None, b"");
    out
}

fn receive(table: &mut TransactionTable, bytes: &[u8], now: Instant) -> ResponseMatch {
    table.handle_response(&Message::parse_datagram(bytes).unwrap(), now)
}

fn start(table: &mut TransactionTable, request: Rc<[u8]>, to: Peer, now: Instant) -> ClientId {
    table.start_client(request, to, now).unwrap()
}

fn drain(table: &mut TransactionTable) -> Vec<Action> {
    std::iter::from_fn(|| table.poll_action()).collect()
}

fn sent(actions: &[Action]) -> Vec<Rc<[u8]>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

fn run_timers(
    table: &mut TransactionTable,
    t0: Instant,
    until: Duration,
) -> Vec<(Duration, Vec<Action>)> {
    let mut fired = Vec::new();
    while let Some(deadline) = table.next_deadline().filter(|d| *d <= t0 + until) {
        table.handle_timeouts(deadline);
        fired.push((deadline - t0, drain(table)));
    }
    fired
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn invite_over_udp_retransmits_at_t1_doubling_then_timer_b_times_out() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    assert_eq!(
        drain(&mut table),
        [Action::Send {
            id: client,
            to: peer(Transport::Udp),
            bytes: invite()
        }]
    );
    assert_eq!(table.state(client), Some(State::Calling));
    let mut timers = table.running_timers(client);
    timers.sort();
    assert_eq!(
        timers,
        [(TimerKind::A, t0 + T1), (TimerKind::B, t0 + T1 * 64)]
    );

    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    let (timeout_at, timeout) = fired.last().unwrap();
    let retransmissions = &fired[..fired.len() - 1];
    // Timer A fires at T1, then intervals of 2*T1, 4*T1, … (no T2 cap for INVITE).
    let times: Vec<Duration> = retransmissions.iter().map(|(at, _)| *at).collect();
    assert_eq!(
        times,
        [
            ms(500),
            ms(1500),
            ms(3500),
            ms(7500),
            ms(15_500),
            ms(31_500)
        ]
    );
    for (_, actions) in retransmissions {
        assert_eq!(sent(actions), [invite()]);
    }
    assert_eq!(*timeout_at, T1 * 64, "Timer B");
    assert_eq!(
        timeout,
        &[Action::Timeout(client), Action::Terminated(client)]
    );
    assert_eq!(table.client_count(), 0);
    assert_eq!(table.next_deadline(), None);
}

#[test]
fn a_provisional_stops_retransmissions_and_a_404_is_acknowledged_per_17_1_1_3() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);

    let ringing = response(&invite(), 180, "uas-tag");
    assert_eq!(
        receive(&mut table, &ringing, t0 + ms(200)),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.state(client), Some(State::Proceeding));
    assert!(table.running_timers(client).is_empty(), "A and B stop");
    assert!(drain(&mut table).is_empty());
    assert_eq!(
        receive(&mut table, &ringing, t0 + ms(300)),
        ResponseMatch::Deliver(id),
        "every provisional goes up"
    );

    let not_found = response(&invite(), 404, "uas-tag");
    let at_final = t0 + Duration::from_secs(10);
    assert_eq!(
        receive(&mut table, &not_found, at_final),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.state(client), Some(State::Completed));
    assert_eq!(
        table.running_timers(client),
        [(TimerKind::D, at_final + Duration::from_secs(32))]
    );
    let acks = sent(&drain(&mut table));
    let [ack_bytes] = &acks[..] else {
        panic!("one ACK, got {acks:?}");
    };

    let ack = Message::parse_datagram(ack_bytes).unwrap();
    ack.validate().unwrap();
    let invite_bytes = invite();
    let original = Message::parse_datagram(&invite_bytes).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(
        ack.request_uri().unwrap().as_str(),
        "sip:bob@192.0.2.4:5060"
    );
    assert_eq!(ack.call_id().unwrap(), original.call_id().unwrap());
    assert_eq!(
        ack.value(HeaderName::From),
        original.value(HeaderName::From)
    );
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Ack));
    let to = ack.to().unwrap();
    assert_eq!(to.tag(), Some("uas-tag"), "To comes from the response");
    assert_eq!(to.uri.as_str(), "sip:bob@biloxi.example.com");
    let vias: Vec<_> = ack.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 1, "only the top Via");
    assert_eq!(vias[0], original.top_via().unwrap());
    let routes: Vec<&str> = ack
        .name_addrs(HeaderName::Route)
        .map(|r| r.unwrap().uri.as_str())
        .collect();
    assert_eq!(
        routes,
        [
            "sip:p2.example.com;lr",
            "sip:p3.example.com;lr",
            "sip:p4.example.com;lr"
        ]
    );
    assert_eq!(ack.max_forwards().unwrap(), Some(70));
    assert_eq!(ack.value(HeaderName::RecordRoute), None);
    assert_eq!(ack.value(HeaderName::Contact), None);
    assert_eq!(ack.body(), b"");

    // A retransmitted 404 is acknowledged again, not passed up.
    let again = at_final + T1;
    assert_eq!(
        receive(&mut table, &not_found, again),
        ResponseMatch::Absorbed
    );
    assert_eq!(sent(&drain(&mut table)), vec![ack_bytes.clone()]);

    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(
        fired,
        [(Duration::from_secs(42), vec![Action::Terminated(client)])]
    );
    assert_eq!(
        receive(&mut table, &not_found, t0 + Duration::from_secs(43)),
        ResponseMatch::Stray
    );
}

#[test]
fn a_2xx_moves_to_accepted_where_every_2xx_goes_up_until_timer_m() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);
    let ok = response(&invite(), 200, "fork-1");
    assert_eq!(
        receive(&mut table, &ok, t0 + ms(100)),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.state(client), Some(State::Accepted));
    assert_eq!(
        table.running_timers(client),
        [(TimerKind::M, t0 + ms(100) + T1 * 64)]
    );
    assert!(drain(&mut table).is_empty(), "no ACK for a 2xx here");

    let other_fork = response(&invite(), 200, "fork-2");
    for bytes in [&ok, &other_fork] {
        assert_eq!(
            receive(&mut table, bytes, t0 + T1),
            ResponseMatch::Deliver(id)
        );
    }
    let late_busy = response(&invite(), 486, "fork-3");
    assert_eq!(
        receive(&mut table, &late_busy, t0 + T1),
        ResponseMatch::Absorbed
    );
    assert!(drain(&mut table).is_empty());

    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(
        fired,
        [(ms(100) + T1 * 64, vec![Action::Terminated(client)])]
    );
}

#[test]
fn over_tcp_there_is_no_timer_a_and_timer_d_is_zero() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Tcp), t0);
    let client = TransactionId::Client(id);
    assert_eq!(sent(&drain(&mut table)), [invite()]);
    assert_eq!(table.running_timers(client), [(TimerKind::B, t0 + T1 * 64)]);
    let busy = response(&invite(), 486, "uas");
    assert_eq!(
        receive(&mut table, &busy, t0 + ms(50)),
        ResponseMatch::Deliver(id)
    );
    let actions = drain(&mut table);
    assert_eq!(sent(&actions).len(), 1, "the ACK");
    assert_eq!(actions.last(), Some(&Action::Terminated(client)));
    assert_eq!(table.next_deadline(), None);
}

#[test]
fn a_transport_error_is_reported_to_the_tu() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);
    table.handle_transport_error(client, t0 + ms(1));
    assert_eq!(
        drain(&mut table),
        [Action::TransportError(client), Action::Terminated(client)]
    );
    assert_eq!(table.next_deadline(), None);

    let options = forwarded("OPTIONS", "z9hG4bKopt");
    let id = start(&mut table, options, peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);
    table.handle_transport_error(client, t0 + ms(1));
    assert_eq!(
        drain(&mut table),
        [Action::TransportError(client), Action::Terminated(client)]
    );
}

#[test]
fn cancel_is_built_per_9_1_only_in_proceeding_and_matched_on_its_own() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    drain(&mut table);
    assert_eq!(
        table.cancel_request(id),
        None,
        "not before a provisional (§9.1)"
    );
    receive(&mut table, &response(&invite(), 180, "uas"), t0 + ms(100));

    let cancel_bytes: Rc<[u8]> = table.cancel_request(id).unwrap().into();
    let cancel = Message::parse_datagram(&cancel_bytes).unwrap();
    cancel.validate().unwrap();
    let invite_bytes = invite();
    let original = Message::parse_datagram(&invite_bytes).unwrap();
    assert_eq!(cancel.method(), Some(Method::Cancel));
    assert_eq!(cancel.request_uri(), original.request_uri());
    assert_eq!(cancel.value(HeaderName::To), original.value(HeaderName::To));
    assert_eq!(cancel.cseq().unwrap().seq, 314159);
    assert_eq!(cancel.cseq().unwrap().method, Method::Cancel);
    assert_eq!(cancel.vias().count(), 1);
    assert_eq!(cancel.top_via().unwrap(), original.top_via().unwrap());
    assert_eq!(cancel.name_addrs(HeaderName::Route).count(), 3);

    // Same branch, other method: its own client transaction, its own responses.
    let ok_cancel = response(&cancel_bytes, 200, "uas");
    let cancel_id = start(
        &mut table,
        cancel_bytes.clone(),
        peer(Transport::Udp),
        t0 + ms(200),
    );
    assert_ne!(cancel_id, id);
    let key = |bytes: &[u8]| ClientKey::for_response(&Message::parse_datagram(bytes).unwrap());
    let terminated = response(&invite(), 487, "uas");
    assert_ne!(key(&ok_cancel), key(&terminated));
    assert_eq!(
        receive(&mut table, &ok_cancel, t0 + ms(300)),
        ResponseMatch::Deliver(cancel_id)
    );
    assert_eq!(
        receive(&mut table, &terminated, t0 + ms(300)),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.cancel_request(id), None, "not after a final response");
}

#[test]
fn non_invite_timer_e_doubles_up_to_t2_then_timer_f_times_out() {
    let t0 = Instant::now();
    let mut table = table();
    let options = forwarded("OPTIONS", "z9hG4bKopt");
    let id = start(&mut table, options.clone(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    assert_eq!(sent(&drain(&mut table)), vec![options.clone()]);
    assert_eq!(table.state(client), Some(State::Trying));
    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    let (timeout_at, timeout) = fired.last().unwrap();
    assert_eq!(*timeout_at, T1 * 64, "Timer F");
    assert_eq!(
        timeout,
        &[Action::Timeout(client), Action::Terminated(client)]
    );
    let times: Vec<Duration> = fired[..fired.len() - 1].iter().map(|(at, _)| *at).collect();
    let intervals: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(times[0], T1);
    assert_eq!(&intervals[..3], [T1 * 2, T1 * 4, T2]);
    assert!(intervals[3..].iter().all(|i| *i == T2), "{intervals:?}");
    assert_eq!(times.last(), Some(&ms(31_500)));
    for (_, actions) in &fired[..fired.len() - 1] {
        assert_eq!(sent(actions), vec![options.clone()]);
    }
}

#[test]
fn non_invite_proceeding_retransmits_at_t2_and_completed_lingers_timer_k() {
    let t0 = Instant::now();
    let mut table = table();
    let register = forwarded("REGISTER", "z9hG4bKreg");
    let id = start(&mut table, register.clone(), peer(Transport::Udp), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);
    // E fires at T1 (next due at 3*T1); a 100 arrives before that.
    run_timers(&mut table, t0, T1);
    let trying = response(&register, 100, "uas");
    assert_eq!(
        receive(&mut table, &trying, t0 + ms(600)),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.state(client), Some(State::Proceeding));
    let fired = run_timers(&mut table, t0, Duration::from_secs(10));
    let times: Vec<Duration> = fired.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, [ms(1500), ms(1500) + T2, ms(1500) + T2 * 2]);
    for (_, actions) in &fired {
        assert_eq!(sent(actions), vec![register.clone()]);
    }

    let ok = response(&register, 200, "uas");
    let at_final = t0 + Duration::from_secs(10);
    assert_eq!(
        receive(&mut table, &ok, at_final),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(table.state(client), Some(State::Completed));
    assert_eq!(
        table.running_timers(client),
        [(TimerKind::K, at_final + T4)]
    );
    assert_eq!(
        receive(&mut table, &ok, at_final + T1),
        ResponseMatch::Absorbed
    );
    assert!(drain(&mut table).is_empty());
    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(
        fired,
        [(
            Duration::from_secs(10) + T4,
            vec![Action::Terminated(client)]
        )]
    );
}

#[test]
fn non_invite_over_tcp_has_no_timer_e_and_timer_k_is_zero() {
    let t0 = Instant::now();
    let mut table = table();
    let bye = forwarded("BYE", "z9hG4bKbye");
    let id = start(&mut table, bye.clone(), peer(Transport::Tls), t0);
    let client = TransactionId::Client(id);
    drain(&mut table);
    assert_eq!(table.running_timers(client), [(TimerKind::F, t0 + T1 * 64)]);
    assert_eq!(
        receive(&mut table, &response(&bye, 200, "uas"), t0 + ms(20)),
        ResponseMatch::Deliver(id)
    );
    assert_eq!(drain(&mut table), [Action::Terminated(client)]);
}

#[test]
fn responses_match_on_branch_and_cseq_method_only() {
    let t0 = Instant::now();
    let mut table = table();
    let id = start(&mut table, invite(), peer(Transport::Udp), t0);
    drain(&mut table);
    let other_branch = response(&forwarded("INVITE", "z9hG4bKelse"), 180, "uas");
    assert_eq!(receive(&mut table, &other_branch, t0), ResponseMatch::Stray);
    let other_method = response(&forwarded("BYE", "z9hG4bKprx1"), 200, "uas");
    assert_eq!(receive(&mut table, &other_method, t0), ResponseMatch::Stray);
    let no_branch = String::from_utf8(response(&invite(), 180, "uas"))
        .unwrap()
        .replace(";branch=z9hG4bKprx1", "");
    assert_eq!(
        receive(&mut table, no_branch.as_bytes(), t0),
        ResponseMatch::Stray
    );
    assert_eq!(
        receive(&mut table, &response(&invite(), 180, "uas"), t0),
        ResponseMatch::Deliver(id)
    );
}

#[test]
fn start_client_refuses_acks_reused_branches_and_a_full_table() {
    let t0 = Instant::now();
    let mut table = TransactionTable::new(TimerConfig::default(), 1, 2);
    assert_eq!(
        table.start_client(forwarded("ACK", "z9hG4bKack"), peer(Transport::Udp), t0),
        Err(TransactionError::AckWithoutTransaction)
    );
    start(&mut table, invite(), peer(Transport::Udp), t0);
    assert_eq!(
        table.start_client(invite(), peer(Transport::Udp), t0),
        Err(TransactionError::KeyInUse)
    );
    start(
        &mut table,
        forwarded("INVITE", "z9hG4bKprx2"),
        peer(Transport::Udp),
        t0,
    );
    assert_eq!(
        table.start_client(forwarded("INVITE", "z9hG4bKprx3"), peer(Transport::Udp), t0),
        Err(TransactionError::TableFull)
    );
    assert_eq!(table.client_count(), 2);
    let no_via = String::from_utf8(forwarded("OPTIONS", "z9hG4bKx").to_vec())
        .unwrap()
        .replace(";branch=z9hG4bKx", "");
    assert!(matches!(
        table.start_client(no_via.into_bytes().into(), peer(Transport::Udp), t0),
        Err(TransactionError::Malformed(_))
    ));
    // Refusals queue nothing: only the two accepted INVITEs are sent.
    assert_eq!(sent(&drain(&mut table)).len(), 2);
    assert_eq!(table.client_count(), 2);
}
