//! The pingora side: a thin [`ProxyHttp`] that routes, asks the token manager for the
//! route's credential, injects it, and retries once when the upstream rejects it.

pub mod dns;
mod head;
mod request_id;
mod respond;
pub mod rewrite;
mod route;
pub mod router;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::inbound::{outcome_label, Identity};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::shutdown::{InFlight, InFlightGuard};
use crate::tokens::{CredentialUnavailable, Token, TokenManager};
use head::HeadPolicy;
use request_id::RequestIds;
use respond::ErrorKind;
pub use route::{CompiledRoute, RouteBuildError, UpstreamBackend};
use router::host_without_port;

/// Route label of requests that matched no route.
const NO_ROUTE_LABEL: &str = "none";

/// The gateway's request handling; one instance serves every request.
pub struct Gateway {
    live: Arc<Live>,
    head_policy: HeadPolicy,
    metrics: Arc<Metrics>,
    request_ids: RequestIds,
    in_flight: Arc<InFlight>,
}

/// Per-request state carried between pingora's phases.
pub struct RequestContext {
    _in_flight: InFlightGuard,
    started: Instant,
    request_id: http::HeaderValue,
    route: Option<Arc<CompiledRoute>>,
    /// The token manager of the routing the request started with (reloads swap it).
    tokens: Option<Arc<TokenManager>>,
    token: Option<Arc<Token>>,
    backend: Option<usize>,
    connect_failures: usize,
    auth_retry: AuthRetry,
    unavailable: Option<CredentialUnavailable>,
    body_bytes: u64,
    /// What the route's inbound checks established about the caller.
    identity: Option<Identity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthRetry {
    NotYet,
    /// The upstream refused the token; the next attempt needs a fresh one.
    Pending,
    Done,
}

impl Gateway {
    pub fn new(
        live: Arc<Live>,
        server: &crate::config::Server,
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
        RequestContext {
            _in_flight: self.in_flight.enter(),
            started: Instant::now(),
            request_id: http::HeaderValue::from_static("-"),
            route: None,
            tokens: None,
            token: None,
            backend: None,
            connect_failures: 0,
            auth_retry: AuthRetry::NotYet,
            unavailable: None,
            body_bytes: 0,
            identity: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<bool> {
        ctx.request_id = self.request_ids.for_request(session.req_header());
        match head::make_canonical(session.req_header_mut(), &self.head_policy) {
            Ok(changes) => self
                .metrics
                .underscore_headers_dropped
                .inc_by(changes.underscore_headers_dropped),
            Err(detail) => {
                self.refuse(session, ctx, ErrorKind::BadRequest, detail, None, true)
                    .await;
                return Ok(true);
            }
        }
        let request = session.req_header();
        let host = request
            .uri
            .host()
            .or_else(|| {
                request
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(host_without_port);
        let (route, tokens) = {
            let routing = self.live.load();
            let route = routing.router.find(host, request.uri.path()).cloned();
            (route, Arc::clone(&routing.tokens))
        };
        ctx.tokens = Some(Arc::clone(&tokens));
        let Some(route) = route else {
            self.refuse(
                session,
                ctx,
                ErrorKind::NoRoute,
                "no route matches this host and path",
                None,
                false,
            )
            .await;
            return Ok(true);
        };
        ctx.route = Some(Arc::clone(&route));
        if declared_body_length(session.req_header())
            .is_some_and(|length| length > route.max_request_body)
        {
            let detail = format!(
                "the request body is larger than this route's limit of {} bytes",
                route.max_request_body
            );
            self.refuse(
                session,
                ctx,
                ErrorKind::PayloadTooLarge,
                &detail,
                None,
                true,
            )
            .await;
            return Ok(true);
        }
        if let Some(inbound) = &route.inbound {
            let request = session.req_header();
            let outcome = inbound.check(&request.method, &request.headers).await;
            self.metrics
                .inbound_auth
                .with_label_values(&[&route.name, outcome_label(&outcome)])
                .inc();
            match outcome {
                Ok(identity) => ctx.identity = Some(identity),
                Err(refusal) => {
                    self.refuse_caller(session, ctx, &refusal).await;
                    return Ok(true);
                }
            }
        }
        if let Some(credential) = &route.credential {
            match tokens.credential(credential.provider).await {
                Ok(token) => ctx.token = Some(token),
                Err(unavailable) => {
                    self.refuse_unavailable(session, ctx, &unavailable, false)
                        .await;
                    return Ok(true);
                }
            }
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
        let limit = ctx
            .route
            .as_deref()
            .map_or(u64::MAX, |r| r.max_request_body);
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > limit {
            // A chunked body that outgrew the limit; the declared-length case was refused earlier.
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over the route's limit",
            ));
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (Some(route), Some(tokens)) = (ctx.route.as_deref(), ctx.tokens.as_ref()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route in context",
            ));
        };
        if ctx.auth_retry == AuthRetry::Pending {
            ctx.auth_retry = AuthRetry::Done;
            if let Some(credential) = &route.credential {
                match tokens.credential(credential.provider).await {
                    Ok(token) => ctx.token = Some(token),
                    Err(unavailable) => {
                        ctx.unavailable = Some(unavailable);
                        return Err(Error::explain(
                            ErrorType::HTTPStatus(503),
                            "no credential for the retry",
                        ));
                    }
                }
            }
        }
        let failed = ctx.backend.filter(|_| ctx.connect_failures > 0);
        let index = route.pick_backend(failed);
        ctx.backend = Some(index);
        // The route's total deadline caps every wait on this attempt.
        let left = route.timeouts.total.saturating_sub(ctx.started.elapsed());
        if left.is_zero() {
            return Err(total_timeout());
        }
        let mut peer = HttpPeer::clone(&route.backends[index].peer.load());
        peer.options.connection_timeout = Some(route.timeouts.connect.min(left));
        peer.options.total_connection_timeout = Some(route.timeouts.connect.min(left));
        peer.options.read_timeout = Some(route.timeouts.read.min(left));
        peer.options.write_timeout = Some(route.timeouts.write.min(left));
        Ok(Box::new(peer))
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> pingora::Result<Option<std::time::Duration>> {
        match &ctx.route {
            Some(route) if ctx.started.elapsed() > route.timeouts.total => Err(total_timeout()),
            _ => Ok(None),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let (Some(route), Some(index)) = (ctx.route.as_deref(), ctx.backend) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no route or backend in context",
            ));
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(inbound) = &route.inbound {
            // Before the credential goes in: the caller's own credential may use the same
            // header, and identity headers must never be the caller's copies.
            for name in inbound.headers_to_strip() {
                upstream_request.remove_header(name);
            }
            // A caller credential that is forwarded still never shows in a debug log.
            for name in inbound.credential_headers() {
                if let Some(mut value) = upstream_request.remove_header(name) {
                    value.set_sensitive(true);
                    upstream_request.insert_header(name.clone(), value)?;
                }
            }
        }
        let token = ctx.token.as_deref();
        rewrite::upstream_request(
            route,
            &route.backends[index],
            token,
            client,
            &ctx.request_id,
            upstream_request,
        )?;
        if let Some(identity) = &ctx.identity {
            for (name, value) in &identity.headers {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        let Some(route) = ctx.route.as_deref() else {
            return Ok(());
        };
        if !route.retry_statuses.contains(&status) {
            return Ok(());
        }
        let (Some(credential), Some(token), Some(tokens)) =
            (&route.credential, &ctx.token, &ctx.tokens)
        else {
            return Ok(());
        };
        tokens.reject(credential.provider, token.id).await;
        if ctx.auth_retry != AuthRetry::NotYet || !replayable(session) {
            return Ok(());
        }
        ctx.auth_retry = AuthRetry::Pending;
        self.metrics
            .upstream_retries
            .with_label_values(&[&route.name, "credential_rejected"])
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

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestContext,
        client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("Peer: {peer}"));
        if ctx.auth_retry == AuthRetry::Pending && matches!(error.etype(), ErrorType::HTTPStatus(_))
        {
            // Our own retry after a credential rejection: replayability was checked already.
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
        ctx.connect_failures += 1;
        let backends = ctx.route.as_deref().map_or(1, |r| r.backends.len());
        // Nothing reached the upstream yet, so trying the next backend is always safe.
        if ctx.connect_failures < backends {
            error.set_retry(true);
        }
        error
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        if session.response_written().is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(unavailable) = ctx.unavailable.clone() {
            self.refuse_unavailable(session, ctx, &unavailable, true)
                .await;
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        let kind = match (error.esource(), error.etype()) {
            (_, ErrorType::HTTPStatus(413)) => ErrorKind::PayloadTooLarge,
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => ErrorKind::UpstreamTimeout,
            (ErrorSource::Upstream, _) => ErrorKind::UpstreamUnreachable,
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => {
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            (ErrorSource::Downstream, _) => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        };
        let detail = match kind {
            ErrorKind::UpstreamUnreachable => "the upstream could not be reached",
            ErrorKind::UpstreamTimeout => "the upstream did not answer in time",
            ErrorKind::BadRequest => "the request could not be read",
            ErrorKind::PayloadTooLarge => "the request body is larger than this route's limit",
            _ => "the gateway failed to proxy the request",
        };
        self.refuse(session, ctx, kind, detail, None, true).await;
        FailToProxy {
            error_code: kind.status(),
            can_reuse_downstream: false,
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
        _context: pingora::proxy::ProxyWarnLogContext,
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
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.as_deref();
        let route_name = route.map_or(NO_ROUTE_LABEL, |r| r.name.as_str());
        let elapsed = ctx.started.elapsed();
        self.metrics
            .requests
            .with_label_values(&[route_name, status_label(status, &mut [0; 3])])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route_name])
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error.filter(|e| matches!(e.esource(), ErrorSource::Upstream)) {
            self.metrics
                .upstream_errors
                .with_label_values(&[route_name, error.etype().as_str()])
                .inc();
        }
        let upstream = match (route, ctx.backend) {
            (Some(route), Some(index)) => route.backends[index].label.as_str(),
            _ => "-",
        };
        let request = session.req_header();
        tracing::info!(
            target: "access",
            request_id = request_id::as_text(&ctx.request_id),
            method = %request.method,
            path = request.uri.path(),
            route = route_name,
            status,
            upstream,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            retried = ctx.auth_retry == AuthRetry::Done,
            error = error.map(|e| e.etype().as_str()),
            cause = error.and_then(os_cause),
        );
    }
}

/// The route's whole-exchange deadline passed: a timeout on the upstream side (504, or a
/// cut response once the header went out).
fn total_timeout() -> Box<Error> {
    let mut error = Error::explain(ErrorType::ReadTimedout, "the route's total timeout passed");
    error.set_retry(false);
    error.into_up()
}

/// The operating system's word on a failed exchange ("Connection refused"), if that is
/// what failed: unlike an error's context, it never quotes request or reply bytes.
fn os_cause(error: &Error) -> Option<String> {
    let mut cause = error.cause.as_deref();
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io.to_string());
        }
        cause = inner
            .downcast_ref::<Error>()
            .and_then(|nested| nested.cause.as_deref());
    }
    None
}

/// The `Content-Length` the caller declared, if any.
fn declared_body_length(request: &RequestHeader) -> Option<u64> {
    request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok())
}

/// A request can be sent again when its whole body is still held by pingora's retry
/// buffer (or it has none).
fn replayable(session: &mut Session) -> bool {
    session.is_body_empty()
        || (session.is_body_done() && !session.as_ref().retry_buffer_truncated())
}

/// The status code as label text, written into `buffer` so recording allocates nothing.
fn status_label(status: u16, buffer: &mut [u8; 3]) -> &str {
    if !(100..=999).contains(&status) {
        return "0";
    }
    buffer[0] = b'0' + (status / 100) as u8;
    buffer[1] = b'0' + (status / 10 % 10) as u8;
    buffer[2] = b'0' + (status % 10) as u8;
    std::str::from_utf8(buffer).unwrap_or("0")
}
