//! The guard on renewals the upstream drives. An upstream status in `on_upstream_status`
//! purges the token that was sent and gets a new one, which recovers a revoked token in one
//! step. But an upstream that refuses every token (wrong audience, a revoked client, an
//! endpoint that answers 401 for its own reasons) would turn every caller request into a
//! login. So when the token that replaced a rejected one is rejected too, renewing did not
//! help: rejections stop purging for a backoff period that grows with each such round
//! (`min_backoff` to `max_backoff`), and callers get the upstream's own answer. An upstream
//! that accepts a token again ends it.

use std::time::{Duration, Instant};

use super::backoff;
use crate::config::RefreshPolicy;

#[derive(Debug, Default)]
pub(super) struct RejectionGuard {
    /// A rejected token was purged; the next token obtained replaces it.
    awaiting_replacement: bool,
    /// The token that replaced a rejected one: its own rejection means renewing did not help.
    replacement: Option<u64>,
    /// Rounds in a row in which the replacement was rejected too.
    consecutive: u32,
    paused_until: Option<Instant>,
}

/// What a rejection does to the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Purge it (if it is still the one in use) and renew.
    Purge,
    /// Keep it: renewals on rejection are paused.
    Keep,
    /// Keep it, and pause renewals on rejection for this long from now.
    Pause(Duration),
}

impl RejectionGuard {
    pub(super) fn on_rejection(
        &mut self,
        token_id: u64,
        now: Instant,
        policy: &RefreshPolicy,
    ) -> Verdict {
        if self.paused_until.is_some_and(|until| now < until) {
            return Verdict::Keep;
        }
        if self.replacement == Some(token_id) {
            self.consecutive = self.consecutive.saturating_add(1);
            // After the pause, this token may be purged and renewed once more.
            self.replacement = None;
            let pause = backoff::delay(policy, self.consecutive);
            self.paused_until = Some(now + pause);
            return Verdict::Pause(pause);
        }
        Verdict::Purge
    }

    /// The rejected token was purged.
    pub(super) fn purged(&mut self) {
        self.awaiting_replacement = true;
    }

    /// A new token is in use.
    pub(super) fn token_obtained(&mut self, token_id: u64) {
        if std::mem::take(&mut self.awaiting_replacement) {
            self.replacement = Some(token_id);
        }
    }

    /// The upstream accepted a token: renewing works again.
    pub(super) fn accepted(&mut self) {
        *self = RejectionGuard {
            awaiting_replacement: self.awaiting_replacement,
            ..RejectionGuard::default()
        };
    }

    /// Whether an accepted request has anything to reset.
    pub(super) fn is_engaged(&self) -> bool {
        self.replacement.is_some() || self.consecutive > 0 || self.paused_until.is_some()
    }

    /// Rounds in a row in which a fresh token was rejected too.
    pub(super) fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// How long renewals on rejection stay paused.
    pub(super) fn pause_left(&self, now: Instant) -> Option<Duration> {
        self.paused_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RefreshPolicy {
        backoff::test_policy()
    }

    #[test]
    fn a_first_rejection_purges() {
        let mut guard = RejectionGuard::default();
        assert_eq!(
            guard.on_rejection(1, Instant::now(), &policy()),
            Verdict::Purge
        );
    }

    #[test]
    fn the_replacement_rejected_too_pauses_renewals_for_a_growing_time() {
        let mut guard = RejectionGuard::default();
        let start = Instant::now();
        assert_eq!(guard.on_rejection(1, start, &policy()), Verdict::Purge);
        guard.purged();
        guard.token_obtained(2);
        assert_eq!(
            guard.on_rejection(2, start, &policy()),
            Verdict::Pause(Duration::from_secs(1))
        );
        // While paused, nothing is purged.
        assert_eq!(guard.on_rejection(2, start, &policy()), Verdict::Keep);
        assert_eq!(guard.pause_left(start), Some(Duration::from_secs(1)));
        // After the pause, one more renewal; its token rejected too: a longer pause.
        let later = start + Duration::from_secs(1);
        assert_eq!(guard.on_rejection(2, later, &policy()), Verdict::Purge);
        guard.purged();
        guard.token_obtained(3);
        let Verdict::Pause(second) = guard.on_rejection(3, later, &policy()) else {
            panic!("the second replacement was purged");
        };
        assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2));
        assert_eq!(guard.consecutive(), 2);
    }

    #[test]
    fn an_accepted_token_ends_the_guard() {
        let mut guard = RejectionGuard::default();
        let now = Instant::now();
        guard.on_rejection(1, now, &policy());
        guard.purged();
        guard.token_obtained(2);
        assert!(guard.is_engaged());
        guard.accepted();
        assert!(!guard.is_engaged());
        // A later genuine revocation of the accepted token is renewed at once.
        assert_eq!(guard.on_rejection(2, now, &policy()), Verdict::Purge);
    }

    #[test]
    fn a_token_obtained_for_another_reason_is_no_replacement() {
        let mut guard = RejectionGuard::default();
        guard.token_obtained(5);
        assert_eq!(
            guard.on_rejection(5, Instant::now(), &policy()),
            Verdict::Purge
        );
    }
}
