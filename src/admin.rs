//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`. It reports state and
//! fingerprints, never a token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::generation::Live;
use crate::metrics::Metrics;
use crate::secret::constant_time_eq;
use crate::tokens::TokenManager;

#[derive(Clone)]
pub struct AdminState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub status_access: StatusAccess,
}

/// Who may read `/status`. `/metrics`, `/healthz` and `/readyz` stay open: Prometheus and
/// the kubelet must reach them, and they carry no more than counts and readiness. `/status`
/// says more (fingerprints, provider errors, backoff), so a caller from another host reads
/// it only as a bearer of `server.admin_token`, and not at all when none is set. Callers on
/// loopback (this host, this pod, `kubectl port-forward`) always may.
#[derive(Clone)]
pub struct StatusAccess {
    /// The SHA-256 of `server.admin_token`.
    token: Option<[u8; 32]>,
}

impl StatusAccess {
    pub fn for_server(server: &crate::config::Server) -> StatusAccess {
        StatusAccess {
            token: server
                .admin_token
                .as_ref()
                .map(|token| Sha256::digest(token.expose().as_bytes()).into()),
        }
    }

    /// Whether only loopback callers can read `/status` (no token is set).
    pub fn loopback_only(&self) -> bool {
        self.token.is_none()
    }

    /// `None` when the request may read `/status`, else the refusal to send.
    fn refusal(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
        if peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback() {
            return None;
        }
        let Some(expected) = &self.token else {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/status is served to other hosts only with server.admin_token set",
            ));
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| Sha256::digest(token.trim().as_bytes()).into());
        match presented {
            Some(presented) if constant_time_eq(expected, &presented) => None,
            _ => {
                let mut response = refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "/status needs Authorization: Bearer <server.admin_token>",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
                );
                Some(response)
            }
        }
    }
}

fn refuse(status: StatusCode, error: &str, detail: &str) -> Response {
    (status, Json(json!({"error": error, "detail": detail}))).into_response()
}

impl AdminState {
    fn tokens(&self) -> Arc<TokenManager> {
        Arc::clone(&self.live.load().tokens)
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the admin router until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, service).await {
        tracing::error!(%error, "admin listener stopped");
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let statuses = state.tokens().status().await;
    let waiting: Vec<String> = statuses
        .iter()
        // A provider that mints a token per caller has none of its own to wait for.
        .filter(|status| status.per_caller.is_none() && status.seconds_to_expiry.is_none())
        .map(|status| match &status.last_error {
            Some(error) => format!("provider {} has no valid token: {error}", status.provider),
            None => format!("provider {} has no token yet", status.provider),
        })
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": waiting.join("; ")})),
        )
            .into_response()
    }
}

async fn status(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = state.status_access.refusal(peer, &headers) {
        return refusal;
    }
    let tokens = state.tokens();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": tokens.store_state(),
        "providers": tokens.status().await,
    }))
    .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no_route", "detail": "admin paths: /metrics /healthz /readyz /status"})),
    )
        .into_response()
}
