//! What one request carries from phase to phase: when it started, its id, and, once a
//! route matched, the [`Exchange`] with that route.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType};

use super::refusal::Refusal;
use crate::inbound::Identity;
use crate::routing::CompiledRoute;
use crate::shutdown::InFlightGuard;
use crate::tokens::{CallerKey, Token, TokenManager};

pub struct RequestContext {
    _in_flight: InFlightGuard,
    pub started: Instant,
    pub request_id: HeaderValue,
    /// Set once a route matched.
    pub exchange: Option<Exchange>,
    /// Why the gateway answers this request itself, set by the phase that decided it and
    /// answered by `fail_to_proxy`.
    pub refusal: Option<Refusal>,
}

/// The matched route, and what the request has gathered on it so far.
pub struct Exchange {
    pub route: Arc<CompiledRoute>,
    /// The token manager of the generation the request started with (reloads swap it).
    pub tokens: Arc<TokenManager>,
    /// What the route's inbound checks established about the caller.
    pub identity: Identity,
    /// The route's credential for the current attempt.
    pub token: Option<Arc<Token>>,
    /// With a per-caller provider: the caller's place in its cache.
    pub caller_key: Option<CallerKey>,
    pub attempt: Attempt,
    pub retry: AuthRetry,
    /// Body bytes read so far, against the route's `max_request_body`.
    pub body_bytes: u64,
    /// The request asks for an upgrade (WebSocket): the route's `upgraded_idle` and
    /// `upgraded_total` apply in place of `read` and `total`.
    pub upgrade: bool,
    /// The upstream accepted the upgrade (101); the connection is counted as open.
    pub upgraded: bool,
}

impl RequestContext {
    pub fn new(in_flight: InFlightGuard) -> Self {
        RequestContext {
            _in_flight: in_flight,
            started: Instant::now(),
            request_id: HeaderValue::from_static("-"),
            exchange: None,
            refusal: None,
        }
    }
}

/// Records `refusal` for `fail_to_proxy` to answer, and gives pingora the error that takes
/// the request there (never retried).
pub fn refuse(slot: &mut Option<Refusal>, refusal: Refusal) -> Box<Error> {
    *slot = Some(refusal);
    let mut error = Error::new(ErrorType::Custom(REFUSED));
    error.set_retry(false);
    error
}

/// The error type of a request the gateway refused itself; the access line shows the
/// refusal's kind instead.
pub const REFUSED: &str = "refused";

impl Exchange {
    pub fn new(route: Arc<CompiledRoute>, tokens: Arc<TokenManager>) -> Self {
        Exchange {
            route,
            tokens,
            identity: Identity::default(),
            token: None,
            caller_key: None,
            attempt: Attempt::default(),
            retry: AuthRetry::default(),
            body_bytes: 0,
            upgrade: false,
            upgraded: false,
        }
    }

    /// The deadline for the whole exchange: `total`, or `upgraded_total` for an upgrade.
    pub fn total_timeout(&self) -> std::time::Duration {
        self.route.timeouts.read_and_total(self.upgrade).1
    }

    /// Counts a piece of the request body; false once the body is over the route's limit.
    pub fn count_body(&mut self, bytes: usize) -> bool {
        self.body_bytes += bytes as u64;
        self.body_bytes <= self.route.max_request_body
    }

    /// The peer for the next attempt: round-robin, or the backend after the one whose
    /// connection failed; every wait capped by what is left of the route's total time.
    pub fn next_peer(&mut self, started: Instant) -> pingora::Result<Box<HttpPeer>> {
        let route = &self.route;
        let index = route.pick_backend(self.attempt.failed_backend());
        self.attempt.backend = Some(index);
        let (read, total) = route.timeouts.read_and_total(self.upgrade);
        let left = total.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(total_timeout());
        }
        let mut peer = HttpPeer::clone(&route.backends[index].peer.load());
        peer.options.connection_timeout = Some(route.timeouts.connect.min(left));
        peer.options.total_connection_timeout = Some(route.timeouts.connect.min(left));
        peer.options.read_timeout = Some(read.min(left));
        peer.options.write_timeout = Some(route.timeouts.write.min(left));
        Ok(Box::new(peer))
    }
}

/// Which backend the request is on, and how many connections failed.
#[derive(Debug, Default)]
pub struct Attempt {
    backend: Option<usize>,
    connect_failures: usize,
}

impl Attempt {
    pub fn backend(&self) -> Option<usize> {
        self.backend
    }

    /// A connection failed; whether an untried backend remains. Nothing reached the
    /// upstream, so trying the next one is always safe.
    pub fn connect_failed(&mut self, backends: usize) -> bool {
        self.connect_failures += 1;
        self.connect_failures < backends
    }

    fn failed_backend(&self) -> Option<usize> {
        self.backend.filter(|_| self.connect_failures > 0)
    }
}

/// The one retry after the upstream rejected the credential.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuthRetry(Stage);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    NotYet,
    /// The upstream refused the token; the next attempt needs a fresh one.
    Pending,
    Done,
}

impl AuthRetry {
    /// The upstream rejected the credential: whether to send the request once more (only
    /// the first time, and only when it can be replayed).
    pub fn on_rejection(&mut self, replayable: bool) -> bool {
        if self.0 == Stage::NotYet && replayable {
            self.0 = Stage::Pending;
            return true;
        }
        false
    }

    /// Whether the pending retry is under way: its error is ours, not the upstream's.
    pub fn is_pending(self) -> bool {
        self.0 == Stage::Pending
    }

    /// At the start of an attempt: whether it is the retry, which needs a fresh credential.
    pub fn begin_attempt(&mut self) -> bool {
        let retry = self.0 == Stage::Pending;
        if retry {
            self.0 = Stage::Done;
        }
        retry
    }

    pub fn happened(self) -> bool {
        self.0 == Stage::Done
    }
}

/// The route's whole-exchange deadline passed: a timeout on the upstream side (504, or a
/// cut response once the header went out).
pub fn total_timeout() -> Box<Error> {
    let mut error = Error::explain(ErrorType::ReadTimedout, "the route's total timeout passed");
    error.set_retry(false);
    error.into_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_retry_happens_once_and_only_when_replayable() {
        let mut retry = AuthRetry::default();
        assert!(!retry.begin_attempt());
        assert!(!AuthRetry::default().on_rejection(false));
        assert!(retry.on_rejection(true));
        assert!(retry.is_pending());
        assert!(retry.begin_attempt());
        assert!(retry.happened());
        assert!(
            !retry.on_rejection(true),
            "a second rejection is not retried"
        );
        assert!(!retry.begin_attempt());
    }

    #[test]
    fn a_failed_connection_moves_on_while_backends_remain() {
        let mut attempt = Attempt {
            backend: Some(1),
            ..Attempt::default()
        };
        assert_eq!(attempt.failed_backend(), None);
        assert!(attempt.connect_failed(3));
        assert_eq!(attempt.failed_backend(), Some(1));
        assert!(attempt.connect_failed(3));
        assert!(!attempt.connect_failed(3));
    }
}
