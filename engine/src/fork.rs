//! The response context of a forked request (RFC 3261 §16.7): which branch responses go
//! upstream at once, which wait, and which final response wins when every branch is done.
//!
//! Pure bookkeeping over status codes and branch indices; the core keeps the response bytes and
//! carries the verdicts out.

/// What to do with a response a branch just delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it upstream now: a provisional other than 100, or a 2xx (§16.7 steps 5, 10).
    ForwardNow,
    /// Keep it as a candidate final response (non-2xx finals wait for every branch).
    Store,
    /// Nothing to forward: a 100 (hop-by-hop, §16.7 step 5) or anything after a final went up.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    /// No final response yet.
    Pending {
        provisional: bool,
    },
    Finished,
}

/// The state of one forked request.
#[derive(Debug, Clone)]
pub struct Fork {
    branches: Vec<Branch>,
    /// The best stored final response so far: (branch, status).
    best: Option<(usize, u16)>,
    /// A 2xx went upstream; later non-2xx are dropped (§16.7 step 10).
    answered: bool,
    /// A 6xx arrived: the other branches are being cancelled (§16.7 step 5).
    global_failure: bool,
}

impl Fork {
    pub fn new(branches: usize) -> Fork {
        Fork {
            branches: vec![Branch::Pending { provisional: false }; branches],
            best: None,
            answered: false,
            global_failure: false,
        }
    }

    /// Records a response from `branch` and says what to do with it.
    pub fn on_response(&mut self, branch: usize, status: u16) -> Verdict {
        let Some(state) = self.branches.get_mut(branch) else {
            return Verdict::Drop;
        };
        if status < 200 {
            if let Branch::Pending { provisional } = state {
                *provisional = true;
            }
            return if status == 100 || self.answered {
                Verdict::Drop
            } else {
                Verdict::ForwardNow
            };
        }
        *state = Branch::Finished;
        if (200..300).contains(&status) {
            // Every 2xx goes upstream, even after the first (§16.7 step 5).
            self.answered = true;
            return Verdict::ForwardNow;
        }
        if self.answered {
            return Verdict::Drop;
        }
        if status >= 600 {
            self.global_failure = true;
        }
        if self.best.is_none_or(|(_, best)| better(status, best)) {
            self.best = Some((branch, status));
        }
        Verdict::Store
    }

    /// A branch ended without a final response: Timer B/F (408) or a transport error (503).
    /// The core stores a synthesized response for it when this returns `Store`.
    pub fn on_failure(&mut self, branch: usize, status: u16) -> Verdict {
        self.on_response(branch, status)
    }

    /// Branches to CANCEL now: the ones still pending once a 2xx or 6xx arrived (§16.7 step
    /// 5 and 10). Only branches that received a provisional response can be cancelled (§9.1);
    /// the others are cancelled when their first provisional arrives.
    pub fn branches_to_cancel(&self) -> Vec<usize> {
        if !(self.answered || self.global_failure) {
            return Vec::new();
        }
        self.branches
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, Branch::Pending { provisional: true }))
            .map(|(i, _)| i)
            .collect()
    }

    /// True for a branch that has received nothing yet: Timer C ends it as a 408 (§16.8).
    pub fn is_silent(&self, branch: usize) -> bool {
        self.branches.get(branch) == Some(&Branch::Pending { provisional: false })
    }

    /// True once a 2xx or 6xx made the remaining branches pointless.
    pub fn is_cancelling(&self) -> bool {
        self.answered || self.global_failure
    }

    /// True when every branch has a final response (or failed).
    pub fn all_finished(&self) -> bool {
        self.branches.iter().all(|b| *b == Branch::Finished)
    }

    /// The final response to send upstream when all branches finished and none answered 2xx:
    /// the branch whose stored response wins. `None` if a 2xx already went up.
    pub fn winner(&self) -> Option<(usize, u16)> {
        if self.answered { None } else { self.best }
    }

    pub fn is_answered(&self) -> bool {
        self.answered
    }
}

/// True when final response `a` beats `b` (§16.7 step 6): any 6xx wins; otherwise the lowest
/// class; within 4xx, responses that let the caller retry (401, 407, 415, 420, 484) win.
fn better(a: u16, b: u16) -> bool {
    let rank = |s: u16| {
        let class = s / 100;
        let class_rank = if class == 6 { 0 } else { class };
        let retry_hint = u16::from(!matches!(s, 401 | 407 | 415 | 420 | 484));
        (class_rank, retry_hint)
    };
    rank(a) < rank(b)
}

/// The status sent upstream for a winning branch status: 503 becomes 500 (§16.7 step 6), since
/// the proxy itself is not unavailable.
pub fn upstream_status(status: u16) -> u16 {
    if status == 503 { 500 } else { status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisionals_and_2xx_go_up_at_once_100_never() {
        let mut f = Fork::new(2);
        assert_eq!(f.on_response(0, 100), Verdict::Drop);
        assert_eq!(f.on_response(0, 180), Verdict::ForwardNow);
        assert_eq!(f.on_response(1, 183), Verdict::ForwardNow);
        assert_eq!(f.on_response(0, 200), Verdict::ForwardNow);
        assert_eq!(
            f.branches_to_cancel(),
            vec![1],
            "the other ringing branch is cancelled"
        );
        assert_eq!(f.on_response(1, 487), Verdict::Drop);
        assert!(f.all_finished());
        assert_eq!(f.winner(), None);
    }

    #[test]
    fn the_best_final_response_wins_when_all_branches_fail() {
        let mut f = Fork::new(3);
        assert_eq!(f.on_response(0, 486), Verdict::Store);
        assert_eq!(f.on_failure(1, 408), Verdict::Store);
        assert!(!f.all_finished());
        assert_eq!(f.on_response(2, 302), Verdict::Store);
        assert!(f.all_finished());
        assert_eq!(f.winner(), Some((2, 302)), "lowest class wins");

        let mut f = Fork::new(2);
        f.on_response(0, 404);
        f.on_response(1, 407);
        assert_eq!(f.winner(), Some((1, 407)), "a challenge beats a plain 4xx");

        let mut f = Fork::new(2);
        f.on_response(0, 302);
        f.on_response(1, 603);
        assert_eq!(f.winner(), Some((1, 603)), "6xx beats everything");
        assert!(f.is_cancelling());
    }

    #[test]
    fn a_6xx_cancels_ringing_branches() {
        let mut f = Fork::new(3);
        f.on_response(0, 180);
        f.on_response(1, 100);
        assert_eq!(f.on_response(2, 603), Verdict::Store);
        // Branch 1 sent only a 100: it is provisional too, and can be cancelled.
        assert_eq!(f.branches_to_cancel(), vec![0, 1]);
        assert_eq!(upstream_status(503), 500);
        assert_eq!(upstream_status(486), 486);
    }
}
