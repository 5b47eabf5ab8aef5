//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1) driven through `TransactionTable` with a
//! fake clock: an `Instant` base plus offsets, advanced from deadline to deadline.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sipshard_engine::transaction::{
    Action, Peer, RequestMatch, ServerId, ServerKey, State, TimerConfig, TimerKind,
    TransactionError, TransactionId, TransactionTable,
};
use sipshard_net::{Message, Transport, response_to};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const T4: Duration = Duration::from_secs(5);

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: SocketAddr::from(([192, 0, 2, 1], 5060)),
        conn: None,
    }
}

fn table() -> TransactionTable {
    TransactionTable::new(TimerConfig::default(), 16, 16)
}

/// A request from the UAC at pc33 (Via sent-by port 5060), in the style of RFC 3261 §24.2.
/// `branch: None` makes it an RFC 2543 request (no branch at all).
fn request(method: &str, branch: Option<&str>, to_tag: Option<&str>) -> Vec<u8> {
    let branch = branch.map(|b| format!(";branch={b}")).unwrap_or_default();
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060{branch}\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>{to_tag}\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite() -> Vec<u8> {
    request("INVITE", Some("z9hG4bK776asdhds"), None)
}

fn ack(to_tag: &str) -> Vec<u8> {
    request("ACK", Some("z9hG4bK776asdhds"), Some(to_tag))
}

fn receive(
    table: &mut TransactionTable,
    bytes: &[u8],
    from: Peer,
    now: Instant,
) -> Result<RequestMatch, TransactionError> {
    let message = Message::parse_datagram(bytes).unwrap();
    table.handle_request(&message, from, now)
}

fn new_server(table: &mut TransactionTable, bytes: &[u8], from: Peer, now: Instant) -> ServerId {
    match receive(table, bytes, from, now) {
        Ok(RequestMatch::New(id)) => id,
        other => panic!("expected a new transaction, got {other:?}"),
    }
}

/// The proxy core's response to `request`, tagged.
fn response(request: &[u8], status: u16, reason: &str) -> Rc<[u8]> {
    let message = Message::parse_datagram(request).unwrap();
    let mut out = Vec::new();
    response_to(&mut out, &message, status, reason, Some("a6c85cf")).finish(None, b"");
    out.into()
}

fn drain(table: &mut TransactionTable) -> Vec<Action> {
    std::iter::from_fn(|| table.poll_action()).collect()
}

/// The status codes of the responses among `actions`.
fn sent_statuses(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => Message::parse_datagram(bytes).unwrap().status(),
            _ => None,
        })
        .collect()
}

/// Advances the clock from deadline to deadline while they fall within `until` of `t0`; returns
/// each firing time (as an offset) with the actions it produced.
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
fn invite_gets_100_trying_at_once_and_retransmissions_get_the_last_response() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    let server = TransactionId::Server(id);
    assert_eq!(table.state(server), Some(State::Proceeding));
    let actions = drain(&mut table);
    let [
        Action::Send {
            id: from,
            to,
            bytes,
        },
    ] = &actions[..]
    else {
        panic!("{actions:?}");
    };
    assert_eq!((*from, *to), (server, peer(Transport::Udp)));
    let trying = Message::parse_datagram(bytes).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(
        trying.top_via().unwrap().received(),
        Some("192.0.2.1"),
        "the Via is stamped with the source address (§18.2.1)"
    );
    assert_eq!(trying.to().unwrap().tag(), None);
    assert!(table.running_timers(server).is_empty());

    let retransmission = receive(&mut table, &invite(), peer(Transport::Udp), t0 + T1);
    assert_eq!(retransmission, Ok(RequestMatch::Absorbed));
    assert_eq!(sent_statuses(&drain(&mut table)), [100]);

    table
        .respond(id, 180, response(&invite(), 180, "Ringing"), t0 + T1)
        .unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [180]);
    receive(&mut table, &invite(), peer(Transport::Udp), t0 + T1 * 2).unwrap();
    assert_eq!(
        sent_statuses(&drain(&mut table)),
        [180],
        "the last response"
    );
}

#[test]
fn non_2xx_is_retransmitted_with_timer_g_until_the_ack_then_acks_are_absorbed() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    let server = TransactionId::Server(id);
    drain(&mut table);
    table
        .respond(id, 486, response(&invite(), 486, "Busy Here"), t0)
        .unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [486]);
    assert_eq!(table.state(server), Some(State::Completed));
    let mut timers = table.running_timers(server);
    timers.sort();
    assert_eq!(
        timers,
        [(TimerKind::G, t0 + T1), (TimerKind::H, t0 + T1 * 64)]
    );

    // Timer G: first at T1, then after 2*T1, 4*T1, and T2 from then on.
    let fired = run_timers(&mut table, t0, Duration::from_secs(16));
    let times: Vec<Duration> = fired.iter().map(|(at, _)| *at).collect();
    assert_eq!(
        times,
        [
            ms(500),
            ms(1500),
            ms(3500),
            ms(7500),
            ms(11_500),
            ms(15_500)
        ]
    );
    let intervals: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(intervals, [T1 * 2, T1 * 4, T2, T2, T2]);
    for (_, actions) in &fired {
        assert_eq!(sent_statuses(actions), [486]);
    }
    // A retransmitted INVITE gets the 486 too.
    receive(&mut table, &invite(), peer(Transport::Udp), t0 + ms(15_600)).unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [486]);

    let at_ack = t0 + ms(15_700);
    let acked = receive(&mut table, &ack("a6c85cf"), peer(Transport::Udp), at_ack);
    assert_eq!(acked, Ok(RequestMatch::Absorbed));
    assert!(drain(&mut table).is_empty());
    assert_eq!(table.state(server), Some(State::Confirmed));
    assert_eq!(table.running_timers(server), [(TimerKind::I, at_ack + T4)]);

    // ACK retransmissions (and INVITE ones) are absorbed silently in Confirmed.
    for bytes in [ack("a6c85cf"), invite()] {
        let again = receive(&mut table, &bytes, peer(Transport::Udp), at_ack + T1);
        assert_eq!(again, Ok(RequestMatch::Absorbed));
        assert!(drain(&mut table).is_empty());
    }
    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].0, ms(15_700) + T4);
    assert_eq!(fired[0].1, [Action::Terminated(server)]);
    assert_eq!(table.server_count(), 0);
    assert_eq!(table.next_deadline(), None);
}

#[test]
fn timer_h_gives_up_on_the_ack() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    drain(&mut table);
    table
        .respond(id, 486, response(&invite(), 486, "Busy Here"), t0)
        .unwrap();
    drain(&mut table);
    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    let (last_at, last) = fired.last().unwrap();
    assert_eq!(*last_at, T1 * 64);
    let server = TransactionId::Server(id);
    assert_eq!(last, &[Action::Timeout(server), Action::Terminated(server)]);
    // G fired every T2 once capped, the last time just before H.
    let g: Vec<Duration> = fired[..fired.len() - 1].iter().map(|(at, _)| *at).collect();
    assert_eq!(g.first(), Some(&ms(500)));
    assert_eq!(g.last(), Some(&ms(31_500)));
    assert_eq!(g.len(), 10);
    assert_eq!(table.server_count(), 0);
}

#[test]
fn a_2xx_moves_to_accepted_where_invite_retransmissions_are_absorbed() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    let server = TransactionId::Server(id);
    drain(&mut table);
    let ok = response(&invite(), 200, "OK");
    table.respond(id, 200, ok.clone(), t0 + ms(100)).unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [200]);
    assert_eq!(table.state(server), Some(State::Accepted));
    assert_eq!(
        table.running_timers(server),
        [(TimerKind::L, t0 + ms(100) + T1 * 64)]
    );

    // RFC 6026 §7.1: the INVITE retransmission matches and is absorbed, not re-answered and not a
    // new request.
    let again = receive(&mut table, &invite(), peer(Transport::Udp), t0 + T1);
    assert_eq!(again, Ok(RequestMatch::Absorbed));
    assert!(drain(&mut table).is_empty());

    // 2xx from other branches go out; anything else is refused.
    table.respond(id, 200, ok, t0 + T1).unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [200]);
    let busy = response(&invite(), 486, "Busy Here");
    assert_eq!(
        table.respond(id, 486, busy, t0 + T1),
        Err(TransactionError::ResponseNotAllowed)
    );
    assert!(drain(&mut table).is_empty());

    // An ACK that matches in Accepted is the 2xx's, end to end: for the proxy core.
    let acked = receive(&mut table, &ack("a6c85cf"), peer(Transport::Udp), t0 + T1);
    assert_eq!(acked, Ok(RequestMatch::EndToEndAck));
    assert_eq!(table.state(server), Some(State::Accepted));

    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(
        fired,
        [(ms(100) + T1 * 64, vec![Action::Terminated(server)])]
    );
    // Later, an ACK with a fresh branch has no transaction at all.
    let late = request("ACK", Some("z9hG4bKack2xx"), Some("a6c85cf"));
    let late = receive(&mut table, &late, peer(Transport::Udp), t0 + T1 * 65);
    assert_eq!(late, Ok(RequestMatch::EndToEndAck));
}

#[test]
fn over_a_reliable_transport_there_is_no_timer_g_and_timer_i_is_zero() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Tcp), t0);
    let server = TransactionId::Server(id);
    drain(&mut table);
    table
        .respond(id, 486, response(&invite(), 486, "Busy Here"), t0)
        .unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [486]);
    assert_eq!(table.running_timers(server), [(TimerKind::H, t0 + T1 * 64)]);
    let acked = receive(
        &mut table,
        &ack("a6c85cf"),
        peer(Transport::Tcp),
        t0 + ms(10),
    );
    assert_eq!(acked, Ok(RequestMatch::Absorbed));
    assert_eq!(drain(&mut table), [Action::Terminated(server)]);
    assert_eq!(table.next_deadline(), None);
}

#[test]
fn non_invite_trying_proceeding_completed_with_timer_j() {
    let t0 = Instant::now();
    let mut table = table();
    let options = request("OPTIONS", Some("z9hG4bKopt"), None);
    let id = new_server(&mut table, &options, peer(Transport::Udp), t0);
    let server = TransactionId::Server(id);
    assert!(drain(&mut table).is_empty(), "no 100 for a non-INVITE");
    assert_eq!(table.state(server), Some(State::Trying));

    // Trying: a retransmission is absorbed, there is nothing to re-send.
    let again = receive(&mut table, &options, peer(Transport::Udp), t0 + T1);
    assert_eq!(again, Ok(RequestMatch::Absorbed));
    assert!(drain(&mut table).is_empty());

    table
        .respond(id, 100, response(&options, 100, "Trying"), t0 + T1)
        .unwrap();
    assert_eq!(table.state(server), Some(State::Proceeding));
    assert_eq!(sent_statuses(&drain(&mut table)), [100]);
    receive(&mut table, &options, peer(Transport::Udp), t0 + T1 * 2).unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [100]);

    let at_final = t0 + T1 * 3;
    table
        .respond(id, 200, response(&options, 200, "OK"), at_final)
        .unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [200]);
    assert_eq!(table.state(server), Some(State::Completed));
    assert_eq!(
        table.running_timers(server),
        [(TimerKind::J, at_final + T1 * 64)]
    );
    receive(&mut table, &options, peer(Transport::Udp), at_final + T1).unwrap();
    assert_eq!(sent_statuses(&drain(&mut table)), [200]);
    let second = response(&options, 500, "Server Internal Error");
    assert_eq!(
        table.respond(id, 500, second, at_final),
        Err(TransactionError::ResponseNotAllowed)
    );

    let fired = run_timers(&mut table, t0, Duration::from_secs(3600));
    assert_eq!(
        fired,
        [(T1 * 3 + T1 * 64, vec![Action::Terminated(server)])]
    );
    assert_eq!(
        table.respond(id, 200, response(&options, 200, "OK"), at_final),
        Err(TransactionError::NoSuchTransaction)
    );
}

#[test]
fn non_invite_final_sent_from_trying_over_tcp_terminates_at_once() {
    let t0 = Instant::now();
    let mut table = table();
    let register = request("REGISTER", Some("z9hG4bKreg"), None);
    let id = new_server(&mut table, &register, peer(Transport::Tcp), t0);
    table
        .respond(id, 200, response(&register, 200, "OK"), t0)
        .unwrap();
    let server = TransactionId::Server(id);
    let actions = drain(&mut table);
    assert_eq!(sent_statuses(&actions), [200]);
    assert_eq!(
        actions.last(),
        Some(&Action::Terminated(server)),
        "Timer J is zero"
    );
    assert_eq!(table.next_deadline(), None);
}

#[test]
fn a_transport_error_terminates_the_server_transaction() {
    let t0 = Instant::now();
    let mut table = table();
    let id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    drain(&mut table);
    table
        .respond(id, 486, response(&invite(), 486, "Busy Here"), t0)
        .unwrap();
    drain(&mut table);
    let server = TransactionId::Server(id);
    table.handle_transport_error(server, t0 + ms(1));
    assert_eq!(
        drain(&mut table),
        [Action::TransportError(server), Action::Terminated(server)]
    );
    assert_eq!(table.next_deadline(), None, "its timers went with it");
    // A late report for a gone transaction changes nothing.
    table.handle_transport_error(server, t0 + ms(2));
    assert!(drain(&mut table).is_empty());
}

#[test]
fn cancel_has_its_own_transaction_and_finds_the_invite_it_cancels() {
    let t0 = Instant::now();
    let mut table = table();
    let invite_id = new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    let cancel = request("CANCEL", Some("z9hG4bK776asdhds"), None);
    let cancel_id = new_server(&mut table, &cancel, peer(Transport::Udp), t0 + ms(10));
    assert_ne!(cancel_id, invite_id);
    assert_eq!(table.cancel_target(cancel_id), Some(invite_id));
    assert_eq!(
        table.cancel_target(invite_id),
        None,
        "only a CANCEL has a target"
    );
    let again = receive(&mut table, &cancel, peer(Transport::Udp), t0 + ms(20));
    assert_eq!(again, Ok(RequestMatch::Absorbed));

    // A CANCEL with another branch cancels nothing here (§9.2).
    let other = request("CANCEL", Some("z9hG4bKother"), None);
    let other_id = new_server(&mut table, &other, peer(Transport::Udp), t0 + ms(30));
    assert_eq!(table.cancel_target(other_id), None);

    // The keys themselves: ACK and CANCEL-target map to the INVITE's key.
    let key = |bytes: &[u8]| ServerKey::for_request(&Message::parse_datagram(bytes).unwrap());
    let invite_key = key(&invite()).unwrap();
    let cancel_key = key(&cancel).unwrap();
    assert_ne!(cancel_key, invite_key);
    assert_eq!(cancel_key.for_cancel_target(), Some(invite_key.clone()));
    assert_eq!(key(&ack("x")).unwrap(), invite_key);
    assert_eq!(invite_key.for_cancel_target(), None);
    // The same branch from another sent-by is another transaction.
    let elsewhere = String::from_utf8(invite()).unwrap().replace(
        "pc33.atlanta.example.com:5060;",
        "pc34.atlanta.example.com:5060;",
    );
    assert_ne!(key(elsewhere.as_bytes()).unwrap(), invite_key);
    // Host names compare case-insensitively.
    let upper = String::from_utf8(invite()).unwrap().replace(
        "pc33.atlanta.example.com:5060;",
        "PC33.Atlanta.example.com:5060;",
    );
    assert_eq!(key(upper.as_bytes()).unwrap(), invite_key);
}

#[test]
fn rfc_2543_requests_match_on_uri_tags_call_id_cseq_and_top_via() {
    let t0 = Instant::now();
    let mut table = table();
    let old_invite = request("INVITE", None, None);
    let id = new_server(&mut table, &old_invite, peer(Transport::Udp), t0);
    let server = TransactionId::Server(id);
    drain(&mut table);
    let again = receive(&mut table, &old_invite, peer(Transport::Udp), t0 + T1);
    assert_eq!(again, Ok(RequestMatch::Absorbed));
    assert_eq!(sent_statuses(&drain(&mut table)), [100]);

    // A branch without the magic cookie is RFC 2543 too, and the key ignores it.
    let key = |bytes: &[u8]| ServerKey::for_request(&Message::parse_datagram(bytes).unwrap());
    let old_key = key(&old_invite).unwrap();
    assert!(old_key.is_rfc2543());
    assert!(!key(&invite()).unwrap().is_rfc2543());
    let other_cseq = String::from_utf8(old_invite.clone())
        .unwrap()
        .replace("314159 INVITE", "314160 INVITE");
    assert_ne!(key(other_cseq.as_bytes()).unwrap(), old_key);

    // The CANCEL finds it.
    let old_cancel = request("CANCEL", None, None);
    let cancel_id = new_server(&mut table, &old_cancel, peer(Transport::Udp), t0 + T1);
    assert_eq!(table.cancel_target(cancel_id), Some(id));

    table
        .respond(id, 404, response(&old_invite, 404, "Not Found"), t0 + T1)
        .unwrap();
    drain(&mut table);
    // The ACK matches only with the To tag of the response sent (§17.2.3).
    let wrong = request("ACK", None, Some("not-the-tag"));
    let wrong = receive(&mut table, &wrong, peer(Transport::Udp), t0 + T1 * 2);
    assert_eq!(wrong, Ok(RequestMatch::EndToEndAck));
    assert_eq!(table.state(server), Some(State::Completed));
    let right = request("ACK", None, Some("a6c85cf"));
    let right = receive(&mut table, &right, peer(Transport::Udp), t0 + T1 * 2);
    assert_eq!(right, Ok(RequestMatch::Absorbed));
    assert_eq!(table.state(server), Some(State::Confirmed));

    // An INVITE that differs only in its To tag cannot share the key.
    let tagged = request("INVITE", None, Some("zzz"));
    assert_eq!(
        receive(&mut table, &tagged, peer(Transport::Udp), t0 + T1 * 2),
        Err(TransactionError::KeyInUse)
    );
}

#[test]
fn a_full_table_refuses_new_requests_but_still_absorbs_retransmissions() {
    let t0 = Instant::now();
    let mut table = TransactionTable::new(TimerConfig::default(), 2, 2);
    let first = request("OPTIONS", Some("z9hG4bK1"), None);
    let first_id = new_server(&mut table, &first, peer(Transport::Udp), t0);
    new_server(&mut table, &invite(), peer(Transport::Udp), t0);
    let third = request("OPTIONS", Some("z9hG4bK3"), None);
    assert_eq!(
        receive(&mut table, &third, peer(Transport::Udp), t0),
        Err(TransactionError::TableFull)
    );
    assert_eq!(table.server_count(), 2);
    assert_eq!(
        receive(&mut table, &first, peer(Transport::Udp), t0),
        Ok(RequestMatch::Absorbed)
    );
    // An end-to-end ACK needs no room.
    let ack_2xx = request("ACK", Some("z9hG4bKack"), Some("t"));
    assert_eq!(
        receive(&mut table, &ack_2xx, peer(Transport::Udp), t0),
        Ok(RequestMatch::EndToEndAck)
    );

    // Room comes back when a transaction terminates.
    table
        .respond(first_id, 200, response(&first, 200, "OK"), t0)
        .unwrap();
    run_timers(&mut table, t0, T1 * 64);
    assert_eq!(table.server_count(), 1);
    assert!(matches!(
        receive(&mut table, &third, peer(Transport::Udp), t0 + T1 * 64),
        Ok(RequestMatch::New(_))
    ));
}

#[test]
fn requests_without_a_usable_top_via_are_refused() {
    let t0 = Instant::now();
    let mut table = table();
    let no_via = String::from_utf8(invite()).unwrap().replace(
        "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n",
        "",
    );
    let refused = receive(&mut table, no_via.as_bytes(), peer(Transport::Udp), t0);
    assert!(
        matches!(refused, Err(TransactionError::Malformed(_))),
        "{refused:?}"
    );
    let response = response(&invite(), 200, "OK");
    let refused = receive(&mut table, &response, peer(Transport::Udp), t0);
    assert!(matches!(refused, Err(TransactionError::Malformed(e)) if e.in_response));
    assert_eq!(table.server_count(), 0);
    assert!(drain(&mut table).is_empty());
}

#[test]
fn a_full_table_reclaims_the_oldest_answered_non_invite_for_a_new_request() {
    let t0 = Instant::now();
    let mut table = TransactionTable::new(TimerConfig::default(), 2, 2);
    let first = request("OPTIONS", Some("z9hG4bK1"), None);
    let first_id = new_server(&mut table, &first, peer(Transport::Udp), t0);
    let second = request("OPTIONS", Some("z9hG4bK2"), None);
    let second_id = new_server(&mut table, &second, peer(Transport::Udp), t0);
    table
        .respond(first_id, 200, response(&first, 200, "OK"), t0)
        .unwrap();
    table
        .respond(second_id, 200, response(&second, 200, "OK"), t0 + T1)
        .unwrap();
    drain(&mut table);
    assert_eq!(
        table.state(TransactionId::Server(first_id)),
        Some(State::Completed)
    );

    // Both wait out Timer J (32 s over UDP); a new request takes the older one's place.
    let third = request("OPTIONS", Some("z9hG4bK3"), None);
    let third = receive(&mut table, &third, peer(Transport::Udp), t0 + T1 * 2);
    assert!(matches!(third, Ok(RequestMatch::New(_))), "{third:?}");
    assert_eq!(table.reclaimed(), 1);
    assert_eq!(
        table.state(TransactionId::Server(first_id)),
        None,
        "the oldest went"
    );
    assert_eq!(
        table.state(TransactionId::Server(second_id)),
        Some(State::Completed)
    );
    assert!(
        drain(&mut table)
            .iter()
            .any(|a| matches!(a, Action::Terminated(id) if *id == TransactionId::Server(first_id))),
        "the shard hears that it ended"
    );

    // The table is full of transactions still waiting for an answer or fresher: once the
    // second is reclaimed too, nothing else can be.
    let fourth = request("OPTIONS", Some("z9hG4bK4"), None);
    assert!(matches!(
        receive(&mut table, &fourth, peer(Transport::Udp), t0 + T1 * 2),
        Ok(RequestMatch::New(_))
    ));
    let fifth = request("OPTIONS", Some("z9hG4bK5"), None);
    assert_eq!(
        receive(&mut table, &fifth, peer(Transport::Udp), t0 + T1 * 2),
        Err(TransactionError::TableFull)
    );
    assert_eq!(table.reclaimed(), 2);
}

#[test]
fn a_local_final_response_to_an_invite_over_udp_is_sent_once() {
    let t0 = Instant::now();
    let mut table = table();
    let invite = invite();
    let id = new_server(&mut table, &invite, peer(Transport::Udp), t0);
    drain(&mut table);
    table
        .respond_local(
            id,
            407,
            response(&invite, 407, "Proxy Authentication Required"),
            t0,
        )
        .unwrap();
    assert_eq!(drain(&mut table).len(), 1, "the 407, once");
    let timers: Vec<TimerKind> = table
        .running_timers(TransactionId::Server(id))
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(timers, [TimerKind::H], "no Timer G");
    // Nothing more goes out by itself ...
    run_timers(&mut table, t0, T1 * 16);
    assert!(
        drain(&mut table)
            .iter()
            .all(|a| !matches!(a, Action::Send { .. }))
    );
    // ... but a retransmitted INVITE gets the 407 again, and the ACK completes the transaction.
    assert_eq!(
        receive(&mut table, &invite, peer(Transport::Udp), t0 + T1 * 16),
        Ok(RequestMatch::Absorbed)
    );
    assert!(
        drain(&mut table)
            .iter()
            .any(|a| matches!(a, Action::Send { .. }))
    );
    assert_eq!(
        receive(
            &mut table,
            &ack("a6c85cf"),
            peer(Transport::Udp),
            t0 + T1 * 17
        ),
        Ok(RequestMatch::Absorbed)
    );
    assert_eq!(
        table.state(TransactionId::Server(id)),
        Some(State::Confirmed)
    );
}
