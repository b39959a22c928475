//! What every stand-in lets a test turn (up or down, how slow, how long tokens live) and
//! the book of what it issued, so that each stand-in only writes what its API does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{jwt, lock};

/// How long a stand-in holds each answer back, to play a slow server.
#[derive(Debug, Default)]
pub struct Delay {
    millis: AtomicU64,
    /// Answers held back so far (a delay above zero was in force when they were ready).
    held: AtomicU64,
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
            self.held.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }

    /// How many answers were held back so far.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

/// The switches of a stand-in that can be taken down: up or down, and how slow.
#[derive(Debug)]
pub struct Switches {
    available: AtomicBool,
    pub(crate) delay: Delay,
}

impl Default for Switches {
    /// Up, without delay.
    fn default() -> Switches {
        Switches {
            available: AtomicBool::new(true),
            delay: Delay::default(),
        }
    }
}

impl Switches {
    pub(crate) fn is_available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    pub(crate) fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }
}

/// A duration a test may change while the stand-in runs (a token or nonce lifetime).
#[derive(Debug)]
pub struct Lifetime(Mutex<Duration>);

impl Lifetime {
    pub(crate) fn new(duration: Duration) -> Lifetime {
        Lifetime(Mutex::new(duration))
    }

    pub(crate) fn get(&self) -> Duration {
        *lock(&self.0)
    }

    pub(crate) fn set(&self, duration: Duration) {
        *lock(&self.0) = duration;
    }
}

/// The tokens a provider stand-in issues: their lifetime from now on, and the book of
/// those it issued, each with the details `T` its endpoints judge it by.
#[derive(Debug)]
pub struct Tokens<T> {
    pub(crate) ttl: Lifetime,
    book: Mutex<TokenBook<T>>,
}

impl<T> Tokens<T> {
    pub(crate) fn new(ttl: Duration) -> Tokens<T> {
        Tokens {
            ttl: Lifetime::new(ttl),
            book: Mutex::new(TokenBook::default()),
        }
    }

    pub(crate) fn book(&self) -> MutexGuard<'_, TokenBook<T>> {
        lock(&self.book)
    }

    /// Mint a token valid for the current lifetime (`mint` is given it), record it with
    /// `details`, and return it with that lifetime.
    pub(crate) fn issue(
        &self,
        mint: impl FnOnce(Duration) -> String,
        details: T,
    ) -> (String, Duration) {
        let ttl = self.ttl.get();
        let token = mint(ttl);
        self.book()
            .record(token.clone(), Instant::now() + ttl, details);
        (token, ttl)
    }
}

/// The two kinds of token of a provider that issues refresh tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Access,
    Refresh,
}

/// What a provider that issues refresh tokens keeps about each token: its kind, and what
/// it was granted for (which a refresh carries over to the new tokens).
#[derive(Debug)]
pub struct Paired<G> {
    pub(crate) kind: Kind,
    pub(crate) grant: G,
}

/// An access token, its lifetime, and the refresh token issued with it, with its own.
pub(crate) struct Pair {
    pub(crate) access: String,
    pub(crate) ttl: Duration,
    pub(crate) refresh: Option<(String, Duration)>,
}

impl<G: Clone> Tokens<Paired<G>> {
    /// Mint an access token for the current lifetime and, with a `refresh_ttl`, an opaque
    /// refresh token living that long; record both for `grant`.
    pub(crate) fn issue_pair(
        &self,
        mint: impl FnOnce(Duration) -> String,
        refresh_ttl: Option<Duration>,
        grant: G,
    ) -> Pair {
        let ttl = self.ttl.get();
        let now = Instant::now();
        let access = mint(ttl);
        let refresh = refresh_ttl.map(|refresh_ttl| (jwt::opaque_token(), refresh_ttl));
        let mut book = self.book();
        let paired = |kind, grant| Paired { kind, grant };
        book.record(
            access.clone(),
            now + ttl,
            paired(Kind::Access, grant.clone()),
        );
        if let Some((token, refresh_ttl)) = &refresh {
            book.record(
                token.clone(),
                now + *refresh_ttl,
                paired(Kind::Refresh, grant),
            );
        }
        Pair {
            access,
            ttl,
            refresh,
        }
    }

    /// Spend the refresh token `value` if `check` accepts what it was granted for: retire
    /// it and return that grant, for the new tokens.
    pub(crate) fn spend_refresh<E>(
        &self,
        value: &str,
        unspendable: impl FnOnce(Unspendable) -> E,
        check: impl FnOnce(&G) -> Result<(), E>,
    ) -> Result<G, E> {
        let mut book = self.book();
        let issued = book
            .spendable(value, |facts| facts.kind == Kind::Refresh)
            .map_err(unspendable)?;
        check(&issued.details.grant)?;
        issued.retired = true;
        Ok(issued.details.grant.clone())
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

/// Why a single-use value (a refresh token, a nonce) cannot be spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unspendable {
    Unknown,
    /// Issued here, but its details say it is not of the kind asked for.
    WrongKind,
    /// Revoked or already used.
    Retired,
    Expired,
}

/// Every token (or nonce) a stand-in issued: the order for the tests that list them, the
/// map for the look-ups its endpoints make.
#[derive(Debug)]
pub struct TokenBook<T> {
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

    /// The entry of a single-use `value` of the kind `is_kind` accepts, if it can still be
    /// spent; the caller retires it once it has checked what else it must.
    pub(crate) fn spendable(
        &mut self,
        value: &str,
        is_kind: impl Fn(&T) -> bool,
    ) -> Result<&mut Issued<T>, Unspendable> {
        let issued = self.by_value.get_mut(value).ok_or(Unspendable::Unknown)?;
        if !is_kind(&issued.details) {
            Err(Unspendable::WrongKind)
        } else if issued.retired {
            Err(Unspendable::Retired)
        } else if Instant::now() >= issued.expires_at {
            Err(Unspendable::Expired)
        } else {
            Ok(issued)
        }
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
        book.retire_where(|_| true);
        assert_eq!(book.live("a"), None);
        assert_eq!(book.issued(), ["a", "b", "c"]);
    }

    #[test]
    fn spendable_says_why_not() {
        let mut book = TokenBook::default();
        let later = Instant::now() + Duration::from_secs(60);
        book.record("odd".to_owned(), later, 1);
        book.record("even".to_owned(), later, 2);
        book.record("old".to_owned(), Instant::now(), 2);
        let even = |n: &i32| n % 2 == 0;
        let why = |book: &mut TokenBook<i32>, value| book.spendable(value, even).err();
        assert_eq!(why(&mut book, "never"), Some(Unspendable::Unknown));
        assert_eq!(why(&mut book, "odd"), Some(Unspendable::WrongKind));
        assert_eq!(why(&mut book, "old"), Some(Unspendable::Expired));
        assert_eq!(why(&mut book, "even"), None);
        book.spendable("even", even).unwrap().retired = true;
        assert_eq!(why(&mut book, "even"), Some(Unspendable::Retired));
    }

    #[test]
    fn a_huge_delay_saturates() {
        let delay = Delay::default();
        delay.set(Duration::MAX);
        assert_eq!(delay.millis.load(Ordering::SeqCst), u64::MAX);
    }
}
