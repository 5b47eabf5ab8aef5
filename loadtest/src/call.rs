//! The UAC side of the `call` scenario after the INVITE's final response, sans-IO like `client`:
//! the shell hands it the INVITE client's outcomes and the time, and a `send` function; it ACKs
//! (every 2xx, retransmitted ones too, with a new branch; every 3xx–6xx with the INVITE's
//! branch, a 407 challenge too), holds each call for `hold` and then sends its BYE through a
//! second non-INVITE `Client` (branches `...b-<j>`), whose latency is measured from when the BYE
//! was due.
//!
//! A BYE is in-dialog, so a proxy that authenticates calls does not challenge it (RFC 3261
//! §22.1 leaves it to the proxy; Flexisip and sipshard exempt requests with a To tag). If one is
//! challenged anyway, it is resent once with credentials (§22.2: CSeq + 1, a new branch) through
//! a third `Client` (branches `...c-<j>`), counted as the first REGISTERs are: `challenged`, and
//! the resent BYE's outcome in its place.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use hdrhistogram::Histogram;
use sipshard_net::Message;

use crate::client::{Client, Counts, Received, Timers};
use crate::report;
use crate::scenario::{Ack, Dialog, Endpoints, Scenario, write_ack, write_bye};

pub struct Calls {
    /// The run's id, for the ACK branches.
    run: u32,
    hold_ns: u64,
    /// Timer F: how long a BYE's dialog is kept for a challenge to it.
    timeout_ns: u64,
    bye: Client,
    /// BYEs resent with credentials after a challenge.
    bye_authed: Client,
    /// (due, j): BYEs waiting for their call's hold to end.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    /// The dialogs of calls holding.
    dialogs: HashMap<u64, Dialog>,
    /// The dialogs whose BYE is outstanding (to resend it on a challenge) and the BYE's CSeq,
    /// until its final response or its Timer F: `forget` holds (when, j) in time order.
    byes: HashMap<u64, (Dialog, u32)>,
    forget: VecDeque<(u64, u64)>,
    pub bye_corrected: Histogram<u64>,
    pub bye_uncorrected: Histogram<u64>,
    /// ACKs sent: to every final response (2xx, challenges and failures), retransmitted ones
    /// too.
    pub acks: u64,
    /// 2xx responses without a To tag or a Contact: the call cannot go on (no ACK, no BYE).
    pub no_dialog: u64,
}

impl Calls {
    /// `reliable`: over TCP or TLS, BYEs are not retransmitted (Timer F still ends them).
    pub fn new(run: u32, hold_ms: u64, timers: Timers, reliable: bool) -> Calls {
        let client = |kind| {
            let c = Client::with_kind(run, kind, false, timers);
            if reliable {
                c.over_reliable_transport()
            } else {
                c
            }
        };
        Calls {
            run,
            hold_ns: hold_ms.saturating_mul(1_000_000),
            timeout_ns: timers.timeout(),
            bye: client("b"),
            bye_authed: client("c"),
            due: BinaryHeap::new(),
            dialogs: HashMap::new(),
            byes: HashMap::new(),
            forget: VecDeque::new(),
            bye_corrected: report::new_histogram(),
            bye_uncorrected: report::new_histogram(),
            acks: 0,
            no_dialog: 0,
        }
    }

    /// The BYEs' counts: a challenged BYE's outcome is its resent one's.
    pub fn bye_counts(&self) -> Counts {
        self.bye.counts().with_resent(self.bye_authed.counts())
    }

    /// Whether a received datagram is a response to one of the BYEs.
    pub fn claims(&self, datagram: &[u8]) -> bool {
        self.bye.claims(datagram) || self.bye_authed.claims(datagram)
    }

    /// A final response (first or retransmitted: `first`) ended INVITE `j`. ACKs it; a first
    /// 2xx also schedules the BYE.
    #[allow(clippy::too_many_arguments)]
    pub fn invite_ended(
        &mut self,
        scenario: &Scenario,
        ends: &Endpoints,
        j: u64,
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
            // Kind `k`: unlike any request's branch (an ACK to a 2xx is a transaction of its
            // own, §17.1.1.3, which a proxy must not match to an INVITE).
            let branch = format!("z9hG4bK-sl{:08x}k-{j}", self.run);
            let ack = Ack::Success {
                dialog: &dialog,
                branch: &branch,
            };
            if write_ack(&mut out, scenario, ends, j, ack).is_none() {
                return;
            }
            if first {
                self.due
                    .push(Reverse((now.saturating_add(self.hold_ns), j)));
                self.dialogs.insert(j, dialog);
            }
        } else if write_ack(&mut out, scenario, ends, j, Ack::Failure { response: &msg }).is_none()
        {
            return;
        }
        send(&out);
        self.acks += 1;
    }

    /// Sends the BYEs due at `now`.
    pub fn send_due(&mut self, ends: &Endpoints, now: u64, mut send: impl FnMut(&[u8])) {
        self.forget_byes(now);
        while let Some(&Reverse((due, j))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            if let Some(dialog) = self.dialogs.remove(&j) {
                let mut request = Vec::with_capacity(512);
                let cseq = dialog.cseq.saturating_add(1);
                write_bye(&mut request, ends, &self.bye.branch(j), &dialog, cseq, None);
                send(&request);
                self.bye.sent(j, due, now, request);
                self.byes.insert(j, (dialog, cseq));
                self.forget
                    .push_back((now.saturating_add(self.timeout_ns), j));
            }
        }
    }

    /// Drops the dialogs of BYEs whose Timer F has fired.
    fn forget_byes(&mut self, now: u64) {
        while let Some(&(when, j)) = self.forget.front() {
            if when > now {
                break;
            }
            self.forget.pop_front();
            self.byes.remove(&j);
        }
    }

    /// A response to a BYE arrived. A 401/407 to a first BYE is answered once with
    /// `authorize`'s credentials, the BYE resent through `send`: `authorize(j, method,
    /// request_uri, challenge)` gives the header (name, value) carrying them, or `None` when
    /// there are none to give.
    pub fn received(
        &mut self,
        ends: &Endpoints,
        datagram: &[u8],
        now: u64,
        issued: impl Fn(u64) -> bool,
        authorize: impl FnOnce(u64, &str, &str, &Message<'_>) -> Option<(&'static str, String)>,
        mut send: impl FnMut(&[u8]),
    ) {
        let done = if self.bye_authed.claims(datagram) {
            match self.bye_authed.received(datagram, now, issued) {
                Received::Final(done) => done,
                _ => return,
            }
        } else {
            let Received::Final(done) = self.bye.received(datagram, now, issued) else {
                return;
            };
            let byes = &mut self.byes;
            let resent = matches!(done.status, 401 | 407)
                .then(|| byes.remove(&done.j))
                .flatten()
                .and_then(|(dialog, cseq)| {
                    let msg = Message::parse_datagram(datagram).ok()?;
                    let (name, value) = authorize(done.j, "BYE", &dialog.target, &msg)?;
                    let mut request = Vec::with_capacity(768);
                    let branch = self.bye_authed.branch(done.j);
                    let cseq = cseq.saturating_add(1);
                    write_bye(
                        &mut request,
                        ends,
                        &branch,
                        &dialog,
                        cseq,
                        Some((name, &value)),
                    );
                    Some(request)
                });
            if let Some(request) = resent {
                send(&request);
                self.bye.challenged();
                let (intended, origin) = (
                    now.saturating_sub(done.latency),
                    now.saturating_sub(done.service_time),
                );
                self.bye_authed
                    .resent(done.j, intended, origin, now, request);
                return;
            }
            done
        };
        self.byes.remove(&done.j);
        report::record(&mut self.bye_corrected, done.latency);
        report::record(&mut self.bye_uncorrected, done.service_time);
    }

    /// BYE retransmissions and timeouts.
    pub fn poll(&mut self, now: u64, mut send: impl FnMut(&[u8])) {
        self.bye.poll(now, &mut send);
        self.bye_authed.poll(now, &mut send);
        self.forget_byes(now);
    }

    pub fn next_timer(&self) -> Option<u64> {
        let due = self.due.peek().map(|Reverse((when, _))| *when);
        [due, self.bye.next_timer(), self.bye_authed.next_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Calls still holding or with a BYE outstanding.
    pub fn outstanding(&self) -> usize {
        self.dialogs.len() + self.bye.outstanding() + self.bye_authed.outstanding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Transport;
    use crate::users::UserPattern;

    const MS: u64 = 1_000_000;

    fn setup() -> (Calls, Scenario, Endpoints) {
        let calls = Calls::new(7, 10, Timers::RFC3261, false);
        let scenario = Scenario::Call {
            users: UserPattern::parse("u%d", 0, 10).unwrap().into(),
            hold_ms: 10,
            from_users: true,
        };
        let ends = Endpoints {
            local: "127.0.0.1:5070".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
            domain: "example.org".into(),
            transport: Transport::Udp,
        };
        (calls, scenario, ends)
    }

    /// A response to `request` (its Via, From, To, Call-ID and CSeq), with `extra` headers.
    fn answer(request: &[u8], status: &str, extra: &str) -> Vec<u8> {
        let text = std::str::from_utf8(request).unwrap();
        let copied: String = text
            .split("\r\n")
            .filter(|l| {
                ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        format!("SIP/2.0 {status}\r\n{copied}{extra}Content-Length: 0\r\n\r\n").into_bytes()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    const CHALLENGE: &str =
        "Proxy-Authenticate: Digest realm=\"example.org\", nonce=\"n1\", qop=\"auth\"\r\n";

    #[test]
    fn a_challenged_invite_is_acked_and_a_challenged_bye_resent_once() {
        let (mut calls, scenario, ends) = setup();
        // The INVITE's 407: ACKed with its branch and CSeq; no call.
        let mut invite = Vec::new();
        crate::scenario::write_request(&mut invite, &scenario, &ends, 3, "z9hG4bK-i-3");
        let challenge = answer(&invite, "407 Proxy Authentication Required", CHALLENGE);
        let mut sent = Vec::new();
        calls.invite_ended(&scenario, &ends, 3, &challenge, false, 0, |b| {
            sent.push(b.to_vec())
        });
        let ack = text(&sent.pop().unwrap());
        assert!(
            ack.starts_with("ACK sip:u3@example.org SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains(";branch=z9hG4bK-i-3;"), "{ack}");
        assert!(ack.contains("CSeq: 1 ACK\r\n"), "{ack}");
        assert_eq!((calls.acks, calls.outstanding()), (1, 0));

        // The 200 to the INVITE resent with credentials (CSeq 2): ACK 2, BYE 3.
        let resent = text(&invite).replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
        let ok = answer(
            resent.as_bytes(),
            "200 OK",
            "Contact: <sip:uas@127.0.0.9:5080>\r\n",
        );
        let ok = text(&ok).replace("To: <sip:u3@example.org>", "To: <sip:u3@example.org>;tag=t");
        calls.invite_ended(&scenario, &ends, 3, ok.as_bytes(), true, 2 * MS, |b| {
            sent.push(b.to_vec())
        });
        let ack = text(&sent.pop().unwrap());
        assert!(
            ack.starts_with("ACK sip:uas@127.0.0.9:5080 SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains(";branch=z9hG4bK-sl00000007k-3;"), "{ack}");
        assert!(ack.contains("CSeq: 2 ACK\r\n"), "{ack}");
        assert_eq!(calls.next_timer(), Some(12 * MS));
        calls.send_due(&ends, 12 * MS, |b| sent.push(b.to_vec()));
        let bye = sent.pop().unwrap();
        let bye_text = text(&bye);
        assert!(bye_text.contains("CSeq: 3 BYE\r\n"), "{bye_text}");
        assert!(
            bye_text.contains("From: <sip:u4@example.org>;tag=3\r\n"),
            "{bye_text}"
        );
        assert!(!bye_text.contains("Authorization"), "{bye_text}");

        // Its 407: the BYE again with the caller's credentials, CSeq 4, a new branch.
        let challenge = answer(&bye, "407 Proxy Authentication Required", CHALLENGE);
        let mut asked = Vec::new();
        calls.received(
            &ends,
            &challenge,
            13 * MS,
            |_| true,
            |j, method, uri, c| {
                asked.push((j, method.to_owned(), uri.to_owned(), c.status()));
                Some(("Proxy-Authorization", "Digest username=\"u4\"".to_owned()))
            },
            |b| sent.push(b.to_vec()),
        );
        assert_eq!(
            asked,
            [(
                3,
                "BYE".to_owned(),
                "sip:uas@127.0.0.9:5080".to_owned(),
                Some(407)
            )]
        );
        let again = sent.pop().unwrap();
        let again_text = text(&again);
        assert!(again_text.contains("CSeq: 4 BYE\r\n"), "{again_text}");
        assert!(
            again_text.contains(";branch=z9hG4bK-sl00000007c-3;"),
            "{again_text}"
        );
        assert!(
            again_text.contains("Proxy-Authorization: Digest username=\"u4\"\r\n"),
            "{again_text}"
        );
        let call_id = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("Call-ID"))
                .map(str::to_owned)
        };
        assert_eq!(call_id(&again_text), call_id(&bye_text));
        assert_eq!(calls.outstanding(), 1);

        // Its 200 ends the call: one BYE, challenged, ok; latency from when it was due.
        calls.received(
            &ends,
            &answer(&again, "200 OK", ""),
            15 * MS,
            |_| true,
            |_, _, _, _| panic!("no challenge"),
            |_| panic!("nothing to send"),
        );
        let c = calls.bye_counts();
        assert_eq!(
            (c.sent, c.ok, c.failed, c.timed_out, c.challenged),
            (1, 1, 0, 0, 1)
        );
        assert_eq!(calls.bye_corrected.len(), 1);
        // From when the BYE was due (12 ms) to the resent one's 200 (15 ms).
        assert!(
            calls
                .bye_corrected
                .equivalent(calls.bye_corrected.max(), 3 * MS)
        );
        assert_eq!(calls.outstanding(), 0);
        assert!(calls.byes.is_empty());
    }

    #[test]
    fn a_bye_challenged_twice_or_without_credentials_fails() {
        for credentials in [true, false] {
            let (mut calls, scenario, ends) = setup();
            let mut invite = Vec::new();
            crate::scenario::write_request(&mut invite, &scenario, &ends, 0, "z9hG4bK-i-0");
            let ok = answer(&invite, "200 OK", "Contact: <sip:uas@127.0.0.9:5080>\r\n");
            let ok =
                text(&ok).replace("To: <sip:u0@example.org>", "To: <sip:u0@example.org>;tag=t");
            calls.invite_ended(&scenario, &ends, 0, ok.as_bytes(), true, 0, |_| {});
            let mut sent = Vec::new();
            calls.send_due(&ends, 10 * MS, |b| sent.push(b.to_vec()));
            let bye = sent.pop().unwrap();
            let challenge = answer(&bye, "407 Proxy Authentication Required", CHALLENGE);
            calls.received(
                &ends,
                &challenge,
                11 * MS,
                |_| true,
                |_, _, _, _| credentials.then(|| ("Proxy-Authorization", "x".to_owned())),
                |b| sent.push(b.to_vec()),
            );
            if credentials {
                let again = sent.pop().unwrap();
                // The resent BYE challenged again: a failure, not answered.
                let challenge = answer(&again, "407 Proxy Authentication Required", CHALLENGE);
                calls.received(
                    &ends,
                    &challenge,
                    12 * MS,
                    |_| true,
                    |_, _, _, _| panic!("answered once only"),
                    |_| panic!("nothing to send"),
                );
            }
            assert!(sent.is_empty());
            let c = calls.bye_counts();
            assert_eq!(
                (c.sent, c.ok, c.failed, c.challenged),
                (1, 0, 1, u64::from(credentials)),
                "{credentials}"
            );
            assert_eq!(calls.outstanding(), 0);
        }
    }

    #[test]
    fn an_unanswered_byes_dialog_is_forgotten_at_timer_f() {
        let (mut calls, scenario, ends) = setup();
        let mut invite = Vec::new();
        crate::scenario::write_request(&mut invite, &scenario, &ends, 0, "z9hG4bK-i-0");
        let ok = answer(&invite, "200 OK", "Contact: <sip:uas@127.0.0.9:5080>\r\n");
        let ok = text(&ok).replace("To: <sip:u0@example.org>", "To: <sip:u0@example.org>;tag=t");
        calls.invite_ended(&scenario, &ends, 0, ok.as_bytes(), true, 0, |_| {});
        calls.send_due(&ends, 10 * MS, |_| {});
        assert_eq!(calls.byes.len(), 1);
        let mut retransmitted = 0;
        calls.poll(10 * MS + 32_000 * MS, |_| retransmitted += 1);
        assert_eq!((calls.byes.len(), calls.outstanding()), (0, 0));
        assert_eq!(calls.bye_counts().timed_out, 1);
        assert!(retransmitted > 0);
    }
}
