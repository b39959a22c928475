//! The pingora side: a thin [`ProxyHttp`]. Each phase hands its work to one module:
//!
//! 1. `request_filter`: the head made canonical ([`head`]), the route matched, the route's
//!    admission steps run ([`admission`]: body limit, inbound checks, credential).
//! 2. `upstream_peer`: the backend picked; on the retry after a rejection, a fresh
//!    credential ([`credential`]).
//! 3. `upstream_request_filter`: all header work in one step ([`rewrite`]).
//! 4. `upstream_response_filter`: a rejection status purges the token and retries once.
//! 5. `fail_to_proxy`: every refusal answered from one mapping ([`refusal`]).
//! 6. `logging`: metrics and the access line ([`access`]).
//!
//! A phase that refuses records the [`Refusal`] in the context and returns an error, so
//! every refusal, whichever phase decided it, is answered by `fail_to_proxy`.

mod access;
mod admission;
mod context;
mod credential;
mod head;
mod refusal;
mod request_id;
pub mod rewrite;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::{Error, ErrorType};

use crate::config::Server;
use crate::generation::Live;
use crate::metrics::Metrics;
use crate::routing::host_without_port;
use crate::shutdown::InFlight;
pub use context::Exchange;
use context::{refuse, total_timeout, RequestContext};
use head::HeadPolicy;
use refusal::{Place, Refusal};
use request_id::RequestIds;

/// The gateway's request handling; one instance serves every request.
pub struct Gateway {
    live: Arc<Live>,
    head_policy: HeadPolicy,
    metrics: Arc<Metrics>,
    request_ids: RequestIds,
    in_flight: Arc<InFlight>,
}

impl Gateway {
    pub fn new(
        live: Arc<Live>,
        server: &Server,
        metrics: Arc<Metrics>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Gateway {
            live,
            head_policy: HeadPolicy {
                paths: server.paths,
                underscores: server.headers_with_underscores,
            },
            metrics,
            request_ids: RequestIds::new(),
            in_flight,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestContext;

    /// None: pingora's default adds a response-compression module that tollgate never
    /// turns on but that would still run on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestContext {
        RequestContext::new(self.in_flight.enter())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<bool> {
        ctx.request_id = self.request_ids.for_request(session.req_header());
        let changes = head::make_canonical(session.req_header_mut(), &self.head_policy)
            .map_err(|detail| refuse(&mut ctx.refusal, Refusal::BadRequest(detail)))?;
        let dropped = changes.underscore_headers_dropped;
        self.metrics.underscore_headers_dropped.inc_by(dropped);
        let request = session.req_header();
        let host = request
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let generation = self.live.load();
        let Some(route) = generation
            .router
            .find(host.map(host_without_port), request.uri.path())
        else {
            return Err(refuse(&mut ctx.refusal, Refusal::NoRoute));
        };
        let mut exchange = Exchange::new(Arc::clone(route), Arc::clone(&generation.tokens));
        exchange.upgrade = session.is_upgrade_req();
        let exchange = ctx.exchange.insert(exchange);
        let client_cert = crate::tls::client_cert_of(session.digest());
        admission::admit(exchange, request, client_cert, &self.metrics)
            .await
            .map_err(|refusal| refuse(&mut ctx.refusal, refusal))?;
        if exchange.upgrade {
            // The caller's side of an upgraded connection may be as quiet as the route allows.
            session.set_read_timeout(Some(exchange.route.timeouts.upgraded_idle));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let Some(exchange) = ctx.exchange.as_mut() else {
            return Ok(());
        };
        if exchange.count_body(body.as_ref().map_or(0, |b| b.len())) {
            return Ok(());
        }
        // A body without a declared length that outgrew the limit.
        let limit = exchange.route.max_request_body;
        Err(refuse(&mut ctx.refusal, Refusal::PayloadTooLarge { limit }))
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<Box<HttpPeer>> {
        let RequestContext {
            exchange,
            refusal,
            started,
            ..
        } = ctx;
        let exchange = exchange.as_mut().ok_or_else(no_exchange)?;
        if exchange.retry.begin_attempt() {
            let obtained =
                credential::obtain(&exchange.tokens, &exchange.route, &exchange.identity)
                    .await
                    .map_err(|unavailable| refuse(refusal, unavailable))?;
            exchange.token = obtained.token;
            exchange.caller_key = obtained.caller_key;
        }
        exchange.next_peer(*started)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let exchange = ctx.exchange.as_ref().ok_or_else(no_exchange)?;
        let connection = rewrite::Connection {
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session
                .digest()
                .is_some_and(|digest| digest.ssl_digest.is_some()),
        };
        rewrite::upstream_request(exchange, connection, &ctx.request_id, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        let Some(exchange) = ctx.exchange.as_mut() else {
            return Ok(());
        };
        if status == 101 && exchange.upgrade {
            access::upgraded(&self.metrics, exchange);
        }
        if !exchange.route.retry_statuses.contains(&status) {
            credential::accepted(exchange).await;
            return Ok(());
        }
        if !credential::rejected(exchange, replayable(session), &self.metrics).await {
            return Ok(());
        }
        self.metrics
            .upstream_retries
            .with_label_values(&[&exchange.route.name, "credential_rejected"])
            .inc();
        let mut error = Error::explain(
            ErrorType::HTTPStatus(status),
            "upstream rejected the credential",
        );
        error.set_retry(true);
        Err(error)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        upstream_response.insert_header(rewrite::X_REQUEST_ID, ctx.request_id.clone())?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> pingora::Result<Option<std::time::Duration>> {
        match &ctx.exchange {
            Some(e) if ctx.started.elapsed() > e.total_timeout() => Err(total_timeout()),
            _ => Ok(None),
        }
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestContext,
        client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("Peer: {peer}"));
        let our_retry = ctx.exchange.as_ref().is_some_and(|e| e.retry.is_pending());
        if our_retry && matches!(error.etype(), ErrorType::HTTPStatus(_)) {
            // Replayability was checked when the retry was decided.
            return error;
        }
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            error.set_retry(false);
        } else {
            error.retry.decide_reuse(client_reused);
        }
        error
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut error: Box<Error>,
    ) -> Box<Error> {
        if let Some(exchange) = ctx.exchange.as_mut() {
            let backends = exchange.route.backends.len();
            if exchange.attempt.connect_failed(backends) {
                error.set_retry(true);
            }
        }
        error
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let gone = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if session.response_written().is_some() {
            return gone;
        }
        if ctx.refusal.is_none() {
            ctx.refusal = Refusal::from_proxy_error(error);
        }
        let Some(refusal) = &ctx.refusal else {
            return gone;
        };
        if let (Refusal::CredentialUnavailable(_), Some(exchange)) = (refusal, &ctx.exchange) {
            let route = exchange.route.name.as_str();
            self.metrics
                .credential_unavailable
                .with_label_values(&[route])
                .inc();
        }
        let place = Place {
            route: ctx.exchange.as_ref().map(|e| e.route.as_ref()),
            upstream_tried: ctx
                .exchange
                .as_ref()
                .is_some_and(|e| e.attempt.backend().is_some()),
        };
        let (status, reuse) = refusal::send(session, refusal, place, &ctx.request_id).await;
        FailToProxy {
            error_code: status,
            can_reuse_downstream: reuse,
        }
    }

    /// pingora's own error line quotes the request target (query included) and the error's
    /// context, which for a reply that fails to parse is the raw bytes. The access line
    /// records the failure instead, with only its kind and an operating-system cause.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestContext,
        _error: &Error,
    ) -> bool {
        true
    }

    /// As [`Self::suppress_error_log`], for the warning pingora logs before a retry; the
    /// access line says `retried` and `tollgate_upstream_retries_total` counts it.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestContext,
        _error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        true
    }

    /// Method and canonical path, never the query: a query may carry a caller's key.
    fn request_summary(&self, session: &Session, _ctx: &RequestContext) -> String {
        let request = session.req_header();
        format!("{} {}", request.method, request.uri.path())
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        access::record(&self.metrics, session, error, ctx);
    }
}

/// A phase after the route match ran without one: pingora calls them only after
/// `request_filter` let the request through.
fn no_exchange() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "no route in context")
}

/// A request can be sent again when its whole body is still held by pingora's retry
/// buffer (or it has none).
fn replayable(session: &mut Session) -> bool {
    session.is_body_empty()
        || (session.is_body_done() && !session.as_ref().retry_buffer_truncated())
}
