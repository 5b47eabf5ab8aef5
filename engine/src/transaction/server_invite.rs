//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7 as corrected by RFC 6026 §7.1).
//!
//! ```text
//!  INVITE → Proceeding ──300-699──→ Completed ──ACK──→ Confirmed ──Timer I──→ Terminated
//!  (100 sent)    │                   │  Timer G: re-send     ↑
//!                │                   └──Timer H: timeout─────┘ (to Terminated)
//!                └──2xx──→ Accepted ──Timer L──→ Terminated
//! ```
//!
//! The INVITE may wait minutes for its final response, so the server answers 100 (Trying) at
//! once to stop the upstream retransmitting. A non-2xx final is the transaction's to deliver:
//! it is retransmitted over UDP (Timer G) until the hop-by-hop ACK arrives (or Timer H gives up).
//! A 2xx is not: it ends the INVITE transaction's reliability duty, and RFC 6026's Accepted state
//! lingers only so that INVITE retransmissions are absorbed rather than mistaken for a new
//! request, while the proxy keeps forwarding 2xx from other branches.

use std::rc::Rc;
use std::time::Duration;

use super::{Effect, State, TimerConfig, TimerKind, TransactionError, doubled, linger};

/// What happened to an ACK that matched the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckVerdict {
    /// The hop-by-hop ACK of a non-2xx (or a retransmission of it): consumed here.
    Absorbed,
    /// An ACK in Accepted belongs to the 2xx, end to end (RFC 6026 §7.1): for the TU.
    ToTu,
}

#[derive(Debug)]
pub(crate) struct ServerInvite {
    state: State,
    reliable: bool,
    /// The last provisional or non-2xx final response, re-sent for each retransmitted INVITE and
    /// on Timer G.
    last_response: Rc<[u8]>,
    /// Timer G's next interval.
    timer_g: Duration,
}

impl ServerInvite {
    /// A new INVITE: Proceeding, with the 100 (Trying) sent at once.
    pub(crate) fn new(
        trying: Rc<[u8]>,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> ServerInvite {
        out.push(Effect::Send(trying.clone()));
        ServerInvite {
            state: State::Proceeding,
            reliable,
            last_response: trying,
            timer_g: config.t1,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the INVITE: re-send the last response in Proceeding and Completed;
    /// absorb it in Confirmed and Accepted (RFC 6026 §7.1: never passed to the TU).
    pub(crate) fn on_retransmission(&self, out: &mut Vec<Effect>) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            out.push(Effect::Send(self.last_response.clone()));
        }
    }

    pub(crate) fn on_ack(&mut self, config: &TimerConfig, out: &mut Vec<Effect>) -> AckVerdict {
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                out.push(Effect::Disarm(TimerKind::G));
                out.push(Effect::Disarm(TimerKind::H));
                linger(self.reliable, TimerKind::I, config.t4, out);
                AckVerdict::Absorbed
            }
            State::Accepted => AckVerdict::ToTu,
            // Confirmed: ACK retransmissions. Proceeding: nothing to acknowledge yet.
            _ => AckVerdict::Absorbed,
        }
    }

    /// A response from the TU. A non-2xx final is retransmitted on Timer G over UDP only when
    /// `resend` (see [`super::TransactionTable::respond_local`] for when it is not).
    pub(crate) fn on_response(
        &mut self,
        status: u16,
        bytes: Rc<[u8]>,
        resend: bool,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> Result<(), TransactionError> {
        match (self.state, status) {
            (State::Proceeding, 100..=199) => {
                self.last_response = bytes.clone();
                out.push(Effect::Send(bytes));
            }
            (State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                out.push(Effect::Send(bytes));
                out.push(Effect::Arm(TimerKind::L, config.timeout()));
            }
            (State::Proceeding, 300..=699) => {
                self.state = State::Completed;
                self.last_response = bytes.clone();
                out.push(Effect::Send(bytes));
                if !self.reliable && resend {
                    out.push(Effect::Arm(TimerKind::G, self.timer_g));
                }
                out.push(Effect::Arm(TimerKind::H, config.timeout()));
            }
            // RFC 6026 §7.1: 2xx from other branches (or the TU's retransmissions) go out.
            (State::Accepted, 200..=299) => out.push(Effect::Send(bytes)),
            _ => return Err(TransactionError::ResponseNotAllowed),
        }
        Ok(())
    }

    pub(crate) fn on_timer(
        &mut self,
        kind: TimerKind,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) {
        match (self.state, kind) {
            (State::Completed, TimerKind::G) => {
                out.push(Effect::Send(self.last_response.clone()));
                self.timer_g = doubled(self.timer_g, Some(config.t2));
                out.push(Effect::Arm(TimerKind::G, self.timer_g));
            }
            (State::Completed, TimerKind::H) => {
                out.push(Effect::Timeout);
                out.push(Effect::Terminate);
            }
            (State::Confirmed, TimerKind::I) | (State::Accepted, TimerKind::L) => {
                out.push(Effect::Terminate);
            }
            // Every timer is disarmed when its state is left, so nothing else fires.
            _ => {}
        }
    }

    /// §17.2.4: the server gives up on a peer it cannot reach, in any state.
    pub(crate) fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        out.push(Effect::TransportError);
        out.push(Effect::Terminate);
    }
}
