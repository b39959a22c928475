//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`. It reports state and
//! fingerprints, never a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::live::Live;
use crate::metrics::Metrics;
use crate::tokens::TokenManager;

#[derive(Clone)]
pub struct AdminState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
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
    if let Err(error) = axum::serve(listener, router(state)).await {
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
        .filter(|status| status.seconds_to_expiry.is_none())
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

async fn status(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "providers": state.tokens().status().await,
    }))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no_route", "detail": "admin paths: /metrics /healthz /readyz /status"})),
    )
        .into_response()
}
