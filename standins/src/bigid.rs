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
    use crate::testing::started;
    use crate::testing::{
        assert_delay_applies, assert_jwt_of, assert_only_post, assert_ttl_expiry_and_revocation,
        post_auth, Reply,
    };

    const GOOD_LOGIN: &str = r#"{"username":"bigid-admin","password":"bigid-password"}"#;
    const USER_TOKEN: &str = "Bearer demo-bigid-user-token";

    async fn start(settings: BigIdSettings) -> BigIdStandIn {
        BigIdStandIn::start(settings).await.unwrap()
    }

    async fn session(bigid: &BigIdStandIn, body: Option<&str>) -> Reply {
        post_auth(&format!("{}{SESSIONS_PATH}", bigid.url()), None, body).await
    }

    async fn refresh(bigid: &BigIdStandIn, authorization: Option<&str>) -> Reply {
        post_auth(
            &format!("{}{REFRESH_PATH}", bigid.url()),
            authorization,
            None,
        )
        .await
    }

    /// A refusal: `status` with `{"success": false, "message": message}`, as JSON.
    fn assert_failure(reply: &Reply, status: u16, message: &str) {
        assert_eq!(reply.status, status, "{}", reply.text);
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(reply.json(), json!({"success": false, "message": message}));
    }

    #[tokio::test]
    async fn session_with_username_and_password() {
        let bigid: BigIdStandIn = started().await;
        let reply = session(&bigid, Some(GOOD_LOGIN)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "application/json");
        let body = reply.json();
        assert_eq!(body["success"], true);
        assert!(body["message"].is_string());
        assert_eq!(body["username"], "bigid-admin");
        assert!(body["firstName"].is_string());
        assert_eq!(body["permissions"], json!(["admin"]));
        assert!(body.get("expires_in").is_none());
        let token = body["auth_token"].as_str().unwrap();
        assert_jwt_of(&bigid, token, "bigid-admin", 300);
        assert_eq!(bigid.issued_tokens(), [token]);
        assert_eq!(bigid.session_requests(), 1);
        assert_eq!(bigid.refresh_requests(), 0);
        bigid.stop().await;
    }

    #[tokio::test]
    async fn bad_logins_and_user_tokens_are_401() {
        let bigid: BigIdStandIn = started().await;
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
            assert_failure(&session(&bigid, body).await, 401, "Invalid credentials");
        }
        let headers = [
            None,
            Some("Bearer wrong-token"),
            Some("Bearer "),
            Some("demo-bigid-user-token"),
            Some("Basic ZGVtbzpkZW1v"),
        ];
        for header in headers {
            assert_failure(&refresh(&bigid, header).await, 401, "Invalid user token");
        }
        assert_eq!(bigid.session_requests(), bodies.len());
        assert_eq!(bigid.refresh_requests(), headers.len());
        assert!(bigid.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn refresh_access_token_with_bearer_user_token() {
        let bigid: BigIdStandIn = started().await;
        let body = refresh(&bigid, Some(USER_TOKEN)).await.json();
        assert_eq!(body["success"], true);
        let token = body["systemToken"].as_str().unwrap();
        let claims = jwt::verify(token).unwrap();
        assert_eq!(claims.sub, SYSTEM_SUBJECT);
        assert!(bigid.is_valid_token(token));
        assert_eq!(bigid.refresh_requests(), 1);
        assert_eq!(bigid.session_requests(), 0);
        // The scheme is case-insensitive.
        let reply = refresh(&bigid, Some("bearer demo-bigid-user-token")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(bigid.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn unavailable_answers_503_and_still_counts() {
        let bigid: BigIdStandIn = started().await;
        bigid.set_available(false);
        let down = "service unavailable";
        assert_failure(&session(&bigid, Some(GOOD_LOGIN)).await, 503, down);
        assert_failure(&refresh(&bigid, Some(USER_TOKEN)).await, 503, down);
        assert_eq!(bigid.session_requests(), 1);
        assert_eq!(bigid.refresh_requests(), 1);
        assert!(bigid.issued_tokens().is_empty());
        bigid.set_available(true);
        assert_eq!(session(&bigid, Some(GOOD_LOGIN)).await.status, 200);
    }

    #[tokio::test]
    async fn revoke_all_and_ttl() {
        let bigid: BigIdStandIn = started().await;
        // A session's auth_token first, then a systemToken.
        let logins = std::sync::atomic::AtomicUsize::new(0);
        let (first, second) = assert_ttl_expiry_and_revocation(&bigid, || async {
            let token = if logins.fetch_add(1, Ordering::SeqCst) == 0 {
                session(&bigid, Some(GOOD_LOGIN)).await.json()["auth_token"].clone()
            } else {
                refresh(&bigid, Some(USER_TOKEN)).await.json()["systemToken"].clone()
            };
            let token = token.as_str().unwrap().to_owned();
            let claims = jwt::verify(&token).unwrap();
            (token, claims.exp - claims.iat)
        })
        .await;
        assert_eq!(bigid.issued_tokens(), [first, second]);
    }

    #[tokio::test]
    async fn delay_slows_both_endpoints() {
        let bigid: BigIdStandIn = started().await;
        assert_delay_applies(&bigid, || async {
            session(&bigid, Some(GOOD_LOGIN)).await.status
        })
        .await;
        assert_delay_applies(&bigid, || async {
            refresh(&bigid, Some(USER_TOKEN)).await.status
        })
        .await;
        assert_eq!(bigid.session_requests(), 2);
        assert_eq!(bigid.refresh_requests(), 2);
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let bigid: BigIdStandIn = started().await;
        let urls = [SESSIONS_PATH, REFRESH_PATH].map(|path| format!("{}{path}", bigid.url()));
        assert_only_post(&urls, || {
            bigid.session_requests() + bigid.refresh_requests()
        })
        .await;
    }

    #[tokio::test]
    async fn custom_settings() {
        let settings = BigIdSettings {
            users: vec![("ops".into(), "pw".to_owned())],
            user_tokens: vec!["t1".to_owned(), "t2".to_owned()],
            token_ttl: Duration::from_secs(60),
        };
        let bigid = start(settings).await;
        let reply = session(&bigid, Some(r#"{"username":"ops","password":"pw"}"#)).await;
        assert_eq!(reply.status, 200);
        let claims = jwt::verify(reply.json()["auth_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.exp, claims.iat + 60);
        assert_eq!(session(&bigid, Some(GOOD_LOGIN)).await.status, 401);
        assert_eq!(refresh(&bigid, Some("Bearer t2")).await.status, 200);
        assert_eq!(refresh(&bigid, Some(USER_TOKEN)).await.status, 401);
    }
}
