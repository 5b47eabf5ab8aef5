//! `sipshard-load uas`: the callee side of the `call` scenario, one UDP socket, one thread.
//!
//! It answers every INVITE at once with 180 Ringing and 200 OK (Contact, an SDP answer), and
//! keeps no state, so that it costs next to nothing and never runs out of memory: the To tag is
//! a hash of the Call-ID and the From tag, so a retransmitted INVITE gets the same answer again
//! (standing in for the 2xx retransmissions of §13.3.1.4, which a stateful UAS would time itself)
//! and a BYE is checked against the tag its INVITE got (481 if it does not match, 200 if it
//! does). ACKs are absorbed and counted. A CANCEL finds no transaction to cancel (the INVITE was
//! answered when it arrived): 481, per §9.2. Any other request gets 200. Counts go to stderr once
//! a second when they change, so that a test can check that every 200 was ACKed.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sipshard_net::{
    ErrorAction, HeaderName, Message, Method, error_response, reason_phrase, response_to,
};

pub struct Options {
    pub listen: SocketAddr,
}

impl Options {
    pub fn from_args(args: &[String]) -> Result<Options, String> {
        let mut listen = SocketAddr::from(([127, 0, 0, 1], 5060));
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--listen" => {
                    listen = value
                        .parse()
                        .map_err(|_| format!("--listen: not an ADDR:PORT: {value}"))?;
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if listen.ip().is_unspecified() {
            return Err("--listen needs an address peers can reach (it goes into Contact)".into());
        }
        Ok(Options { listen })
    }
}

/// What the UAS saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub invite: u64,
    pub ack: u64,
    pub bye: u64,
    /// BYEs answered 481: not a dialog this UAS answered.
    pub bye_unknown: u64,
    pub cancel: u64,
    pub other: u64,
    pub dropped: u64,
}

/// The UAS: its Contact and SDP answer, and its counts.
pub struct Uas {
    contact: String,
    sdp: String,
    pub stats: Stats,
}

impl Uas {
    pub fn new(local: SocketAddr) -> Uas {
        let ip = local.ip();
        let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
        Uas {
            contact: format!("<sip:uas@{local}>"),
            sdp: format!(
                "v=0\r\no=sipshard-uas 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            ),
            stats: Stats::default(),
        }
    }

    /// Answers one datagram: writes up to two responses into `out` and returns how many.
    pub fn answer(&mut self, datagram: &[u8], out: &mut [Vec<u8>; 2]) -> usize {
        let request = match Message::parse_datagram(datagram) {
            Ok(msg) if !msg.is_request() => return 0,
            Ok(msg) => msg,
            Err(e) => {
                if error_response(&mut out[0], datagram, &e) {
                    return 1;
                }
                self.stats.dropped += 1;
                return 0;
            }
        };
        if let Err(e) = request.validate() {
            return match e.action() {
                ErrorAction::Respond { status, reason } => {
                    response_to(&mut out[0], &request, status, reason, None).finish(None, b"");
                    1
                }
                ErrorAction::Drop => {
                    self.stats.dropped += 1;
                    0
                }
            };
        }
        // Validated: From, To and Call-ID parse.
        let tag = match (request.call_id(), request.from()) {
            (Ok(call_id), Ok(from)) => to_tag(call_id, from.tag().unwrap_or("")),
            _ => {
                self.stats.dropped += 1;
                return 0;
            }
        };
        match request.method() {
            Some(Method::Ack) => {
                self.stats.ack += 1;
                0
            }
            Some(Method::Invite) => {
                self.stats.invite += 1;
                // RFC 3261 §12.1.1: a dialog-creating response carries the request's
                // Record-Route values, in order, so that the caller's route set (and its BYE)
                // goes through the proxies that asked to stay in the path.
                let record_route = || {
                    request
                        .values(HeaderName::RecordRoute)
                        .filter_map(|v| std::str::from_utf8(v).ok())
                };
                let [ringing, ok] = out;
                let mut w = response_to(ringing, &request, 180, "Ringing", Some(&tag));
                for value in record_route() {
                    w.header("Record-Route", value);
                }
                w.header("Contact", &self.contact);
                w.finish(None, b"");
                let mut w = response_to(ok, &request, 200, "OK", Some(&tag));
                for value in record_route() {
                    w.header("Record-Route", value);
                }
                w.header("Contact", &self.contact);
                w.finish(Some("application/sdp"), self.sdp.as_bytes());
                2
            }
            Some(Method::Bye) => {
                let ours = request.to().ok().and_then(|to| to.tag()) == Some(tag.as_str());
                let status = if ours {
                    self.stats.bye += 1;
                    200
                } else {
                    self.stats.bye_unknown += 1;
                    481
                };
                response_to(&mut out[0], &request, status, reason_phrase(status), None)
                    .finish(None, b"");
                1
            }
            Some(Method::Cancel) => {
                self.stats.cancel += 1;
                response_to(&mut out[0], &request, 481, reason_phrase(481), Some(&tag))
                    .finish(None, b"");
                1
            }
            _ => {
                self.stats.other += 1;
                response_to(&mut out[0], &request, 200, "OK", Some(&tag)).finish(None, b"");
                1
            }
        }
    }
}

/// The To tag of the dialog a request with this Call-ID and From tag belongs to (FNV-1a: stable,
/// and the tag only has to be unique among this UAS's calls).
fn to_tag(call_id: &str, from_tag: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.bytes().chain([0]).chain(from_tag.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("uas{h:016x}")
}

pub fn run(options: &Options) -> std::io::Result<()> {
    let socket = UdpSocket::bind(options.listen)?;
    crate::generate::set_buffers(&socket);
    // Wake up at least every 200 ms to print the counts.
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let local = socket.local_addr()?;
    println!("listening on udp {local}");
    std::io::stdout().flush()?;
    let mut uas = Uas::new(local);
    let mut datagram = vec![0u8; 65535];
    let mut out = [Vec::with_capacity(1024), Vec::with_capacity(1024)];
    let mut printed = Stats::default();
    let mut last_print = Instant::now();
    loop {
        match socket.recv_from(&mut datagram) {
            Ok((len, peer)) => {
                let n = uas.answer(&datagram[..len], &mut out);
                for response in &out[..n] {
                    // A lost answer is retransmitted for by the peer.
                    let _ = socket.send_to(response, peer);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP errors from a peer that went away.
            Err(_) => {}
        }
        if uas.stats != printed && last_print.elapsed() >= Duration::from_secs(1) {
            let s = uas.stats;
            eprintln!(
                "uas: invite {} ack {} bye {} bye-unknown {} cancel {} other {} dropped {}",
                s.invite, s.ack, s.bye, s.bye_unknown, s.cancel, s.other, s.dropped
            );
            printed = s;
            last_print = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Ack, Dialog, Endpoints, Scenario, write_ack, write_bye};
    use crate::users::UserPattern;

    fn setup() -> (Uas, Endpoints, Scenario) {
        let ends = Endpoints {
            local: "127.0.0.1:5070".parse().unwrap(),
            target: "127.0.0.1:5090".parse().unwrap(),
            domain: "example.org".into(),
            transport: crate::conn::Transport::Udp,
        };
        let call = Scenario::Call {
            users: UserPattern::parse("callee%d", 0, 10).unwrap().into(),
            hold_ms: 0,
            from_users: false,
        };
        (Uas::new(ends.target), ends, call)
    }

    /// A proxy that Record-Routes (Kamailio's record_route()) gets its route back in the 180
    /// and the 200, in the INVITE's order, so the caller's BYE goes through it.
    #[test]
    fn record_route_is_copied_into_the_dialog_creating_responses() {
        let (mut uas, ends, call) = setup();
        let mut invite = Vec::new();
        crate::scenario::write_request(&mut invite, &call, &ends, 4, "z9hG4bK-i-4");
        let text = String::from_utf8(invite).unwrap().replacen(
            "\r\n",
            "\r\nRecord-Route: <sip:p1.example.org;lr>\r\nRecord-Route: <sip:127.0.0.1:5070;lr>\r\n",
            1,
        );
        let mut out = [Vec::new(), Vec::new()];
        assert_eq!(uas.answer(text.as_bytes(), &mut out), 2);
        for response in &out {
            let msg = Message::parse_datagram(response).unwrap();
            let values: Vec<&[u8]> = msg.values(HeaderName::RecordRoute).collect();
            assert_eq!(
                values,
                [&b"<sip:p1.example.org;lr>"[..], b"<sip:127.0.0.1:5070;lr>"]
            );
        }
        let dialog = Dialog::from_2xx(&Message::parse_datagram(&out[1]).unwrap()).unwrap();
        assert_eq!(dialog.routes.len(), 2);
    }

    #[test]
    fn a_call_through_the_uas_is_correct_sip() {
        let (mut uas, ends, call) = setup();
        let mut invite = Vec::new();
        crate::scenario::write_request(&mut invite, &call, &ends, 3, "z9hG4bK-i-3");
        let mut out = [Vec::new(), Vec::new()];
        assert_eq!(uas.answer(&invite, &mut out), 2);
        let ringing = Message::parse_datagram(&out[0]).unwrap();
        let ok = Message::parse_datagram(&out[1]).unwrap();
        assert_eq!((ringing.status(), ok.status()), (Some(180), Some(200)));
        let tag = ok.to().unwrap().tag().unwrap().to_owned();
        assert_eq!(ringing.to().unwrap().tag(), Some(tag.as_str()));
        assert!(ok.content_type().unwrap().unwrap().is("application", "sdp"));
        assert!(ok.body().starts_with(b"v=0\r\n"));
        // A retransmitted INVITE gets the same dialog.
        let mut again = [Vec::new(), Vec::new()];
        uas.answer(&invite, &mut again);
        assert_eq!(again[1], out[1]);

        let dialog = Dialog::from_2xx(&ok).unwrap();
        assert_eq!(dialog.target, "sip:uas@127.0.0.1:5090");
        assert!(dialog.routes.is_empty());
        let mut ack = Vec::new();
        write_ack(
            &mut ack,
            &call,
            &ends,
            3,
            Ack::Success {
                dialog: &dialog,
                branch: "z9hG4bK-a-3",
            },
        )
        .unwrap();
        let ack_msg = Message::parse_datagram(&ack).unwrap();
        ack_msg.validate().unwrap();
        assert_eq!(ack_msg.to().unwrap().tag(), Some(tag.as_str()));
        assert_eq!(
            ack_msg.call_id().unwrap(),
            Message::parse_datagram(&invite).unwrap().call_id().unwrap()
        );
        assert_eq!(uas.answer(&ack, &mut out), 0);

        let mut bye = Vec::new();
        write_bye(&mut bye, &ends, "z9hG4bK-b-3", &dialog, 2, None);
        let text = String::from_utf8_lossy(&bye).into_owned();
        assert!(
            text.starts_with("BYE sip:uas@127.0.0.1:5090 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 2 BYE\r\n"), "{text}");
        assert_eq!(uas.answer(&bye, &mut out), 1);
        assert_eq!(
            Message::parse_datagram(&out[0]).unwrap().status(),
            Some(200)
        );
        // A BYE with a tag the UAS did not give: 481.
        let forged = text.replace(&tag, "other");
        assert_eq!(uas.answer(forged.as_bytes(), &mut out), 1);
        assert_eq!(
            Message::parse_datagram(&out[0]).unwrap().status(),
            Some(481)
        );
        // CANCEL: the INVITE was answered already.
        let cancel = String::from_utf8_lossy(&invite)
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
        assert_eq!(uas.answer(cancel.as_bytes(), &mut out), 1);
        assert_eq!(
            Message::parse_datagram(&out[0]).unwrap().status(),
            Some(481)
        );
        assert_eq!(
            uas.stats,
            Stats {
                invite: 2,
                ack: 1,
                bye: 1,
                bye_unknown: 1,
                cancel: 1,
                other: 0,
                dropped: 0
            }
        );
        assert_eq!(uas.answer(b"\x00junk", &mut out), 0);
        assert_eq!(uas.stats.dropped, 1);
    }

    #[test]
    fn a_failure_is_acked_with_the_invites_branch_and_uri() {
        let (_, ends, call) = setup();
        let response = b"SIP/2.0 407 Proxy Authentication Required\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-i-4;rport=5070\r\n\
From: <sip:sipshard-load@127.0.0.1:5070>;tag=4\r\nTo: <sip:callee4@example.org>;tag=x\r\n\
Call-ID: 4-z9hG4bK-i-4@127.0.0.1\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n";
        let response = Message::parse_datagram(response).unwrap();
        let mut ack = Vec::new();
        write_ack(
            &mut ack,
            &call,
            &ends,
            4,
            Ack::Failure {
                response: &response,
            },
        )
        .unwrap();
        let msg = Message::parse_datagram(&ack).unwrap();
        msg.validate().unwrap();
        assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK-i-4"));
        assert_eq!(msg.call_id().unwrap(), "4-z9hG4bK-i-4@127.0.0.1");
        let text = String::from_utf8_lossy(&ack).into_owned();
        assert!(
            text.starts_with("ACK sip:callee4@example.org SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 2 ACK\r\n"), "{text}");
        assert!(
            text.contains("To: <sip:callee4@example.org>;tag=x\r\n"),
            "{text}"
        );
        assert!(
            text.contains("From: <sip:sipshard-load@127.0.0.1:5070>;tag=4\r\n"),
            "{text}"
        );
    }

    #[test]
    fn record_route_becomes_the_route_set_reversed() {
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
Record-Route: <sip:p2.example.org;lr>, <sip:p1.example.org;lr>\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:b@10.0.0.2:5062>\r\nContent-Length: 0\r\n\r\n";
        let d = Dialog::from_2xx(&Message::parse_datagram(ok).unwrap()).unwrap();
        assert_eq!(
            d.routes,
            ["<sip:p1.example.org;lr>", "<sip:p2.example.org;lr>"]
        );
        assert_eq!(d.target, "sip:b@10.0.0.2:5062");
        assert_eq!(d.to, "<sip:b@h>;tag=2");
        let no_contact =
            String::from_utf8_lossy(ok).replace("Contact: <sip:b@10.0.0.2:5062>\r\n", "");
        assert_eq!(
            Dialog::from_2xx(&Message::parse_datagram(no_contact.as_bytes()).unwrap()),
            Err("no Contact")
        );
    }
}
