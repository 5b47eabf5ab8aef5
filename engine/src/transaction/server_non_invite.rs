//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8; errata 1470 for a final
//! response sent from Trying).
//!
//! ```text
//!  request → Trying ──1xx──→ Proceeding ──200-699──→ Completed ──Timer J──→ Terminated
//!              └──────────200-699───────────────────────↑
//! ```
//!
//! The client retransmits a non-INVITE request until it sees a final response, so the server
//! re-sends its last response for every retransmission and stays in Completed for 64*T1 (Timer J)
//! to keep answering them; over a reliable transport there are none, and Timer J is zero.

use std::rc::Rc;

use super::{Effect, State, TimerConfig, TimerKind, TransactionError, linger};

#[derive(Debug)]
pub(crate) struct ServerNonInvite {
    state: State,
    reliable: bool,
    /// The last response sent, re-sent for each retransmitted request; none while Trying.
    last_response: Option<Rc<[u8]>>,
}

impl ServerNonInvite {
    /// A new request: Trying. Nothing is sent: unlike INVITE, a non-INVITE gets its final
    /// response quickly, and RFC 4320 §4.1 restricts a 100 to it.
    pub(crate) fn new(reliable: bool) -> ServerNonInvite {
        ServerNonInvite {
            state: State::Trying,
            reliable,
            last_response: None,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// A retransmission: absorbed in Trying, answered with the last response afterwards.
    pub(crate) fn on_retransmission(&self, out: &mut Vec<Effect>) {
        if let Some(last) = &self.last_response {
            out.push(Effect::Send(last.clone()));
        }
    }

    /// A response from the TU. Once Completed, further finals are refused (§17.2.2: discarded).
    pub(crate) fn on_response(
        &mut self,
        status: u16,
        bytes: Rc<[u8]>,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> Result<(), TransactionError> {
        let final_response = match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => false,
            (State::Trying | State::Proceeding, 200..=699) => true,
            _ => return Err(TransactionError::ResponseNotAllowed),
        };
        out.push(Effect::Send(bytes.clone()));
        self.last_response = Some(bytes);
        if final_response {
            self.state = State::Completed;
            linger(self.reliable, TimerKind::J, config.timeout(), out);
        } else {
            self.state = State::Proceeding;
        }
        Ok(())
    }

    pub(crate) fn on_timer(&mut self, kind: TimerKind, out: &mut Vec<Effect>) {
        if (self.state, kind) == (State::Completed, TimerKind::J) {
            out.push(Effect::Terminate);
        }
    }

    /// §17.2.4: the server gives up on a peer it cannot reach.
    pub(crate) fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        out.push(Effect::TransportError);
        out.push(Effect::Terminate);
    }
}
