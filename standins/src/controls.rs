//! What every stand-in lets a test turn (up or down, how slow, how long tokens live) and
//! the book of what it issued, so that each stand-in only writes what its API does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::Response;

use crate::lock;

/// How long a stand-in holds each answer back, to play a slow server.
#[derive(Debug, Default)]
pub(crate) struct Delay {
    millis: AtomicU64,
}

impl Delay {
    /// Zero answers at once; a delay past `u64::MAX` milliseconds is held at that.
    pub(crate) fn set(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::SeqCst);
    }

    pub(crate) async fn sleep(&self) {
        let millis = self.millis.load(Ordering::SeqCst);
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }
}

/// The switches of a provider stand-in that issues tokens.
#[derive(Debug)]
pub(crate) struct Controls {
    available: AtomicBool,
    delay: Delay,
    token_ttl: Mutex<Duration>,
}

impl Controls {
    /// Up, without delay.
    pub(crate) fn new(token_ttl: Duration) -> Controls {
        Controls {
            available: AtomicBool::new(true),
            delay: Delay::default(),
            token_ttl: Mutex::new(token_ttl),
        }
    }

    pub(crate) fn is_available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    pub(crate) fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay.set(delay);
    }

    pub(crate) fn token_ttl(&self) -> Duration {
        *lock(&self.token_ttl)
    }

    pub(crate) fn set_token_ttl(&self, ttl: Duration) {
        *lock(&self.token_ttl) = ttl;
    }

    /// `response`, after the delay. The answer is decided on arrival and only handed back
    /// late, which is how the stand-ins document their delay.
    pub(crate) async fn delayed(&self, response: Response) -> Response {
        self.delay.sleep().await;
        response
    }
}

/// One value a stand-in handed out, with what it needs to judge it later.
#[derive(Debug)]
pub(crate) struct Issued<T> {
    pub(crate) expires_at: Instant,
    /// Revoked, ended, or (single-use values) already used: never valid again.
    pub(crate) retired: bool,
    pub(crate) details: T,
}

impl<T> Issued<T> {
    pub(crate) fn is_live(&self) -> bool {
        !self.retired && Instant::now() < self.expires_at
    }
}

/// Every token (or nonce) a stand-in issued: the order for the tests that list them, the
/// map for the look-ups its endpoints make.
#[derive(Debug)]
pub(crate) struct TokenBook<T> {
    order: Vec<String>,
    by_value: HashMap<String, Issued<T>>,
}

// Not derived: the derive would ask `T: Default`, which the details need not be.
impl<T> Default for TokenBook<T> {
    fn default() -> Self {
        TokenBook {
            order: Vec::new(),
            by_value: HashMap::new(),
        }
    }
}

impl<T> TokenBook<T> {
    pub(crate) fn record(&mut self, value: String, expires_at: Instant, details: T) {
        self.order.push(value.clone());
        self.by_value.insert(
            value,
            Issued {
                expires_at,
                retired: false,
                details,
            },
        );
    }

    /// Oldest first.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.order.clone()
    }

    /// The details of `value` if it was issued here, has not expired and is not retired.
    pub(crate) fn live(&self, value: &str) -> Option<&T> {
        self.by_value
            .get(value)
            .filter(|issued| issued.is_live())
            .map(|issued| &issued.details)
    }

    pub(crate) fn get_mut(&mut self, value: &str) -> Option<&mut Issued<T>> {
        self.by_value.get_mut(value)
    }

    pub(crate) fn retire_all(&mut self) {
        self.retire_where(|_| true);
    }

    pub(crate) fn retire_where(&mut self, applies: impl Fn(&T) -> bool) {
        for issued in self.by_value.values_mut() {
            if applies(&issued.details) {
                issued.retired = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_is_issued_unexpired_and_not_retired() {
        let mut book = TokenBook::default();
        let later = Instant::now() + Duration::from_secs(60);
        book.record("a".to_owned(), later, 1);
        book.record("b".to_owned(), Instant::now(), 2);
        book.record("c".to_owned(), later, 3);
        assert_eq!(book.live("a"), Some(&1));
        assert_eq!(book.live("b"), None, "expired");
        assert_eq!(book.live("never"), None);
        book.retire_where(|n| *n == 3);
        assert_eq!(book.live("c"), None);
        assert_eq!(book.live("a"), Some(&1));
        book.retire_all();
        assert_eq!(book.live("a"), None);
        assert_eq!(book.issued(), ["a", "b", "c"]);
    }

    #[test]
    fn a_huge_delay_saturates() {
        let delay = Delay::default();
        delay.set(Duration::MAX);
        assert_eq!(delay.millis.load(Ordering::SeqCst), u64::MAX);
    }
}
