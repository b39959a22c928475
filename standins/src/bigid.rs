//! The BigID authentication API (seeds 000 and 001), base path `/api/v1`:
//!
//! - `POST /api/v1/sessions` with `{"username","password"}` returns `auth_token` (a JWT);
//! - `POST /api/v1/refresh-access-token` with `Authorization: Bearer <user token>` returns
//!   `systemToken` (a JWT).
//!
//! BigID gives no `expires_in`: the lifetime is only in the JWT's `exp` claim.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::MethodFilter;
use axum::Router;
use serde_json::{json, Value};

use crate::controls::{Switches, Tokens};
use crate::handle::{answer, Provider, StandIn, Switched};
use crate::{json_response, jwt, strip_scheme};

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
    pub users: Vec<(String, String)>,
    /// Long-lived user tokens for `POST /api/v1/refresh-access-token`.
    pub user_tokens: Vec<String>,
    /// Lifetime of `auth_token` and `systemToken` (their `exp` claim).
    pub token_ttl: Duration,
}

impl Default for BigIdSettings {
    fn default() -> Self {
        BigIdSettings {
            users: vec![("bigid-admin".to_owned(), "bigid-password".to_owned())],
            user_tokens: vec!["demo-bigid-user-token".to_owned()],
            token_ttl: Duration::from_secs(300),
        }
    }
}

/// The BigID stand-in. Down, both endpoints answer 503
/// `{"success":false,"message":"service unavailable"}`.
pub type BigIdStandIn = StandIn<BigId>;

/// The state of the BigID stand-in.
pub struct BigId {
    issuer: String,
    users: Vec<(String, String)>,
    user_tokens: Vec<String>,
    switches: Switches,
    session_requests: AtomicUsize,
    refresh_requests: AtomicUsize,
    tokens: Tokens<()>,
}

impl BigId {
    fn mint(&self, subject: &str) -> String {
        let (token, _) = self
            .tokens
            .issue(|ttl| jwt::mint(subject, &self.issuer, ttl), ());
        token
    }
}

impl Switched for BigId {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl Provider for BigId {
    type Settings = BigIdSettings;
    type Facts = ();

    fn new(settings: BigIdSettings, url: String) -> BigId {
        BigId {
            issuer: url,
            users: settings.users,
            user_tokens: settings.user_tokens,
            switches: Switches::default(),
            session_requests: AtomicUsize::new(0),
            refresh_requests: AtomicUsize::new(0),
            tokens: Tokens::new(settings.token_ttl),
        }
    }

    fn router() -> Router<Arc<BigId>> {
        Router::new()
            .route(SESSIONS_PATH, answer(MethodFilter::POST, sessions))
            .route(
                REFRESH_PATH,
                answer(MethodFilter::POST, refresh_access_token),
            )
    }

    fn tokens(&self) -> &Tokens<()> {
        &self.tokens
    }
}

impl BigIdStandIn {
    /// `POST /api/v1/sessions` requests, whatever the outcome.
    pub fn session_requests(&self) -> usize {
        self.state().session_requests.load(Ordering::SeqCst)
    }

    /// `POST /api/v1/refresh-access-token` requests, whatever the outcome.
    pub fn refresh_requests(&self) -> usize {
        self.state().refresh_requests.load(Ordering::SeqCst)
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"success": false, "message": message}))
}

fn unavailable() -> Response {
    failure(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

fn sessions(shared: &BigId, _: &HeaderMap, body: &[u8]) -> Response {
    shared.session_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.switches.is_available() {
        return unavailable();
    }
    let invalid = || failure(StatusCode::UNAUTHORIZED, "Invalid credentials");
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
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
        .any(|(u, p)| u == username && p == password);
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

fn refresh_access_token(shared: &BigId, headers: &HeaderMap, _: &[u8]) -> Response {
    shared.refresh_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.switches.is_available() {
        return unavailable();
    }
    let user_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "Bearer"))
        .map(str::trim);
    let known = user_token
        .is_some_and(|token| !token.is_empty() && shared.user_tokens.iter().any(|t| t == token));
    if !known {
        return failure(StatusCode::UNAUTHORIZED, "Invalid user token");
    }
    let system_token = shared.mint(SYSTEM_SUBJECT);
    json_response(
        StatusCode::OK,
        &json!({"success": true, "systemToken": system_token}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn post(
        url: String,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, Value) {
        let mut request = reqwest::Client::new().post(url);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let content_type = reply
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body: Value = reply.json().await.unwrap();
        (status, content_type, body)
    }

    fn sessions_url(bigid: &BigIdStandIn) -> String {
        format!("{}/api/v1/sessions", bigid.url())
    }

    fn refresh_url(bigid: &BigIdStandIn) -> String {
        format!("{}/api/v1/refresh-access-token", bigid.url())
    }

    const GOOD_LOGIN: &str = r#"{"username":"bigid-admin","password":"bigid-password"}"#;

    #[tokio::test]
    async fn session_with_username_and_password() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let (status, content_type, body) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "application/json");
        assert_eq!(body["success"], true);
        assert!(body["message"].is_string());
        assert_eq!(body["username"], "bigid-admin");
        assert!(body["firstName"].is_string());
        assert_eq!(body["permissions"], json!(["admin"]));
        assert!(body.get("expires_in").is_none());
        let token = body["auth_token"].as_str().unwrap();
        let claims = jwt::verify(token).unwrap();
        assert_eq!(claims.sub, "bigid-admin");
        assert_eq!(claims.iss, bigid.url());
        assert_eq!(claims.exp, claims.iat + 300);
        assert!(bigid.is_valid_token(token));
        assert!(!bigid.is_valid_token("nope"));
        assert_eq!(bigid.issued_tokens(), [token]);
        assert_eq!(bigid.session_requests(), 1);
        assert_eq!(bigid.refresh_requests(), 0);
        bigid.stop().await;
    }

    #[tokio::test]
    async fn bad_logins_are_401_invalid_credentials() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let bodies = [
            Some(r#"{"username":"bigid-admin","password":"wrong"}"#),
            Some(r#"{"username":"someone","password":"bigid-password"}"#),
            Some(r#"{"username":"bigid-admin"}"#),
            Some(r#"{"username":"bigid-admin","password":42}"#),
            Some(r#"["bigid-admin","bigid-password"]"#),
            Some("username=bigid-admin&password=bigid-password"),
            None,
        ];
        for body in bodies {
            let (status, _, reply) = post(sessions_url(&bigid), None, body).await;
            assert_eq!(status, 401, "{body:?}");
            assert_eq!(
                reply,
                json!({"success": false, "message": "Invalid credentials"})
            );
        }
        assert_eq!(bigid.session_requests(), bodies.len());
        assert!(bigid.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn refresh_access_token_with_bearer_user_token() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let (status, _, body) = post(
            refresh_url(&bigid),
            Some("Bearer demo-bigid-user-token"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["success"], true);
        let token = body["systemToken"].as_str().unwrap();
        let claims = jwt::verify(token).unwrap();
        assert_eq!(claims.sub, SYSTEM_SUBJECT);
        assert!(bigid.is_valid_token(token));
        assert_eq!(bigid.refresh_requests(), 1);
        assert_eq!(bigid.session_requests(), 0);
        // The scheme is case-insensitive.
        let (status, _, _) = post(
            refresh_url(&bigid),
            Some("bearer demo-bigid-user-token"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(bigid.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn refresh_with_missing_or_unknown_token_is_401() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let headers = [
            None,
            Some("Bearer wrong-token"),
            Some("Bearer "),
            Some("demo-bigid-user-token"),
            Some("Basic ZGVtbzpkZW1v"),
        ];
        for header in headers {
            let (status, _, body) = post(refresh_url(&bigid), header, None).await;
            assert_eq!(status, 401, "{header:?}");
            assert_eq!(
                body,
                json!({"success": false, "message": "Invalid user token"})
            );
        }
        assert_eq!(bigid.refresh_requests(), headers.len());
        assert!(bigid.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn unavailable_answers_503_and_still_counts() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        bigid.set_available(false);
        let (status, content_type, body) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 503);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            json!({"success": false, "message": "service unavailable"})
        );
        let (status, _, body) = post(
            refresh_url(&bigid),
            Some("Bearer demo-bigid-user-token"),
            None,
        )
        .await;
        assert_eq!(status, 503);
        assert_eq!(body["message"], "service unavailable");
        assert_eq!(bigid.session_requests(), 1);
        assert_eq!(bigid.refresh_requests(), 1);
        assert!(bigid.issued_tokens().is_empty());
        bigid.set_available(true);
        let (status, _, _) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn revoke_all_and_ttl() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let (_, _, body) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        let first = body["auth_token"].as_str().unwrap().to_owned();
        bigid.revoke_all();
        assert!(!bigid.is_valid_token(&first));

        bigid.set_token_ttl(Duration::from_secs(1));
        let (_, _, body) = post(
            refresh_url(&bigid),
            Some("Bearer demo-bigid-user-token"),
            None,
        )
        .await;
        let second = body["systemToken"].as_str().unwrap().to_owned();
        let claims = jwt::verify(&second).unwrap();
        assert_eq!(claims.exp, claims.iat + 1);
        assert!(bigid.is_valid_token(&second));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!bigid.is_valid_token(&second));
        assert_eq!(bigid.issued_tokens(), [first, second]);
    }

    #[tokio::test]
    async fn delay_slows_both_endpoints() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        bigid.set_delay(Duration::from_millis(300));
        let started = Instant::now();
        let (status, _, _) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 200);
        let (status, _, _) = post(
            refresh_url(&bigid),
            Some("Bearer demo-bigid-user-token"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(600));
        bigid.set_delay(Duration::ZERO);
        let started = Instant::now();
        let (status, _, _) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(bigid.session_requests(), 2);
        assert_eq!(bigid.refresh_requests(), 1);
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let bigid = BigIdStandIn::start(BigIdSettings::default()).await.unwrap();
        let client = reqwest::Client::new();
        for url in [sessions_url(&bigid), refresh_url(&bigid)] {
            assert_eq!(client.get(&url).send().await.unwrap().status(), 405);
            assert_eq!(client.put(&url).send().await.unwrap().status(), 405);
        }
        assert_eq!(bigid.session_requests(), 0);
        assert_eq!(bigid.refresh_requests(), 0);
    }

    #[tokio::test]
    async fn custom_settings() {
        let settings = BigIdSettings {
            users: vec![("ops".into(), "pw".to_owned())],
            user_tokens: vec!["t1".to_owned(), "t2".to_owned()],
            token_ttl: Duration::from_secs(60),
        };
        let bigid = BigIdStandIn::start(settings).await.unwrap();
        let (status, _, body) = post(
            sessions_url(&bigid),
            None,
            Some(r#"{"username":"ops","password":"pw"}"#),
        )
        .await;
        assert_eq!(status, 200);
        let claims = jwt::verify(body["auth_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.exp, claims.iat + 60);
        let (status, _, _) = post(sessions_url(&bigid), None, Some(GOOD_LOGIN)).await;
        assert_eq!(status, 401);
        let (status, _, _) = post(refresh_url(&bigid), Some("Bearer t2"), None).await;
        assert_eq!(status, 200);
        let (status, _, _) = post(
            refresh_url(&bigid),
            Some("Bearer demo-bigid-user-token"),
            None,
        )
        .await;
        assert_eq!(status, 401);
    }
}
