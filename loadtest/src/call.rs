//! The UAC side of the `call` scenario after the INVITE's final response, sans-IO like `client`:
//! the shell hands it the INVITE client's outcomes and the time, and a `send` function; it ACKs
//! (every 2xx, retransmitted ones too, with a new branch; every 3xx–6xx with the INVITE's
//! branch), holds each call for `hold` and then sends its BYE through a second non-INVITE
//! `Client` (branches `...b-<j>`), whose latency is measured from when the BYE was due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use hdrhistogram::Histogram;
use sipshard_net::Message;

use crate::client::{Client, Counts, Received, Timers};
use crate::report;
use crate::scenario::{Ack, Dialog, Endpoints, Scenario, write_ack, write_bye};

pub struct Calls {
    /// The run's id, for the ACK branches.
    run: u32,
    hold_ns: u64,
    bye: Client,
    /// (due, j): BYEs waiting for their call's hold to end.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    dialogs: HashMap<u64, Dialog>,
    pub bye_corrected: Histogram<u64>,
    pub bye_uncorrected: Histogram<u64>,
    pub acks: u64,
    /// 2xx responses without a To tag or a Contact: the call cannot go on (no ACK, no BYE).
    pub no_dialog: u64,
}

impl Calls {
    /// `reliable`: over TCP or TLS, BYEs are not retransmitted (Timer F still ends them).
    pub fn new(run: u32, hold_ms: u64, timers: Timers, reliable: bool) -> Calls {
        let bye = Client::with_kind(run, "b", false, timers);
        Calls {
            run,
            hold_ns: hold_ms.saturating_mul(1_000_000),
            bye: if reliable {
                bye.over_reliable_transport()
            } else {
                bye
            },
            due: BinaryHeap::new(),
            dialogs: HashMap::new(),
            bye_corrected: report::new_histogram(),
            bye_uncorrected: report::new_histogram(),
            acks: 0,
            no_dialog: 0,
        }
    }

    pub fn bye_counts(&self) -> &Counts {
        self.bye.counts()
    }

    /// Whether a received datagram is a response to one of the BYEs.
    pub fn claims(&self, datagram: &[u8]) -> bool {
        self.bye.claims(datagram)
    }

    /// A final response (first or retransmitted: `first`) ended INVITE `j`, sent with
    /// `invite_branch`. ACKs it; a first 2xx also schedules the BYE.
    #[allow(clippy::too_many_arguments)]
    pub fn invite_ended(
        &mut self,
        scenario: &Scenario,
        ends: &Endpoints,
        j: u64,
        invite_branch: &str,
        response: &[u8],
        first: bool,
        now: u64,
        mut send: impl FnMut(&[u8]),
    ) {
        let Ok(msg) = Message::parse_datagram(response) else {
            return;
        };
        let Some(status) = msg.status() else {
            return;
        };
        let mut out = Vec::with_capacity(512);
        if (200..300).contains(&status) {
            let dialog = match Dialog::from_2xx(&msg) {
                Ok(d) => d,
                Err(_) => {
                    if first {
                        self.no_dialog += 1;
                    }
                    return;
                }
            };
            let branch = format!("z9hG4bK-sl{:08x}a-{j}", self.run);
            let ack = Ack::Success {
                dialog: &dialog,
                branch: &branch,
            };
            write_ack(&mut out, scenario, ends, j, invite_branch, ack);
            if first {
                self.due
                    .push(Reverse((now.saturating_add(self.hold_ns), j)));
                self.dialogs.insert(j, dialog);
            }
        } else {
            let Some(to) = msg
                .headers()
                .find(|h| h.name == sipshard_net::HeaderName::To)
                .and_then(|h| std::str::from_utf8(h.value).ok())
            else {
                return;
            };
            write_ack(
                &mut out,
                scenario,
                ends,
                j,
                invite_branch,
                Ack::Failure { to },
            );
        }
        send(&out);
        self.acks += 1;
    }

    /// Sends the BYEs due at `now`; `invite_branch(j)` gives each call's INVITE branch.
    pub fn send_due(
        &mut self,
        ends: &Endpoints,
        now: u64,
        invite_branch: impl Fn(u64) -> String,
        mut send: impl FnMut(&[u8]),
    ) {
        while let Some(&Reverse((due, j))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            if let Some(dialog) = self.dialogs.remove(&j) {
                let mut request = Vec::with_capacity(512);
                let branch = self.bye.branch(j);
                write_bye(&mut request, ends, j, &invite_branch(j), &branch, &dialog);
                send(&request);
                self.bye.sent(j, due, now, request);
            }
        }
    }

    /// A response to a BYE arrived.
    pub fn received(&mut self, datagram: &[u8], now: u64, issued: impl Fn(u64) -> bool) {
        if let Received::Final(done) = self.bye.received(datagram, now, issued) {
            report::record(&mut self.bye_corrected, done.latency);
            report::record(&mut self.bye_uncorrected, done.service_time);
        }
    }

    /// BYE retransmissions and timeouts.
    pub fn poll(&mut self, now: u64, send: impl FnMut(&[u8])) {
        self.bye.poll(now, send);
    }

    pub fn next_timer(&self) -> Option<u64> {
        let due = self.due.peek().map(|Reverse((when, _))| *when);
        [due, self.bye.next_timer()].into_iter().flatten().min()
    }

    /// Calls still holding or with a BYE outstanding.
    pub fn outstanding(&self) -> usize {
        self.dialogs.len() + self.bye.outstanding()
    }
}
