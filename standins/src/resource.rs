//! A resource server (RFC 6750): an upstream that serves a bearer token only when the OAuth2
//! stand-in it trusts issued it, it is still live (not expired, not revoked), and its
//! audience names this server's resource URI (RFC 8707). It answers 401 with an
//! `invalid_token` challenge otherwise, as real APIs behind an authorization server do, and
//! counts both outcomes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::json;

use crate::handle::{Provider as _, StandIn};
use crate::oauth2::{OAuth2, OAuth2StandIn};
use crate::{any_loopback_port, json_response, jwt};

/// The resource server.
pub type ResourceServer = StandIn<Resource>;

/// The state of the resource server.
pub struct Resource {
    issuer: Arc<OAuth2>,
    resource: String,
    accepted: AtomicUsize,
    rejected: AtomicUsize,
}

impl ResourceServer {
    /// A resource server for `resource` (an absolute URI), trusting the tokens of `issuer`.
    pub async fn start(issuer: &OAuth2StandIn, resource: &str) -> std::io::Result<ResourceServer> {
        Self::start_on(any_loopback_port(), issuer, resource).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        issuer: &OAuth2StandIn,
        resource: &str,
    ) -> std::io::Result<ResourceServer> {
        let state = |_| Resource {
            issuer: issuer.shared_state(),
            resource: resource.to_owned(),
            accepted: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        };
        Self::launch(addr, state, Router::new().fallback(serve)).await
    }

    /// Requests served.
    pub fn accepted(&self) -> usize {
        self.state().accepted.load(Ordering::SeqCst)
    }

    /// Requests answered 401.
    pub fn rejected(&self) -> usize {
        self.state().rejected.load(Ordering::SeqCst)
    }
}

async fn serve(State(state): State<Arc<Resource>>, headers: HeaderMap) -> Response {
    match check(&state, &headers) {
        Ok(subject) => {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            json_response(StatusCode::OK, &json!({"ok": true, "sub": subject}))
        }
        Err(description) => {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            let mut response = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_token", "error_description": description}),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            response
        }
    }
}

/// The token's subject, or why it is refused.
fn check(state: &Resource, headers: &HeaderMap) -> Result<String, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let live = state
        .issuer
        .tokens()
        .book()
        .live(token)
        .is_some_and(OAuth2::usable);
    if !live {
        return Err("the token is unknown, expired or revoked");
    }
    let claims = jwt::verify(token).map_err(|_| "the token is not a valid JWT")?;
    if !claims
        .aud
        .as_ref()
        .is_some_and(|audience| audience.contains(&state.resource))
    {
        return Err("the token's audience is not this resource");
    }
    Ok(claims.sub)
}
