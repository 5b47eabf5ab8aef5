//! The calibration responder: one UDP socket, one thread, one answer for every request.
//!
//! It is deliberately stateless (no transactions, no retransmission handling): a retransmitted
//! request simply gets the same answer again, which is what a load generator's calibration needs.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};

use sipshard_net::{ErrorAction, Message, Method, error_response, reason_phrase, response_to};

pub struct Options {
    pub listen: SocketAddr,
    pub status: u16,
    /// Stall once, for this long, after answering this many requests (to test that a load
    /// generator's latency shows a server's stall).
    pub pause: Option<(u64, std::time::Duration)>,
}

impl Options {
    pub fn from_args(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            status: 200,
            pause: None,
        };
        let mut pause_after = None;
        let mut pause_ms = None;
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--listen" => {
                    options.listen = value
                        .parse()
                        .map_err(|_| format!("--listen: not an ADDR:PORT: {value}"))?;
                }
                "--status" => {
                    options.status = value
                        .parse()
                        .ok()
                        .filter(|s| (200..=699).contains(s))
                        .ok_or(format!("--status: not a final status 200-699: {value}"))?;
                }
                "--pause-after" => {
                    pause_after = Some(
                        value
                            .parse()
                            .map_err(|_| format!("--pause-after: {value}"))?,
                    )
                }
                "--pause-ms" => {
                    pause_ms = Some(value.parse().map_err(|_| format!("--pause-ms: {value}"))?)
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        options.pause = match (pause_after, pause_ms) {
            (None, None) => None,
            (Some(n), Some(ms)) => Some((n, std::time::Duration::from_millis(ms))),
            _ => return Err("--pause-after and --pause-ms go together".into()),
        };
        Ok(options)
    }
}

/// What happened to one datagram.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Answered,
    /// ACKs and responses get no answer.
    Absorbed,
    /// Unparseable and unanswerable.
    Dropped,
}

pub fn run(options: &Options) -> std::io::Result<()> {
    let socket = UdpSocket::bind(options.listen)?;
    crate::generate::set_buffers(&socket);
    println!("listening on udp {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let mut datagram = vec![0u8; 65535];
    let mut out = Vec::with_capacity(2048);
    let mut dropped: u64 = 0;
    let mut answered: u64 = 0;
    let mut pause = options.pause;
    loop {
        let (len, peer) = socket.recv_from(&mut datagram)?;
        match answer(&datagram[..len], options.status, &mut out) {
            Outcome::Answered => {
                // A full socket buffer or an unreachable peer loses this answer only; the peer
                // retransmits.
                let _ = socket.send_to(&out, peer);
                answered += 1;
                if let Some((after, how_long)) = pause {
                    if answered >= after {
                        std::thread::sleep(how_long);
                        pause = None;
                    }
                }
            }
            Outcome::Absorbed => {}
            Outcome::Dropped => {
                dropped += 1;
                if dropped.is_power_of_two() {
                    eprintln!("dropped {dropped} malformed datagrams so far");
                }
            }
        }
    }
}

fn answer(datagram: &[u8], status: u16, out: &mut Vec<u8>) -> Outcome {
    let request = match Message::parse_datagram(datagram) {
        Ok(msg) if !msg.is_request() => return Outcome::Absorbed,
        Ok(msg) => msg,
        Err(e) if error_response(out, datagram, &e) => return Outcome::Answered,
        Err(_) => return Outcome::Dropped,
    };
    if request.method() == Some(Method::Ack) {
        return Outcome::Absorbed;
    }
    let (status, reason) = match request.validate() {
        Ok(()) => (status, reason_phrase(status)),
        Err(e) => match e.action() {
            ErrorAction::Respond { status, reason } => (status, reason),
            ErrorAction::Drop => return Outcome::Dropped,
        },
    };
    // A fixed To tag: every dialog-creating answer from this responder is the same "UAS".
    response_to(out, &request, status, reason, Some("sipshard-load")).finish(None, b"");
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:responder@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
From: <sip:load@127.0.0.1>;tag=1\r\n\
To: <sip:responder@127.0.0.1>\r\n\
Call-ID: 1@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn answers_requests_with_the_chosen_status() {
        let mut out = Vec::new();
        assert_eq!(answer(OPTIONS, 486, &mut out), Outcome::Answered);
        let resp = Message::parse_datagram(&out).unwrap();
        assert_eq!(resp.status(), Some(486));
        assert_eq!(resp.to().unwrap().tag(), Some("sipshard-load"));
    }

    #[test]
    fn malformed_requests_get_the_parsers_status_and_junk_is_dropped() {
        let mut out = Vec::new();
        let no_call_id = String::from_utf8_lossy(OPTIONS).replace("Call-ID: 1@127.0.0.1\r\n", "");
        assert_eq!(
            answer(no_call_id.as_bytes(), 200, &mut out),
            Outcome::Answered
        );
        assert_eq!(Message::parse_datagram(&out).unwrap().status(), Some(400));
        let bad_version =
            String::from_utf8_lossy(OPTIONS).replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        assert_eq!(
            answer(bad_version.as_bytes(), 200, &mut out),
            Outcome::Answered
        );
        assert_eq!(Message::parse_datagram(&out).unwrap().status(), Some(505));
        assert_eq!(answer(b"\x00\x01junk", 200, &mut out), Outcome::Dropped);
        assert_eq!(
            answer(b"SIP/2.0 200 OK\r\n\r\n", 200, &mut out),
            Outcome::Absorbed
        );
    }
}
