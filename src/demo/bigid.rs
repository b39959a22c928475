//! The BigID authentication API (seeds 000 and 001), base path `/api/v1`:
//!
//! - `POST /api/v1/sessions` with `{"username","password"}` returns `auth_token` (a JWT);
//! - `POST /api/v1/refresh-access-token` with `Authorization: Bearer <user token>` returns
//!   `systemToken` (a JWT).
//!
//! BigID gives no `expires_in`: the lifetime is only in the JWT's `exp` claim.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::{any_loopback_port, json_response, jwt, lock, serve_listener, RunningServer};
use crate::secret::Secret;

/// `POST` here with username and password.
pub const SESSIONS_PATH: &str = "/api/v1/sessions";
/// `POST` here with the user token.
pub const REFRESH_PATH: &str = "/api/v1/refresh-access-token";
/// `sub` of system tokens (a user token names no user in this stand-in).
pub const SYSTEM_SUBJECT: &str = "bigid-system";

/// What the stand-in accepts.
#[derive(Clone, Debug)]
pub struct BigIdSettings {
    /// username, password for `POST /api/v1/sessions`.
    pub users: Vec<(String, Secret)>,
    /// Long-lived user tokens for `POST /api/v1/refresh-access-token`.
    pub user_tokens: Vec<Secret>,
    /// Lifetime of `auth_token` and `systemToken` (their `exp` claim).
    pub token_ttl: Duration,
}

impl Default for BigIdSettings {
    fn default() -> Self {
        BigIdSettings {
            users: vec![("bigid-admin".to_owned(), Secret::new("bigid-password"))],
            user_tokens: vec![Secret::new("demo-bigid-user-token")],
            token_ttl: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
struct TokenStore {
    order: Vec<String>,
    /// token → (expires at, revoked)
    by_value: HashMap<String, (Instant, bool)>,
}

struct Shared {
    issuer: String,
    users: Vec<(String, Secret)>,
    user_tokens: Vec<Secret>,
    token_ttl: Mutex<Duration>,
    available: AtomicBool,
    session_requests: AtomicUsize,
    refresh_requests: AtomicUsize,
    tokens: Mutex<TokenStore>,
}

impl Shared {
    fn mint(&self, subject: &str) -> String {
        let ttl = *lock(&self.token_ttl);
        let token = jwt::mint(subject, &self.issuer, ttl);
        let mut tokens = lock(&self.tokens);
        tokens.order.push(token.clone());
        tokens
            .by_value
            .insert(token.clone(), (Instant::now() + ttl, false));
        token
    }
}

/// The BigID stand-in.
pub struct BigIdStandIn {
    server: RunningServer,
    shared: Arc<Shared>,
}

impl BigIdStandIn {
    /// Start on `127.0.0.1:0`.
    pub async fn start(settings: BigIdSettings) -> std::io::Result<BigIdStandIn> {
        Self::start_on(any_loopback_port(), settings).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        settings: BigIdSettings,
    ) -> std::io::Result<BigIdStandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            issuer,
            users: settings.users,
            user_tokens: settings.user_tokens,
            token_ttl: Mutex::new(settings.token_ttl),
            available: AtomicBool::new(true),
            session_requests: AtomicUsize::new(0),
            refresh_requests: AtomicUsize::new(0),
            tokens: Mutex::new(TokenStore::default()),
        });
        let router = Router::new()
            .route(SESSIONS_PATH, post(sessions))
            .route(REFRESH_PATH, post(refresh_access_token))
            .with_state(shared.clone());
        let server = serve_listener(router, listener)?;
        Ok(BigIdStandIn { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The base URL, `http://127.0.0.1:PORT` (paths are `/api/v1/...`). Also the JWTs' `iss`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `POST /api/v1/sessions` requests, whatever the outcome.
    pub fn session_requests(&self) -> usize {
        self.shared.session_requests.load(Ordering::SeqCst)
    }

    /// `POST /api/v1/refresh-access-token` requests, whatever the outcome.
    pub fn refresh_requests(&self) -> usize {
        self.shared.refresh_requests.load(Ordering::SeqCst)
    }

    /// When down, both endpoints answer 503 `{"success":false,"message":"service unavailable"}`.
    pub fn set_available(&self, up: bool) {
        self.shared.available.store(up, Ordering::SeqCst);
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        *lock(&self.shared.token_ttl) = ttl;
    }

    /// Every `auth_token` and `systemToken` issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).order.clone()
    }

    /// Issued here, not expired, not revoked.
    pub fn is_valid_token(&self, token: &str) -> bool {
        lock(&self.shared.tokens)
            .by_value
            .get(token)
            .is_some_and(|(expires_at, revoked)| !revoked && Instant::now() < *expires_at)
    }

    /// Every token issued so far becomes invalid.
    pub fn revoke_all(&self) {
        for (_, revoked) in lock(&self.shared.tokens).by_value.values_mut() {
            *revoked = true;
        }
    }

    pub async fn stop(self) {
        self.server.stop().await
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"success": false, "message": message}))
}

fn unavailable() -> Response {
    failure(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

async fn sessions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.session_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.available.load(Ordering::SeqCst) {
        return unavailable();
    }
    let invalid = || failure(StatusCode::UNAUTHORIZED, "Invalid credentials");
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return invalid();
    };
    let (Some(Value::String(username)), Some(Value::String(password))) =
        (request.get("username"), request.get("password"))
    else {
        return invalid();
    };
    let known = shared
        .users
        .iter()
        .any(|(u, p)| u == username && p.expose() == password);
    if !known {
        return invalid();
    }
    let auth_token = shared.mint(username);
    json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": "Enjoy your token!",
            "auth_token": auth_token,
            "username": username,
            "firstName": username,
            "permissions": ["admin"],
        }),
    )
}

async fn refresh_access_token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.refresh_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.available.load(Ordering::SeqCst) {
        return unavailable();
    }
    let user_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("Bearer")
                .then_some(token.trim())
        });
    let known = user_token.is_some_and(|token| {
        !token.is_empty() && shared.user_tokens.iter().any(|t| t.expose() == token)
    });
    if !known {
        return failure(StatusCode::UNAUTHORIZED, "Invalid user token");
    }
    let system_token = shared.mint(SYSTEM_SUBJECT);
    json_response(
        StatusCode::OK,
        &json!({"success": true, "systemToken": system_token}),
    )
}
