//! The MCP listener: `mcp.inbound` in front of the rmcp streamable HTTP service, and the
//! RFC 9728 protected resource metadata beside it.
//!
//! The service runs stateless (no `Mcp-Session-Id`): every POST is answered on its own, as
//! JSON, so any replica can answer any request and nothing is held between requests.
//! Clients of 2025-06-18 and 2025-11-25 still `initialize` first; 2026-07-28 clients send
//! the protocol version with each request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use super::call::Caller;
use super::handler::Handler;
use crate::config::McpListener;
use crate::inbound::Refusal;

const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";
/// Largest JSON-RPC message accepted.
const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Clone)]
struct EndpointState {
    caller: Arc<Caller>,
    settings: Arc<McpListener>,
}

pub fn router(settings: McpListener, caller: Arc<Caller>) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(MAX_MESSAGE_BYTES);
    config = if settings.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(settings.allowed_hosts.clone())
    };
    let handler = Handler {
        caller: Arc::clone(&caller),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let path = settings.path.clone();
    let state = EndpointState {
        caller,
        settings: Arc::new(settings),
    };
    Router::new()
        .route_service(&path, service)
        .layer(middleware::from_fn_with_state(state.clone(), check_caller))
        .route(&format!("{METADATA_PREFIX}{path}"), get(metadata))
        .route(METADATA_PREFIX, get(metadata))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the MCP endpoint until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, settings: McpListener, caller: Arc<Caller>) {
    if let Err(error) = axum::serve(listener, router(settings, caller)).await {
        tracing::error!(%error, "MCP listener stopped");
    }
}

/// `mcp.inbound`: a caller that does not pass gets the refusal, and never reaches a tool.
async fn check_caller(
    State(state): State<EndpointState>,
    request: Request,
    next: Next,
) -> Response {
    let generation = state.caller.live.load_full();
    let catalog = &generation.mcp;
    let Some(inbound) = &catalog.inbound else {
        return next.run(request).await;
    };
    // The MCP listener is plain HTTP: there is never a client certificate (`tollgate
    // check` refuses `mcp.inbound.client_cert`).
    match inbound
        .check(request.method(), request.headers(), None)
        .await
    {
        Ok(_) => next.run(request).await,
        Err(refusal) => {
            let metadata = catalog
                .oauth
                .then(|| metadata_url(&state.settings, catalog, request.headers()));
            let mut response = refuse(&refusal, metadata.as_deref());
            if !drain(request).await {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// Reads a refused request's body to its end, so that the connection can carry the
/// caller's next request (a client that probes, reads the 401 and then fetches the
/// metadata reuses it; unread body bytes would make the server drop it under the client's
/// feet). A body too large or too slow is not waited for: the answer then closes the
/// connection instead.
async fn drain(request: Request) -> bool {
    const MAX_DRAINED_BYTES: usize = 64 << 10;
    const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);
    let body = axum::body::to_bytes(request.into_body(), MAX_DRAINED_BYTES);
    matches!(tokio::time::timeout(DRAIN_TIME, body).await, Ok(Ok(_)))
}

fn refuse(refusal: &Refusal, metadata: Option<&str>) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = (
        status,
        Json(json!({"error": refusal.error(), "route": "mcp", "detail": refusal.detail()})),
    )
        .into_response();
    let challenge = match (refusal, metadata) {
        (
            Refusal::Unauthenticated {
                www_authenticate, ..
            },
            Some(url),
        ) => {
            if www_authenticate.starts_with("Bearer") {
                Some(format!("{www_authenticate}, resource_metadata=\"{url}\""))
            } else {
                Some(format!("Bearer resource_metadata=\"{url}\""))
            }
        }
        (
            Refusal::Unauthenticated {
                www_authenticate, ..
            },
            None,
        ) => Some(www_authenticate.clone()),
        (Refusal::Forbidden { .. }, Some(url)) => Some(format!(
            "Bearer error=\"insufficient_scope\", resource_metadata=\"{url}\""
        )),
        _ => None,
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    if let Refusal::Unavailable { retry_after, .. } = refusal {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
    }
    response
}

/// The resource identifier: `resource_metadata.resource`, else this endpoint's URL as the
/// caller named its host.
fn resource(settings: &McpListener, catalog: &super::Catalog, headers: &HeaderMap) -> String {
    match &catalog.resource_metadata.resource {
        Some(url) => url.as_str().to_owned(),
        None => format!("http://{}{}", authority(settings, headers), settings.path),
    }
}

/// RFC 9728 section 3.1: the well-known prefix put between the host and the path.
fn metadata_url(settings: &McpListener, catalog: &super::Catalog, headers: &HeaderMap) -> String {
    match &catalog.resource_metadata.resource {
        Some(url) => {
            let path = url.path().trim_end_matches('/');
            format!(
                "{}{METADATA_PREFIX}{path}",
                url.origin().ascii_serialization()
            )
        }
        None => format!(
            "http://{}{METADATA_PREFIX}{}",
            authority(settings, headers),
            settings.path
        ),
    }
}

/// The `Host` the caller sent, when it is a plain authority; else the listener's address.
fn authority(settings: &McpListener, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map_or_else(|| settings.listen.to_string(), str::to_owned)
}

async fn metadata(State(state): State<EndpointState>, headers: HeaderMap) -> Response {
    let generation = state.caller.live.load_full();
    let catalog = &generation.mcp;
    if !catalog.oauth {
        return not_found().await;
    }
    let metadata = &catalog.resource_metadata;
    let mut document = json!({
        "resource": resource(&state.settings, catalog, &headers),
        "authorization_servers": metadata.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "tollgate MCP endpoint",
    });
    if !metadata.scopes_supported.is_empty() {
        document["scopes_supported"] = json!(metadata.scopes_supported);
    }
    Json(document).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no_route", "detail": "this listener serves the MCP endpoint (server.mcp.path)"})),
    )
        .into_response()
}
