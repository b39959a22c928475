//! What the upstream receives, in one step: the rewritten path, its own Host, the caller's
//! identity headers and credential handled as the route's inbound checks say, the
//! injected credential in place of any the caller sent, and the forwarding headers.
//!
//! This runs on every request, so values are built straight into header bytes: no
//! `format!`, and no copy between a `String` and a `HeaderValue`.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::context::Exchange;
use crate::routing::{CompiledRoute, UpstreamBackend};
use crate::tokens::Token;

/// Header names as `&'static str`: pingora keeps their case on the wire without copying them.
pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
pub const X_REQUEST_ID: &str = "X-Request-Id";

/// The downstream connection, as the forwarding headers tell it.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub client: Option<IpAddr>,
    /// The request came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

pub fn upstream_request(
    exchange: &Exchange,
    connection: Connection,
    request_id: &HeaderValue,
    request: &mut RequestHeader,
) -> pingora::Result<()> {
    let route = exchange.route.as_ref();
    let Some(backend) = exchange
        .attempt
        .backend()
        .map(|index| &route.backends[index])
    else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no backend chosen",
        ));
    };
    path(route, backend, request)?;
    if !route.preserve_host {
        request.insert_header(http::header::HOST, backend.authority.clone())?;
    }
    caller_headers(exchange, request)?;
    credential(route, exchange.token.as_deref(), request)?;
    if let Some(client) = connection.client {
        let value = forwarded_for(request.headers.get(X_FORWARDED_FOR), client);
        request.insert_header(X_FORWARDED_FOR, value)?;
    }
    let proto = if connection.tls { "https" } else { "http" };
    request.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    request.insert_header(X_REQUEST_ID, request_id.clone())?;
    Ok(())
}

/// The request arrives canonical and in origin form; only a prefix to strip or a base path
/// to add changes it.
fn path(
    route: &CompiledRoute,
    backend: &UpstreamBackend,
    request: &mut RequestHeader,
) -> pingora::Result<()> {
    if !route.rewrites_path(backend) && request.raw_path().starts_with(b"/") {
        return Ok(());
    }
    let path = route.upstream_path(backend, request.uri.path(), request.uri.query());
    let uri: Uri = path.parse().map_err(|_| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "rewritten path is not a valid URI",
        )
    })?;
    request.set_uri(uri);
    Ok(())
}

/// Identity headers are never the caller's copies, and the caller's credential is removed
/// (or, when forwarded, marked so that no debug print shows it), before the route's own
/// credential goes in: it may use the same header.
fn caller_headers(exchange: &Exchange, request: &mut RequestHeader) -> pingora::Result<()> {
    let caller = &exchange.route.caller_headers;
    for name in &caller.strip {
        request.remove_header(name);
    }
    for name in &caller.sensitive {
        if let Some(mut value) = request.remove_header(name) {
            value.set_sensitive(true);
            request.insert_header(name.clone(), value)?;
        }
    }
    for (name, value) in &exchange.identity.headers {
        request.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

fn credential(
    route: &CompiledRoute,
    token: Option<&Token>,
    request: &mut RequestHeader,
) -> pingora::Result<()> {
    let Some(credential) = &route.credential else {
        return Ok(());
    };
    let Some(token) = token else {
        // Never forward a request that should carry a credential without one.
        return Err(Error::explain(
            ErrorType::InternalError,
            "route needs a credential but none is held",
        ));
    };
    let rendered = credential
        .format
        .render(token.value.expose(), &token.token_type);
    let mut value = HeaderValue::from_maybe_shared(Bytes::from(rendered)).map_err(|_| {
        Error::explain(
            ErrorType::InternalError,
            "token is not a valid header value",
        )
    })?;
    // Sensitive values print as "Sensitive" in any debug print of the request.
    value.set_sensitive(true);
    // Inserting replaces every copy the caller sent: only ours reaches the upstream.
    request.insert_header(credential.header.clone(), value)?;
    Ok(())
}

/// `X-Forwarded-For` with the client appended to what earlier proxies wrote.
fn forwarded_for(existing: Option<&HeaderValue>, client: IpAddr) -> HeaderValue {
    let earlier = existing.map(HeaderValue::as_bytes).unwrap_or_default();
    let mut value = Vec::with_capacity(earlier.len() + 2 + 39);
    if !earlier.is_empty() {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    push_ip(&mut value, client);
    // The earlier part was a valid header value and an address adds only ASCII.
    HeaderValue::from_maybe_shared(Bytes::from(value))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// An address in its usual text form; IPv4 by hand, as `Display` costs more than the
/// whole of the rest of this module.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tokens::TokenManager;

    #[test]
    fn a_sensitive_header_value_does_not_print() {
        let mut value = HeaderValue::from_static("Bearer secret-token");
        value.set_sensitive(true);
        let mut request = RequestHeader::build("GET", b"/x", None).unwrap();
        request.insert_header("authorization", value).unwrap();
        let printed = format!("{request:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
    }

    fn rewritten(url: &str, target: &[u8]) -> RequestHeader {
        let route = crate::routing::route_for_tests(&format!(
            "routes:\n  - {{ name: api, match: {{ path_prefix: / }}, upstream: {{ url: \"{url}\" }} }}\n"
        ));
        let tokens = TokenManager::new(
            vec![],
            tokio::runtime::Handle::current(),
            Arc::new(crate::metrics::Metrics::new().unwrap()),
            None,
        );
        let mut exchange = Exchange::new(route, tokens);
        exchange.next_peer(std::time::Instant::now()).unwrap();
        let mut request = RequestHeader::build("GET", target, None).unwrap();
        let id = HeaderValue::from_static("id-1");
        let connection = Connection {
            client: None,
            tls: false,
        };
        upstream_request(&exchange, connection, &id, &mut request).unwrap();
        request
    }

    #[tokio::test]
    async fn a_route_that_keeps_the_path_forwards_the_target_as_sent() {
        let request = rewritten("http://127.0.0.1:9000", b"/a//b?q=1&r");
        assert_eq!(request.raw_path(), b"/a//b?q=1&r");
    }

    #[tokio::test]
    async fn an_absolute_form_target_becomes_a_path() {
        let request = rewritten("http://127.0.0.1:9000", b"http://client.example/a?q=1");
        assert_eq!(request.raw_path(), b"/a?q=1");
        assert_eq!(request.uri.authority(), None);
    }

    #[tokio::test]
    async fn a_backend_base_path_goes_in_front() {
        let request = rewritten("http://127.0.0.1:9000/base", b"/a?q=1");
        assert_eq!(request.raw_path(), b"/base/a?q=1");
    }

    #[test]
    fn addresses_print_as_display_does() {
        let addresses: [IpAddr; 6] = [
            [0, 0, 0, 0].into(),
            [127, 0, 0, 1].into(),
            [10, 20, 199, 255].into(),
            [100, 9, 90, 109].into(),
            "::1".parse().unwrap(),
            "2001:db8::42:1".parse().unwrap(),
        ];
        for ip in addresses {
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn the_client_is_appended_to_earlier_proxies() {
        let client = IpAddr::from([10, 0, 0, 7]);
        assert_eq!(forwarded_for(None, client), "10.0.0.7");
        let earlier = HeaderValue::from_static("203.0.113.9");
        assert_eq!(
            forwarded_for(Some(&earlier), client),
            "203.0.113.9, 10.0.0.7"
        );
    }
}
