//! What the upstream receives: the rewritten path, its own Host, the injected credential
//! in place of any the caller sent, and the forwarding headers.

use std::net::IpAddr;

use http::{HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::route::{CompiledRoute, UpstreamBackend};
use crate::tokens::Token;

pub fn upstream_request(
    route: &CompiledRoute,
    backend: &UpstreamBackend,
    token: Option<&Token>,
    client: Option<IpAddr>,
    request_id: &str,
    request: &mut RequestHeader,
) -> pingora::Result<()> {
    let path = route.upstream_path(backend, request.uri.path(), request.uri.query());
    let uri: Uri = path.parse().map_err(|_| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "rewritten path is not a valid URI",
        )
    })?;
    request.set_uri(uri);
    if !route.preserve_host {
        request.insert_header(http::header::HOST, backend.authority.clone())?;
    }
    if let Some(credential) = &route.credential {
        let Some(token) = token else {
            // Never forward a request that should carry a credential without one.
            return Err(Error::explain(
                ErrorType::InternalError,
                "route needs a credential but none is held",
            ));
        };
        // The caller's own copy must never reach the upstream next to ours.
        request.remove_header(&credential.header);
        let rendered = credential
            .format
            .render(token.value.expose(), &token.token_type);
        let mut value = HeaderValue::from_str(&rendered).map_err(|_| {
            Error::explain(
                ErrorType::InternalError,
                "token is not a valid header value",
            )
        })?;
        // Sensitive values print as "Sensitive" in pingora's debug log of the request.
        value.set_sensitive(true);
        request.insert_header(credential.header.clone(), value)?;
    }
    if let Some(client) = client {
        let value = match request
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) => format!("{existing}, {client}"),
            None => client.to_string(),
        };
        request.insert_header("x-forwarded-for", value)?;
    }
    request.insert_header("x-forwarded-proto", "http")?;
    request.insert_header("x-request-id", request_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensitive_header_value_does_not_print() {
        let mut value = HeaderValue::from_static("Bearer secret-token");
        value.set_sensitive(true);
        let mut request = RequestHeader::build("GET", b"/x", None).unwrap();
        request.insert_header("authorization", value).unwrap();
        let printed = format!("{request:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
    }
}
