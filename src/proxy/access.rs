//! The end of every request: its metrics and its access line.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

use super::context::{Exchange, RequestContext, REFUSED};
use super::request_id;
use crate::metrics::Metrics;

/// Route label of requests that matched no route.
const NO_ROUTE_LABEL: &str = "none";

/// The upstream accepted an upgrade (WebSocket): counted, and open until [`record`].
pub fn upgraded(metrics: &Metrics, exchange: &mut Exchange) {
    let route = exchange.route.name.as_str();
    metrics.websocket_upgrades.with_label_values(&[route]).inc();
    metrics
        .websocket_connections
        .with_label_values(&[route])
        .inc();
    exchange.upgraded = true;
}

pub fn record(metrics: &Metrics, session: &Session, error: Option<&Error>, ctx: &RequestContext) {
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let exchange = ctx.exchange.as_ref();
    let route = exchange.map_or(NO_ROUTE_LABEL, |e| e.route.name.as_str());
    if exchange.is_some_and(|e| e.upgraded) {
        metrics
            .websocket_connections
            .with_label_values(&[route])
            .dec();
    }
    let elapsed = ctx.started.elapsed();
    metrics
        .requests
        .with_label_values(&[route, status_label(status, &mut [0; 3])])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    // The gateway's own refusals are not proxy errors; the access line names their kind.
    let error = error.filter(|e| e.etype().as_str() != REFUSED);
    if let Some(error) = error.filter(|e| matches!(e.esource(), ErrorSource::Upstream)) {
        metrics
            .upstream_errors
            .with_label_values(&[route, error.etype().as_str()])
            .inc();
    }
    let upstream = exchange
        .and_then(|e| Some(e.route.backends[e.attempt.backend()?].label.as_str()))
        .unwrap_or("-");
    let request = session.req_header();
    tracing::info!(
        target: "access",
        request_id = request_id::as_text(&ctx.request_id),
        method = %request.method,
        path = request.uri.path(),
        route,
        status,
        upstream,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        retried = exchange.is_some_and(|e| e.retry.happened()),
        refused = ctx.refusal.as_ref().map(|r| r.kind().as_str()),
        error = error.map(|e| e.etype().as_str()),
        cause = error.and_then(os_cause),
    );
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
