//! A route ready for the request path, compiled once when its config is loaded: its
//! admission steps in the order they run, its provider resolved to an id, its backends
//! turned into pingora peers, its header work prepared.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use super::Matchable;
use crate::config::{Backend, Route, TokenFormat, UpstreamTimeouts};
use crate::inbound::Inbound;
use crate::tokens::{ProviderId, TokenManager};

/// Concurrent requests one HTTP/2 upstream connection carries before another is opened
/// (pingora's default is 1, which would make HTTP/2 one connection per request).
const H2_STREAMS_PER_CONNECTION: usize = 100;

pub struct CompiledRoute {
    pub name: String,
    host: Option<String>,
    path_prefix: String,
    pub strip_prefix: bool,
    pub backends: Vec<UpstreamBackend>,
    next_backend: AtomicUsize,
    /// What a request must pass before it is forwarded, in order.
    pub admission: Vec<Admission>,
    /// The provider whose token this route injects, for error bodies and rejections.
    pub credential: Option<RouteCredential>,
    /// Caller headers the upstream must not see as the caller sent them.
    pub caller_headers: CallerHeaders,
    pub retry_statuses: Vec<u16>,
    pub preserve_host: bool,
    pub max_request_body: u64,
    pub timeouts: UpstreamTimeouts,
}

/// One step of a route's admission; the first that refuses decides the answer.
pub enum Admission {
    /// A declared body over the route's `max_request_body` is refused before it is read.
    DeclaredBodyLimit,
    /// The caller checks of ingress mode.
    Inbound(Box<Inbound>),
    /// The route's credential, from the token manager.
    Credential,
}

pub struct RouteCredential {
    pub provider: ProviderId,
    pub provider_name: String,
    /// The provider mints a token per caller, from the token the inbound checks verified.
    pub per_caller: bool,
    pub header: HeaderName,
    pub format: TokenFormat,
}

/// From the route's inbound checks: identity headers (the caller's copies are never
/// forwarded), and the caller's own credential, removed unless it is forwarded, and never
/// printed when it is.
#[derive(Default)]
pub struct CallerHeaders {
    pub strip: Vec<HeaderName>,
    pub sensitive: Vec<HeaderName>,
}

pub struct UpstreamBackend {
    /// The pingora peer with the address currently in use; the DNS refresh swaps in a new
    /// one when the host name comes to resolve elsewhere.
    pub peer: ArcSwap<HttpPeer>,
    /// The host name as configured, and its port, for re-resolving.
    pub host: String,
    pub port: u16,
    pub authority: HeaderValue,
    pub base_path: String,
    /// `host:port` for logs.
    pub label: String,
}

#[derive(Debug, thiserror::Error)]
#[error("route {route}: {reason}")]
pub struct RouteBuildError {
    pub route: String,
    pub reason: String,
}

impl Matchable for CompiledRoute {
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}

impl CompiledRoute {
    /// `control` runs the inbound checks' own calls (JWKS, authorization server).
    pub fn build(
        route: &Route,
        tokens: &TokenManager,
        control: &tokio::runtime::Handle,
    ) -> Result<Arc<CompiledRoute>, RouteBuildError> {
        let error = |reason: String| RouteBuildError {
            route: route.name.clone(),
            reason,
        };
        let backends = route
            .backends
            .iter()
            .map(|backend| upstream_backend(backend, &route.timeouts).map_err(error))
            .collect::<Result<Vec<_>, _>>()?;
        let credential = match &route.credential {
            None => None,
            Some(credential) => {
                let provider = tokens
                    .provider_id(&credential.provider)
                    .ok_or_else(|| error(format!("unknown provider {}", credential.provider)))?;
                Some(RouteCredential {
                    provider,
                    provider_name: credential.provider.clone(),
                    per_caller: tokens.is_per_caller(provider),
                    header: credential.header.clone(),
                    format: credential.format.clone(),
                })
            }
        };
        let mut inbound = route
            .inbound
            .as_ref()
            .map(|settings| Inbound::build(settings, control.clone()))
            .transpose()
            .map_err(|e| error(e.to_string()))?;
        if credential.as_ref().is_some_and(|c| c.per_caller) {
            // Config validation refuses a per-caller provider on a route without a check.
            let Some(inbound) = inbound.as_mut() else {
                return Err(error(
                    "its provider mints a token per caller and the route has no inbound check"
                        .to_owned(),
                ));
            };
            inbound.keep_caller_token();
        }
        let caller_headers = inbound
            .as_ref()
            .map_or_else(CallerHeaders::default, |inbound| CallerHeaders {
                strip: inbound.headers_to_strip().to_vec(),
                sensitive: inbound.credential_headers().to_vec(),
            });
        // Cheapest first: a body that is too large needs no caller check or token.
        let mut admission = vec![Admission::DeclaredBodyLimit];
        admission.extend(inbound.map(|inbound| Admission::Inbound(Box::new(inbound))));
        if credential.is_some() {
            admission.push(Admission::Credential);
        }
        Ok(Arc::new(CompiledRoute {
            name: route.name.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            strip_prefix: route.strip_prefix,
            backends,
            next_backend: AtomicUsize::new(0),
            admission,
            credential,
            caller_headers,
            retry_statuses: route.on_upstream_status.clone(),
            preserve_host: route.preserve_host,
            max_request_body: route.max_request_body,
            timeouts: route.timeouts,
        }))
    }

    /// Round-robin over the backends for a first attempt; a retry after a failed
    /// connection takes the backend after the one that failed, so concurrent requests
    /// cannot send it back to the same dead backend.
    pub fn pick_backend(&self, failed: Option<usize>) -> usize {
        match failed {
            Some(index) => (index + 1) % self.backends.len(),
            None => self.next_backend.fetch_add(1, Ordering::Relaxed) % self.backends.len(),
        }
    }

    /// Whether the upstream path differs from the caller's: a prefix to strip or a base
    /// path to add. Most routes do neither, and their requests keep the parsed URI.
    pub fn rewrites_path(&self, backend: &UpstreamBackend) -> bool {
        self.strip_prefix || !backend.base_path.is_empty()
    }

    /// The upstream path: the route prefix removed when asked, the backend's base path put
    /// in front. `path` is the request's canonical path without query.
    pub fn upstream_path(
        &self,
        backend: &UpstreamBackend,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let rest = if self.strip_prefix {
            let prefix = self.path_prefix.trim_end_matches('/');
            path.strip_prefix(prefix).unwrap_or(path)
        } else {
            path
        };
        let mut out = String::with_capacity(
            backend.base_path.len() + rest.len() + 1 + query.map_or(0, |q| q.len() + 1),
        );
        out.push_str(&backend.base_path);
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        out
    }
}

fn upstream_backend(
    backend: &Backend,
    timeouts: &UpstreamTimeouts,
) -> Result<UpstreamBackend, String> {
    let address = resolve(&backend.host, backend.port)?;
    let mut peer = HttpPeer::new(address, backend.tls, backend.host.clone());
    // Connect, read and write timeouts are set per attempt, capped by what is left of the
    // route's total.
    peer.options.idle_timeout = Some(timeouts.idle);
    if backend.http2 {
        // HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) over plain TCP.
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    if backend.tls_settings.insecure_skip_verify {
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
    }
    if let Some(path) = &backend.tls_settings.ca_file {
        let certs = crate::tls::read_ca_file(path)?;
        let wrapped: Vec<WrappedX509> = certs
            .iter()
            .map(|der| WrappedX509::new(der.as_ref().to_vec(), pingora::utils::tls::parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(wrapped.into_boxed_slice()));
    }
    let authority = HeaderValue::from_str(&backend.authority)
        .map_err(|_| format!("`{}` is not a valid Host header", backend.authority))?;
    Ok(UpstreamBackend {
        peer: ArcSwap::from_pointee(peer),
        host: backend.host.clone(),
        port: backend.port,
        authority,
        base_path: backend.base_path.clone(),
        label: format!("{}:{}", backend.host, backend.port),
    })
}

/// Resolved when the route is built, so the request path never blocks on DNS; later
/// changes are picked up by the DNS refresh.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host}:{port}: {error}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))
}

/// The first route of `yaml` (a whole config), for unit tests of the request path. Must
/// run inside a tokio runtime (the route's inbound checks would use it).
#[cfg(test)]
pub fn route_for_tests(yaml: &str) -> Arc<CompiledRoute> {
    let config = crate::config::parse(yaml).expect("test route config");
    let control = tokio::runtime::Handle::current();
    let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics"));
    let providers = config
        .providers
        .iter()
        .map(|spec| (spec, crate::providers::build(spec).expect("test provider")))
        .collect();
    let tokens = TokenManager::new(providers, control.clone(), metrics, None);
    CompiledRoute::build(&config.routes[0], &tokens, &control).expect("test route")
}
