//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5 as corrected by RFC 6026 §8.4).
//!
//! ```text
//!  INVITE sent → Calling ──1xx──→ Proceeding ──300-699: ACK──→ Completed ──Timer D──→ Terminated
//!   Timer A: re-send │  └─────────300-699: ACK────────────────────↑
//!   Timer B: timeout │
//!                    └──2xx (from Calling or Proceeding)──→ Accepted ──Timer M──→ Terminated
//! ```
//!
//! Over UDP the INVITE is retransmitted at T1, 2*T1, 4*T1… (Timer A, no cap) until any response
//! arrives or Timer B gives up at 64*T1. A non-2xx final is acknowledged here, hop by hop: the ACK
//! is built per §17.1.1.3 and re-sent for every retransmission of that response. A 2xx is passed
//! up and acknowledged end to end by the UAC; Accepted (RFC 6026) keeps the transaction alive so
//! that retransmitted and forked 2xx still reach the TU instead of being treated as strays.

use std::rc::Rc;
use std::time::Duration;

use sipshard_net::{HeaderName, Message, MessageWriter, ParseError};

use super::key::via_value;
use super::{Delivery, Effect, State, TimerConfig, TimerKind, doubled, linger};

/// The headers of the original INVITE that its ACK (§17.1.1.3) and its CANCEL (§9.1) repeat,
/// extracted once when the transaction starts.
#[derive(Debug)]
pub(crate) struct OriginalHeaders {
    request_uri: Box<str>,
    /// `Via` (the top value only), every `Route` line, `Max-Forwards`, `From` and `Call-ID`, as
    /// CRLF-terminated lines.
    lines: Box<[u8]>,
    cseq: u32,
    /// The To value of the INVITE (the CANCEL's; the ACK takes the response's).
    to: Box<[u8]>,
}

impl OriginalHeaders {
    pub(crate) fn of(invite: &Message<'_>) -> Result<OriginalHeaders, ParseError> {
        let request_uri = invite
            .request_uri()
            .ok_or_else(super::key::not_a_request)?
            .as_str()
            .into();
        // Parse what is copied: a malformed original is refused now, not when an ACK is due.
        let via = invite.top_via()?;
        invite.from()?;
        invite.to()?;
        let cseq = invite.cseq()?.seq;
        let call_id = invite.call_id()?;
        for route in invite.name_addrs(HeaderName::Route) {
            route?;
        }
        let mut lines = b"Via: ".to_vec();
        lines.extend_from_slice(&via_value(&via));
        lines.extend_from_slice(b"\r\n");
        for route in invite.values(HeaderName::Route) {
            push_line(&mut lines, "Route", route);
        }
        lines.extend_from_slice(b"Max-Forwards: 70\r\n");
        push_line(
            &mut lines,
            "From",
            invite.value(HeaderName::From).unwrap_or_default(),
        );
        push_line(&mut lines, "Call-ID", call_id.as_bytes());
        Ok(OriginalHeaders {
            request_uri,
            lines: lines.into(),
            cseq,
            to: invite.value(HeaderName::To).unwrap_or_default().into(),
        })
    }

    /// §17.1.1.3: Request-URI, Call-ID, From, the top Via and the Routes of the original; CSeq
    /// with its number and method ACK; To from the response being acknowledged.
    fn ack(&self, response_to: &[u8]) -> Vec<u8> {
        self.write("ACK", response_to)
    }

    /// §9.1: as the ACK, but with the INVITE's own To and method CANCEL.
    pub(crate) fn cancel(&self) -> Vec<u8> {
        self.write("CANCEL", &self.to)
    }

    fn write(&self, method: &str, to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = MessageWriter::request(&mut out, method, &self.request_uri);
        w.raw_line(&self.lines);
        w.header("CSeq", &format!("{} {method}", self.cseq));
        w.raw_line(b"To: ").raw_line(to).raw_line(b"\r\n");
        w.finish(None, b"");
        out
    }
}

fn push_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug)]
pub(crate) struct ClientInvite {
    state: State,
    reliable: bool,
    request: Rc<[u8]>,
    original: OriginalHeaders,
    /// Timer A's next interval.
    timer_a: Duration,
    /// The ACK for the non-2xx final, once Completed; re-sent for its retransmissions.
    ack: Option<Rc<[u8]>>,
}

impl ClientInvite {
    /// Sends the INVITE: Calling, with Timer A (unreliable transports) and Timer B running.
    pub(crate) fn new(
        request: Rc<[u8]>,
        original: OriginalHeaders,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> ClientInvite {
        out.push(Effect::Send(request.clone()));
        if !reliable {
            out.push(Effect::Arm(TimerKind::A, config.t1));
        }
        out.push(Effect::Arm(TimerKind::B, config.timeout()));
        ClientInvite {
            state: State::Calling,
            reliable,
            request,
            original,
            timer_a: config.t1,
            ack: None,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn original(&self) -> &OriginalHeaders {
        &self.original
    }

    /// A response; `to` is its To header value (for the ACK of a non-2xx).
    pub(crate) fn on_response(
        &mut self,
        status: u16,
        to: &[u8],
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> Delivery {
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                if self.state == State::Calling {
                    // Proceeding: the server has the request; Timer C (the proxy's) takes over.
                    self.state = State::Proceeding;
                    out.push(Effect::Disarm(TimerKind::A));
                    out.push(Effect::Disarm(TimerKind::B));
                }
                Delivery::ToTu
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                out.push(Effect::Disarm(TimerKind::A));
                out.push(Effect::Disarm(TimerKind::B));
                out.push(Effect::Arm(TimerKind::M, config.timeout()));
                Delivery::ToTu
            }
            (State::Calling | State::Proceeding, 300..=699) => {
                self.state = State::Completed;
                let ack: Rc<[u8]> = self.original.ack(to).into();
                out.push(Effect::Disarm(TimerKind::A));
                out.push(Effect::Disarm(TimerKind::B));
                out.push(Effect::Send(ack.clone()));
                self.ack = Some(ack);
                linger(self.reliable, TimerKind::D, config.timer_d(), out);
                Delivery::ToTu
            }
            // A retransmitted final: acknowledge it again, but the TU already has it.
            (State::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    out.push(Effect::Send(ack.clone()));
                }
                Delivery::Absorbed
            }
            // RFC 6026 §8.4: every 2xx in Accepted goes up (retransmissions, other forks).
            (State::Accepted, 200..=299) => Delivery::ToTu,
            _ => Delivery::Absorbed,
        }
    }

    pub(crate) fn on_timer(&mut self, kind: TimerKind, out: &mut Vec<Effect>) {
        match (self.state, kind) {
            (State::Calling, TimerKind::A) => {
                out.push(Effect::Send(self.request.clone()));
                self.timer_a = doubled(self.timer_a, None);
                out.push(Effect::Arm(TimerKind::A, self.timer_a));
            }
            (State::Calling, TimerKind::B) => {
                out.push(Effect::Timeout);
                out.push(Effect::Terminate);
            }
            (State::Completed, TimerKind::D) | (State::Accepted, TimerKind::M) => {
                out.push(Effect::Terminate);
            }
            // Every timer is disarmed when its state is left, so nothing else fires.
            _ => {}
        }
    }

    /// Figure 5: a failed send of the INVITE (Calling) or of the ACK (Completed) ends the
    /// transaction. In Proceeding and Accepted nothing is being sent; a late report is ignored.
    pub(crate) fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        if matches!(self.state, State::Calling | State::Completed) {
            out.push(Effect::TransportError);
            out.push(Effect::Terminate);
        }
    }
}
