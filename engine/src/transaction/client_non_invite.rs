//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).
//!
//! ```text
//!  request sent → Trying ──1xx──→ Proceeding ──200-699──→ Completed ──Timer K──→ Terminated
//!   Timer E: re-send │  └──────────200-699──────────────────↑
//!   Timer F: timeout ┘  (E and F keep running in Proceeding)
//! ```
//!
//! Non-INVITE requests are answered at once, so over UDP the request is retransmitted with Timer E
//! doubling from T1 but capped at T2 (at T2 flat once a provisional shows the server has it),
//! until a final response or Timer F at 64*T1. Completed lingers T4 (Timer K) to absorb
//! retransmitted finals; zero on reliable transports.

use std::rc::Rc;
use std::time::Duration;

use super::{Delivery, Effect, State, TimerConfig, TimerKind, doubled, linger};

#[derive(Debug)]
pub(crate) struct ClientNonInvite {
    state: State,
    reliable: bool,
    request: Rc<[u8]>,
    /// Timer E's next interval.
    timer_e: Duration,
}

impl ClientNonInvite {
    /// Sends the request: Trying, with Timer E (unreliable transports) and Timer F running.
    pub(crate) fn new(
        request: Rc<[u8]>,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> ClientNonInvite {
        out.push(Effect::Send(request.clone()));
        if !reliable {
            out.push(Effect::Arm(TimerKind::E, config.t1));
        }
        out.push(Effect::Arm(TimerKind::F, config.timeout()));
        ClientNonInvite {
            state: State::Trying,
            reliable,
            request,
            timer_e: config.t1,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn on_response(
        &mut self,
        status: u16,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) -> Delivery {
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                Delivery::ToTu
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                self.state = State::Completed;
                out.push(Effect::Disarm(TimerKind::E));
                out.push(Effect::Disarm(TimerKind::F));
                linger(self.reliable, TimerKind::K, config.t4, out);
                Delivery::ToTu
            }
            // Completed: retransmitted finals are absorbed.
            _ => Delivery::Absorbed,
        }
    }

    pub(crate) fn on_timer(
        &mut self,
        kind: TimerKind,
        config: &TimerConfig,
        out: &mut Vec<Effect>,
    ) {
        match (self.state, kind) {
            (State::Trying, TimerKind::E) => {
                out.push(Effect::Send(self.request.clone()));
                self.timer_e = doubled(self.timer_e, Some(config.t2));
                out.push(Effect::Arm(TimerKind::E, self.timer_e));
            }
            (State::Proceeding, TimerKind::E) => {
                out.push(Effect::Send(self.request.clone()));
                out.push(Effect::Arm(TimerKind::E, config.t2));
            }
            (State::Trying | State::Proceeding, TimerKind::F) => {
                out.push(Effect::Timeout);
                out.push(Effect::Terminate);
            }
            (State::Completed, TimerKind::K) => out.push(Effect::Terminate),
            // Every timer is disarmed when its state is left, so nothing else fires.
            _ => {}
        }
    }

    /// Figure 6: a failed send (Trying or Proceeding, where the request is retransmitted) ends
    /// the transaction; in Completed nothing is being sent.
    pub(crate) fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        if self.state != State::Completed {
            out.push(Effect::TransportError);
            out.push(Effect::Terminate);
        }
    }
}
