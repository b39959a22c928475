//! Exponential backoff with jitter between failed provider calls.

use std::time::Duration;

use rand::Rng;

use crate::config::RefreshPolicy;

/// Delay before the next attempt after `failures` consecutive failures (1 = the first):
/// `min_backoff * 2^(failures-1)`, capped at `max_backoff`, then drawn from its upper half
/// so that many gateways do not retry in step.
pub fn delay(policy: &RefreshPolicy, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = policy
        .min_backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    let floor = (ceiling / 2).max(policy.min_backoff.min(ceiling));
    if floor >= ceiling {
        return ceiling;
    }
    rand::rng().random_range(floor..=ceiling)
}

/// Backoffs from 1 s to 8 s: the policy of the backoff and rejection guard tests.
#[cfg(test)]
pub(super) fn test_policy() -> RefreshPolicy {
    RefreshPolicy {
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        ..RefreshPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RefreshPolicy {
        test_policy()
    }

    #[test]
    fn grows_then_stays_under_the_cap() {
        for _ in 0..50 {
            assert_eq!(delay(&policy(), 1), Duration::from_secs(1));
            let second = delay(&policy(), 2);
            assert!(second >= Duration::from_secs(1) && second <= Duration::from_secs(2));
            let fourth = delay(&policy(), 4);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8));
            let many = delay(&policy(), 40);
            assert!(many >= Duration::from_secs(4) && many <= Duration::from_secs(8));
        }
    }
}
