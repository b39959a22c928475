//! [`StandIn`], the one handle type of every stand-in, and what all of them, or all the
//! provider stand-ins, offer through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;

use crate::controls::{Switches, Tokens};
use crate::server::{serve_listener, RunningServer};

/// A running stand-in: its server, and the state `S` its handlers share. Stops when dropped
/// (requests in flight finish in the background) or on [`stop`](Self::stop).
///
/// The methods here are every stand-in's; those of one stand-in are in its module, in
/// `impl StandIn<ItsState>` (and each module names its handle, `BigIdStandIn` for
/// `StandIn<BigId>`, say).
pub struct StandIn<S> {
    server: RunningServer,
    state: Arc<S>,
}

impl<S> StandIn<S> {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash. The JWTs a provider
    /// stand-in mints name it as their `iss`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Graceful shutdown: stop accepting, wait (up to a few seconds) for the requests in
    /// flight, then return.
    pub async fn stop(self) {
        self.server.stop().await
    }

    pub(crate) fn state(&self) -> &S {
        &self.state
    }

    /// The state itself, for another stand-in that consults this one.
    pub(crate) fn shared_state(&self) -> Arc<S> {
        Arc::clone(&self.state)
    }
}

impl<S: Send + Sync + 'static> StandIn<S> {
    /// Bind `addr` (port 0 allowed), make the state knowing the base URL it is served at,
    /// and serve `router` with it.
    pub(crate) async fn launch(
        addr: SocketAddr,
        state: impl FnOnce(String) -> S,
        router: Router<Arc<S>>,
    ) -> std::io::Result<StandIn<S>> {
        let listener = TcpListener::bind(addr).await?;
        let state = Arc::new(state(format!("http://{}", listener.local_addr()?)));
        let server = serve_listener(router.with_state(Arc::clone(&state)), listener)?;
        Ok(StandIn { server, state })
    }

    /// A stand-in on a server of its own making (one that speaks HTTP by hand, say).
    pub(crate) fn from_parts(server: RunningServer, state: Arc<S>) -> StandIn<S> {
        StandIn { server, state }
    }
}

/// The state of a stand-in that can be taken down and slowed.
pub trait Switched: Send + Sync + 'static {
    fn switches(&self) -> &Switches;
}

impl<S: Switched> StandIn<S> {
    /// Down, every endpoint answers the stand-in's "unavailable" error (its module says
    /// which: a 503, or the status its seed lists) and still counts the request.
    pub fn set_available(&self, up: bool) {
        self.state.switches().set_available(up);
    }

    /// Wait this long before answering each request (a slow server); zero to stop. The
    /// request is counted and its answer decided on arrival, then delivered late.
    pub fn set_delay(&self, delay: Duration) {
        self.state.switches().delay.set(delay);
    }

    /// How many answers a delay has held back so far.
    pub fn delayed_answers(&self) -> u64 {
        self.state.switches().delay.held()
    }
}

/// A provider stand-in: made from its settings, it issues tokens and keeps their book.
pub trait Provider: Switched + Sized {
    /// What the stand-in accepts (users, clients, keys) and how long its tokens live.
    type Settings;
    /// What the stand-in keeps about each token it issued.
    type Facts: Send + 'static;

    /// The state of a stand-in served at `url` (the `iss` of the JWTs it mints).
    fn new(settings: Self::Settings, url: String) -> Self;

    /// The stand-in's endpoints.
    fn router() -> Router<Arc<Self>>;

    fn tokens(&self) -> &Tokens<Self::Facts>;

    /// Whether a live token with these facts is one a caller may use (not a refresh
    /// token, not a session waiting for its second factor...).
    fn usable(_facts: &Self::Facts) -> bool {
        true
    }
}

impl<P: Provider> StandIn<P> {
    /// Start on `127.0.0.1:0`.
    pub async fn start(settings: P::Settings) -> std::io::Result<StandIn<P>> {
        Self::start_on(crate::any_loopback_port(), settings).await
    }

    /// Start on `addr` (a fixed port for the demo, or the address of a stopped stand-in).
    pub async fn start_on(addr: SocketAddr, settings: P::Settings) -> std::io::Result<StandIn<P>> {
        Self::launch(addr, |url| P::new(settings, url), P::router()).await
    }

    /// Lifetime of the tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.state.tokens().ttl.set(ttl);
    }

    /// Every token issued (refresh tokens and sessions waiting for a second factor
    /// included), oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.tokens().book().issued()
    }

    /// Issued here, not expired, not revoked, and usable by a caller (so false for a
    /// refresh token, and for a session still waiting for its second factor).
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.state
            .tokens()
            .book()
            .live(token)
            .is_some_and(P::usable)
    }

    /// Every token issued so far (refresh tokens included) becomes invalid.
    pub fn revoke_all(&self) {
        self.state.tokens().book().retire_where(|_| true);
    }
}

/// How a stand-in answers on one endpoint: from its state, the request's headers and body.
pub(crate) type Answer<S> = fn(&S, &HeaderMap, &[u8]) -> Response;

/// The endpoint for `method` that decides its answer with `answer` as the request arrives
/// (so it is counted then) and hands it back after the stand-in's delay.
pub(crate) fn answer<S: Switched>(method: MethodFilter, answer: Answer<S>) -> MethodRouter<Arc<S>> {
    axum::routing::on(
        method,
        move |State(state): State<Arc<S>>, headers: HeaderMap, body: Bytes| async move {
            let response = answer(&state, &headers, &body);
            state.switches().delay.sleep().await;
            response
        },
    )
}
