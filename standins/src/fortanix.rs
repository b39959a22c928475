//! Fortanix DSM session authentication (seed 003):
//!
//! - `POST /sys/v1/session/auth`, authenticated either by HTTP Basic (`Authorization: Basic
//!   base64(id:secret)`, where `id` is a user's email and `secret` their password, or `id`
//!   an app id (UUID) and `secret` the app's secret), or by a JSON body with a `method`:
//!   `"password"` (`email`, `password`, optional `recaptcha_response`), `"auth-by-app-name"`
//!   (`acct_id`, `name`, `password`) or `"ldap-basic-auth"` (`idp_id`, `email`, `password`,
//!   optional `acct_id`). An optional top-level `token_type` (`"Bearer"` or `"Cookie"`) is
//!   echoed in the reply (default `"Bearer"`; no cookie is set either way).
//!   Success is 200 `{"token_type","expires_in","access_token","entity_id"}`; the access
//!   token is opaque.
//! - A user with `mfa: true` (by Basic or the `password` method) gets the same 200 plus
//!   `challenge {u2f_challenge, u2f_keys}` and `allowed_mfa_methods [{"Fido2": {"challenge":
//!   {"challenge"}}}]`. That token stays unusable ([`FortanixStandIn::is_valid_token`] is
//!   false): the stand-in does not implement `POST /sys/v1/session/auth/2fa/fido2`.
//! - `POST /sys/v1/session/terminate` with `Authorization: Bearer <token>`: 204, and the
//!   token is no longer valid.
//!
//! Errors are **plain text** (`text/plain; charset=utf-8`), as DSM answers them:
//!
//! | case | status |
//! |---|---|
//! | no Basic header and no body `method` (empty body, `{}`, only `token_type`) | 401 |
//! | wrong email/app id/password/secret, malformed Basic value | 401 |
//! | body not a JSON object; unknown `method`; the seed's `saml-response`, `oauth-auth-code`, `aws-iam` (not implemented here); a required field missing or not a string; `acct_id` not a UUID; `token_type` not `Bearer`/`Cookie` | 400 |
//! | terminate without a Bearer token, or with one that is unknown, expired, revoked or already terminated | 401 |
//! | [`FortanixStandIn::set_available`]`(false)` | 503 |
//!
//! With a Basic header the body is optional; when present it must be a JSON object and only
//! its `token_type` is read. An `Authorization` header of another scheme is ignored.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::controls::{Switches, Tokens};
use crate::handle::{answer, Provider, StandIn, Switched};
use crate::{
    basic_credentials, header_text, json_response, jwt, lock, strip_scheme, typed_response,
};

/// `POST` here to start a session.
pub const AUTH_PATH: &str = "/sys/v1/session/auth";
/// `POST` here with the bearer token to end the session.
pub const TERMINATE_PATH: &str = "/sys/v1/session/terminate";
/// The app id of the default demo app.
pub const DEMO_APP_ID: &str = "3f8b1a52-6c2e-4d3a-9b7f-0e5d2c1a4b69";
/// The account id of the default demo app.
pub const DEMO_ACCT_ID: &str = "a1c0e7d4-2b9f-4e61-8d35-7f4c6b2e9a10";

/// A DSM user: logs in with email and password (Basic, `password` method).
#[derive(Clone, Debug)]
pub struct FortanixUser {
    pub email: String,
    pub password: String,
    /// The user has an MFA device: logins answer with a 2FA challenge and a token that
    /// cannot be used.
    pub mfa: bool,
}

/// A DSM app: logs in with app id and secret (Basic) or account, name and secret
/// (`auth-by-app-name`).
#[derive(Clone, Debug)]
pub struct FortanixApp {
    /// A UUID; also the `entity_id` of its sessions.
    pub app_id: String,
    pub name: String,
    /// A UUID.
    pub acct_id: String,
    pub secret: String,
}

/// What the stand-in accepts.
#[derive(Clone, Debug)]
pub struct FortanixSettings {
    pub users: Vec<FortanixUser>,
    pub apps: Vec<FortanixApp>,
    /// For `ldap-basic-auth`: idp_id, email, password.
    pub ldap_users: Vec<(String, String, String)>,
    /// Lifetime of access tokens (`expires_in`).
    pub token_ttl: Duration,
}

impl Default for FortanixSettings {
    fn default() -> Self {
        FortanixSettings {
            users: vec![FortanixUser {
                email: "demo@example.com".to_owned(),
                password: "demo-password".to_owned(),
                mfa: false,
            }],
            apps: vec![FortanixApp {
                app_id: DEMO_APP_ID.to_owned(),
                name: "demo-app".to_owned(),
                acct_id: DEMO_ACCT_ID.to_owned(),
                secret: "demo-app-secret".to_owned(),
            }],
            ldap_users: Vec::new(),
            token_ttl: Duration::from_secs(300),
        }
    }
}

/// The last request `POST /sys/v1/session/auth` received, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedAuthRequest {
    /// `"basic"` for an HTTP Basic login, else the body's `method` (whatever its value),
    /// or None when the request carried neither.
    pub method: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl RecordedAuthRequest {
    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// The `entity_id` the stand-in gives sessions of the user (or LDAP user) `email`: a UUID
/// derived from the email, stable across runs.
pub fn user_entity_id(email: &str) -> String {
    let digest = Sha256::digest(format!("fortanix-user:{email}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format_uuid(bytes)
}

/// Format 16 bytes as a version 4, RFC 4122 variant UUID.
fn format_uuid(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What the stand-in keeps about a session.
#[derive(Debug)]
pub struct Session {
    /// Waiting for a 2FA step that never comes.
    mfa_pending: bool,
}

/// The Fortanix DSM session stand-in. Down, both endpoints answer 503 `service
/// unavailable` (plain text).
pub type FortanixStandIn = StandIn<Dsm>;

/// The state of the Fortanix DSM session stand-in.
pub struct Dsm {
    users: Vec<FortanixUser>,
    apps: Vec<FortanixApp>,
    ldap_users: Vec<(String, String, String)>,
    switches: Switches,
    auth_requests: AtomicUsize,
    terminate_requests: AtomicUsize,
    /// Terminated sessions are retired.
    tokens: Tokens<Session>,
    last_auth_request: Mutex<Option<RecordedAuthRequest>>,
}

impl Switched for Dsm {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl Provider for Dsm {
    type Settings = FortanixSettings;
    type Facts = Session;

    fn new(settings: FortanixSettings, _url: String) -> Dsm {
        Dsm {
            users: settings.users,
            apps: settings.apps,
            ldap_users: settings.ldap_users,
            switches: Switches::default(),
            auth_requests: AtomicUsize::new(0),
            terminate_requests: AtomicUsize::new(0),
            tokens: Tokens::new(settings.token_ttl),
            last_auth_request: Mutex::new(None),
        }
    }

    fn router() -> Router<Arc<Dsm>> {
        Router::new()
            .route(AUTH_PATH, answer(MethodFilter::POST, session_auth))
            .route(
                TERMINATE_PATH,
                answer(MethodFilter::POST, session_terminate),
            )
    }

    fn tokens(&self) -> &Tokens<Session> {
        &self.tokens
    }

    /// A session waiting for its second factor cannot be used.
    fn usable(session: &Session) -> bool {
        !session.mfa_pending
    }
}

impl FortanixStandIn {
    /// `POST /sys/v1/session/auth` requests, whatever the outcome.
    pub fn auth_requests(&self) -> usize {
        self.state().auth_requests.load(Ordering::SeqCst)
    }

    /// `POST /sys/v1/session/terminate` requests, whatever the outcome.
    pub fn terminate_requests(&self) -> usize {
        self.state().terminate_requests.load(Ordering::SeqCst)
    }

    /// The last request `POST /sys/v1/session/auth` received.
    pub fn last_auth_request(&self) -> Option<RecordedAuthRequest> {
        lock(&self.state().last_auth_request).clone()
    }
}

fn text(status: StatusCode, message: &str) -> Response {
    typed_response(status, "text/plain; charset=utf-8", message.to_owned())
}

/// A refused request: status and plain-text message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn into_response(self) -> Response {
        text(self.status, &self.message)
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn unauthorized(message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
    }
}

fn unavailable() -> Response {
    text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

/// Who logged in.
struct Login {
    entity_id: String,
    mfa: bool,
}

fn session_auth(shared: &Dsm, headers: &HeaderMap, body: &[u8]) -> Response {
    shared.auth_requests.fetch_add(1, Ordering::SeqCst);
    let authorization = header_text(headers, header::AUTHORIZATION);
    let basic = authorization
        .as_deref()
        .and_then(|value| strip_scheme(value, "Basic"));
    let blank_body = body.iter().all(u8::is_ascii_whitespace);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let body_method = parsed
        .as_ref()
        .and_then(|v| v.get("method"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    *lock(&shared.last_auth_request) = Some(RecordedAuthRequest {
        method: if basic.is_some() {
            Some("basic".to_owned())
        } else {
            body_method
        },
        authorization: authorization.clone(),
        content_type: header_text(headers, header::CONTENT_TYPE),
        body: String::from_utf8_lossy(body).into_owned(),
    });

    if !shared.switches.is_available() {
        return unavailable();
    }

    let request = if blank_body {
        Map::new()
    } else {
        match parsed {
            Some(Value::Object(map)) => map,
            _ => return bad_request("the request body must be a JSON object").into_response(),
        }
    };
    let token_type = match request.get("token_type") {
        None | Some(Value::Null) => "Bearer",
        Some(Value::String(t)) if t == "Bearer" || t == "Cookie" => t.as_str(),
        Some(_) => {
            return bad_request("token_type must be \"Bearer\" or \"Cookie\"").into_response()
        }
    };

    let login = if let Some(encoded) = basic {
        basic_login(shared, encoded)
    } else {
        match request.get("method") {
            None => Err(unauthorized("no authentication given")),
            Some(Value::String(method)) => body_login(shared, method, &request),
            Some(_) => Err(bad_request("method must be a string")),
        }
    };
    match login {
        Ok(login) => issue(shared, token_type, login),
        Err(refusal) => refusal.into_response(),
    }
}

fn basic_login(shared: &Dsm, encoded: &str) -> Result<Login, Refusal> {
    let invalid = || unauthorized("invalid credentials");
    let Some((id, secret)) = basic_credentials(encoded) else {
        return Err(invalid());
    };
    if let Some(user) = shared.users.iter().find(|u| u.email == id) {
        return if user.password == secret {
            Ok(Login {
                entity_id: user_entity_id(&user.email),
                mfa: user.mfa,
            })
        } else {
            Err(invalid())
        };
    }
    match shared.apps.iter().find(|a| a.app_id == id) {
        Some(app) if app.secret == secret => Ok(Login {
            entity_id: app.app_id.clone(),
            mfa: false,
        }),
        _ => Err(invalid()),
    }
}

/// A required string field, or the 400 answer naming it.
fn required<'a>(request: &'a Map<String, Value>, field: &str) -> Result<&'a str, Refusal> {
    match request.get(field) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(bad_request(format!("{field} must be a string"))),
        None => Err(bad_request(format!("missing field {field}"))),
    }
}

/// An optional string field (null counts as absent), or the 400 answer naming it.
fn optional<'a>(request: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Refusal> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(bad_request(format!("{field} must be a string or null"))),
    }
}

fn uuid_field(field: &str, value: &str) -> Result<(), Refusal> {
    if is_uuid(value) {
        Ok(())
    } else {
        Err(bad_request(format!("{field} must be a UUID")))
    }
}

fn body_login(shared: &Dsm, method: &str, request: &Map<String, Value>) -> Result<Login, Refusal> {
    let invalid = || unauthorized("invalid credentials");
    match method {
        "password" => {
            let email = required(request, "email")?;
            let password = required(request, "password")?;
            optional(request, "recaptcha_response")?;
            match shared.users.iter().find(|u| u.email == email) {
                Some(user) if user.password == password => Ok(Login {
                    entity_id: user_entity_id(&user.email),
                    mfa: user.mfa,
                }),
                _ => Err(invalid()),
            }
        }
        "auth-by-app-name" => {
            let acct_id = required(request, "acct_id")?;
            let name = required(request, "name")?;
            let password = required(request, "password")?;
            uuid_field("acct_id", acct_id)?;
            let app = shared.apps.iter().find(|a| {
                a.acct_id.eq_ignore_ascii_case(acct_id) && a.name == name && a.secret == password
            });
            match app {
                Some(app) => Ok(Login {
                    entity_id: app.app_id.clone(),
                    mfa: false,
                }),
                None => Err(invalid()),
            }
        }
        "ldap-basic-auth" => {
            let idp_id = required(request, "idp_id")?;
            let email = required(request, "email")?;
            let password = required(request, "password")?;
            if let Some(acct_id) = optional(request, "acct_id")? {
                uuid_field("acct_id", acct_id)?;
            }
            let known = shared
                .ldap_users
                .iter()
                .any(|(i, e, p)| i == idp_id && e == email && p == password);
            if known {
                Ok(Login {
                    entity_id: user_entity_id(email),
                    mfa: false,
                })
            } else {
                Err(invalid())
            }
        }
        "saml-response" | "oauth-auth-code" | "aws-iam" => Err(bad_request(format!(
            "method {method} is not supported by this stand-in"
        ))),
        other => Err(bad_request(format!("unknown method {other}"))),
    }
}

fn random_challenge() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Record a session and return the 200 reply (with the 2FA challenge for an MFA user).
fn issue(shared: &Dsm, token_type: &str, login: Login) -> Response {
    let (access_token, ttl) = shared.tokens.issue(
        |_| jwt::opaque_token(),
        Session {
            mfa_pending: login.mfa,
        },
    );
    let mut body = json!({
        "token_type": token_type,
        "expires_in": ttl.as_secs(),
        "access_token": access_token,
        "entity_id": login.entity_id,
    });
    if login.mfa {
        body["challenge"] = json!({"u2f_challenge": random_challenge(), "u2f_keys": []});
        body["allowed_mfa_methods"] =
            json!([{"Fido2": {"challenge": {"challenge": random_challenge()}}}]);
    }
    json_response(StatusCode::OK, &body)
}

fn session_terminate(shared: &Dsm, headers: &HeaderMap, _: &[u8]) -> Response {
    shared.terminate_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.switches.is_available() {
        return unavailable();
    }
    let authorization = header_text(headers, header::AUTHORIZATION);
    let Some(token) = authorization
        .as_deref()
        .and_then(|value| strip_scheme(value, "Bearer"))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return unauthorized("a bearer token is required").into_response();
    };
    let mut tokens = shared.tokens.book();
    match tokens.get_mut(token) {
        // A session waiting for 2FA can be terminated too.
        Some(session) if session.is_live() => {
            session.retired = true;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => unauthorized("invalid or expired session").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::started;
    use crate::testing::{
        assert_delay_applies, assert_only_post, assert_ttl_expiry_and_revocation, basic, post_auth,
    };
    use base64::engine::general_purpose::STANDARD;

    /// POST to `path` with an optional Authorization header and an optional raw body
    /// (sent as application/json); returns status, content type and body text.
    async fn post(
        url: String,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, String) {
        let reply = post_auth(&url, authorization, body).await;
        (reply.status, reply.content_type, reply.text)
    }

    /// A Basic login with `id` and `secret`, without a body.
    async fn basic_login(dsm: &FortanixStandIn, id: &str, secret: &str) -> (u16, String, String) {
        post(auth_url(dsm), Some(&basic(id, secret)), None).await
    }

    /// `request` with each one field changed gets its status.
    async fn assert_changed_logins(
        dsm: &FortanixStandIn,
        request: &Value,
        changes: &[(&str, Value, u16)],
    ) {
        for (field, value, status) in changes {
            let mut changed = request.clone();
            changed[*field] = value.clone();
            let body = changed.to_string();
            let (got, _, text) = post(auth_url(dsm), None, Some(&body)).await;
            assert_eq!(got, *status, "{body}: {text}");
        }
    }

    fn auth_url(dsm: &FortanixStandIn) -> String {
        format!("{}/sys/v1/session/auth", dsm.url())
    }

    fn terminate_url(dsm: &FortanixStandIn) -> String {
        format!("{}/sys/v1/session/terminate", dsm.url())
    }

    fn json_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn assert_plain_error(status: u16, content_type: &str, body: &str, want: u16) {
        assert_eq!(status, want, "{body}");
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert!(!body.is_empty());
        assert!(serde_json::from_str::<Value>(body).is_err());
    }

    fn settings_with_everything() -> FortanixSettings {
        let mut settings = FortanixSettings::default();
        settings.users.push(FortanixUser {
            email: "mfa@example.com".into(),
            password: "mfa-password".to_owned(),
            mfa: true,
        });
        settings.ldap_users.push((
            "idp-1".into(),
            "ldap@example.com".into(),
            "ldap-password".to_owned(),
        ));
        settings
    }

    #[test]
    fn uuids() {
        let id = user_entity_id("demo@example.com");
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id, user_entity_id("demo@example.com"));
        assert_ne!(id, user_entity_id("other@example.com"));
        assert_eq!(&id[14..15], "4");
        assert!(is_uuid(DEMO_APP_ID) && is_uuid(DEMO_ACCT_ID));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("3f8b1a52-6c2e-4d3a-9b7f-0e5d2c1a4b6"));
        assert!(!is_uuid("3f8b1a52x6c2e-4d3a-9b7f-0e5d2c1a4b69"));
    }

    #[tokio::test]
    async fn basic_user_login() {
        let dsm: FortanixStandIn = started().await;
        let auth = basic("demo@example.com", "demo-password");
        let (status, content_type, body) = post(auth_url(&dsm), Some(&auth), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "application/json");
        let body = json_of(&body);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["entity_id"], user_entity_id("demo@example.com"));
        assert!(body.get("challenge").is_none());
        assert!(body.get("allowed_mfa_methods").is_none());
        let token = body["access_token"].as_str().unwrap();
        assert!(dsm.is_valid_token(token));
        assert!(!dsm.is_valid_token("nope"));
        assert_eq!(dsm.issued_tokens(), [token]);
        assert_eq!(dsm.auth_requests(), 1);
        assert_eq!(dsm.terminate_requests(), 0);
        let last = dsm.last_auth_request().unwrap();
        assert_eq!(last.method.as_deref(), Some("basic"));
        assert_eq!(last.authorization.as_deref(), Some(auth.as_str()));
        assert_eq!(last.body, "");
        assert_eq!(last.body_json(), None);
        dsm.stop().await;
    }

    #[tokio::test]
    async fn basic_app_login_and_token_type_in_body() {
        let dsm: FortanixStandIn = started().await;
        let auth = basic(DEMO_APP_ID, "demo-app-secret");
        let (status, _, body) = post(auth_url(&dsm), Some(&auth), None).await;
        assert_eq!(status, 200, "{body}");
        let body = json_of(&body);
        assert_eq!(body["entity_id"], DEMO_APP_ID);
        assert!(dsm.is_valid_token(body["access_token"].as_str().unwrap()));

        // The body may ask for a token type; the scheme is case-insensitive.
        let auth = format!(
            "basic {}",
            STANDARD.encode(format!("{DEMO_APP_ID}:demo-app-secret"))
        );
        let (status, _, body) = post(
            auth_url(&dsm),
            Some(&auth),
            Some(r#"{"token_type":"Cookie"}"#),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json_of(&body)["token_type"], "Cookie");
        let last = dsm.last_auth_request().unwrap();
        assert_eq!(last.method.as_deref(), Some("basic"));
        assert_eq!(last.content_type.as_deref(), Some("application/json"));
        assert_eq!(last.body_json(), Some(json!({"token_type": "Cookie"})));
        assert_eq!(dsm.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn bad_basic_credentials_are_401_plain_text() {
        let dsm: FortanixStandIn = started().await;
        let headers = [
            basic("demo@example.com", "wrong"),
            basic("nobody@example.com", "demo-password"),
            basic(DEMO_APP_ID, "wrong"),
            basic(DEMO_APP_ID, "demo-password"),
            basic("demo-app", "demo-app-secret"),
            "Basic !!!notbase64".to_owned(),
            format!("Basic {}", STANDARD.encode("no-colon")),
        ];
        for header in &headers {
            let (status, content_type, body) = post(auth_url(&dsm), Some(header), None).await;
            assert_plain_error(status, &content_type, &body, 401);
        }
        assert_eq!(dsm.auth_requests(), headers.len());
        assert!(dsm.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn missing_authentication_is_401() {
        let dsm: FortanixStandIn = started().await;
        for (authorization, body) in [
            (None, None),
            (None, Some("{}")),
            (None, Some(r#"{"token_type":"Bearer"}"#)),
            (Some("Bearer abc"), None),
            (
                Some("Bearer abc"),
                Some(r#"{"email":"demo@example.com","password":"demo-password"}"#),
            ),
        ] {
            let (status, content_type, text) = post(auth_url(&dsm), authorization, body).await;
            assert_plain_error(status, &content_type, &text, 401);
        }
        assert_eq!(dsm.last_auth_request().unwrap().method, None);
        assert!(dsm.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn password_method() {
        let dsm: FortanixStandIn = started().await;
        let (status, _, body) = post(
            auth_url(&dsm),
            None,
            Some(r#"{"method":"password","email":"demo@example.com","password":"demo-password"}"#),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let body = json_of(&body);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["entity_id"], user_entity_id("demo@example.com"));
        assert!(dsm.is_valid_token(body["access_token"].as_str().unwrap()));
        assert_eq!(
            dsm.last_auth_request().unwrap().method.as_deref(),
            Some("password")
        );

        // recaptcha_response (string or null) and token_type are accepted.
        for extra in [
            r#","recaptcha_response":"03AGdBq2"}"#,
            r#","recaptcha_response":null,"token_type":"Cookie"}"#,
        ] {
            let request = format!(
                r#"{{"method":"password","email":"demo@example.com","password":"demo-password"{extra}"#
            );
            let (status, _, body) = post(auth_url(&dsm), None, Some(&request)).await;
            assert_eq!(status, 200, "{request} {body}");
        }

        let (status, content_type, body) = post(
            auth_url(&dsm),
            None,
            Some(r#"{"method":"password","email":"demo@example.com","password":"nope"}"#),
        )
        .await;
        assert_plain_error(status, &content_type, &body, 401);
        let (status, _, _) = post(
            auth_url(&dsm),
            None,
            Some(r#"{"method":"password","email":"x@example.com","password":"demo-password"}"#),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(dsm.auth_requests(), 5);
        assert_eq!(dsm.issued_tokens().len(), 3);
    }

    #[tokio::test]
    async fn auth_by_app_name_method() {
        let dsm: FortanixStandIn = started().await;
        let request = json!({"method": "auth-by-app-name", "acct_id": DEMO_ACCT_ID,
                             "name": "demo-app", "password": "demo-app-secret"});
        let (status, _, body) = post(auth_url(&dsm), None, Some(&request.to_string())).await;
        assert_eq!(status, 200, "{body}");
        let body = json_of(&body);
        assert_eq!(body["entity_id"], DEMO_APP_ID);
        assert!(dsm.is_valid_token(body["access_token"].as_str().unwrap()));
        assert_eq!(
            dsm.last_auth_request().unwrap().method.as_deref(),
            Some("auth-by-app-name")
        );

        let changes = [
            ("password", json!("wrong"), 401),
            ("name", json!("other-app"), 401),
            (
                "acct_id",
                json!("00000000-0000-4000-8000-000000000000"),
                401,
            ),
            ("acct_id", json!("demo-account"), 400),
        ];
        assert_changed_logins(&dsm, &request, &changes).await;
    }

    #[tokio::test]
    async fn ldap_basic_auth_method() {
        let dsm = FortanixStandIn::start(settings_with_everything())
            .await
            .unwrap();
        let request = json!({"method": "ldap-basic-auth", "idp_id": "idp-1",
                             "email": "ldap@example.com", "password": "ldap-password"});
        let (status, _, body) = post(auth_url(&dsm), None, Some(&request.to_string())).await;
        assert_eq!(status, 200, "{body}");
        let body = json_of(&body);
        assert_eq!(body["entity_id"], user_entity_id("ldap@example.com"));
        assert!(dsm.is_valid_token(body["access_token"].as_str().unwrap()));

        let changes = [
            ("acct_id", json!(DEMO_ACCT_ID), 200),
            ("acct_id", Value::Null, 200),
            ("acct_id", json!("nope"), 400),
            ("password", json!("wrong"), 401),
            ("idp_id", json!("idp-2"), 401),
        ];
        assert_changed_logins(&dsm, &request, &changes).await;
        // LDAP users are not DSM users: no Basic login for them.
        let (status, _, _) = basic_login(&dsm, "ldap@example.com", "ldap-password").await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn malformed_bodies_and_missing_fields_are_400() {
        let dsm = FortanixStandIn::start(settings_with_everything())
            .await
            .unwrap();
        let bodies = [
            "not json",
            r#"["password"]"#,
            r#""password""#,
            r#"{"method":"magic"}"#,
            r#"{"method":42}"#,
            r#"{"method":"saml-response","response":"PHNhbWw+"}"#,
            r#"{"method":"oauth-auth-code","idp_id":"aWRw","code":"c","email":"a@b.c"}"#,
            r#"{"method":"aws-iam","acct_id":"a1c0e7d4-2b9f-4e61-8d35-7f4c6b2e9a10","region":"eu","headers":{}}"#,
            r#"{"method":"password","password":"demo-password"}"#,
            r#"{"method":"password","email":"demo@example.com"}"#,
            r#"{"method":"password","email":"demo@example.com","password":7}"#,
            r#"{"method":"password","email":"demo@example.com","password":"demo-password","recaptcha_response":1}"#,
            r#"{"method":"password","email":"demo@example.com","password":"demo-password","token_type":"Mac"}"#,
            r#"{"method":"auth-by-app-name","name":"demo-app","password":"demo-app-secret"}"#,
            r#"{"method":"auth-by-app-name","acct_id":"a1c0e7d4-2b9f-4e61-8d35-7f4c6b2e9a10","password":"demo-app-secret"}"#,
            r#"{"method":"auth-by-app-name","acct_id":"a1c0e7d4-2b9f-4e61-8d35-7f4c6b2e9a10","name":"demo-app"}"#,
            r#"{"method":"ldap-basic-auth","email":"ldap@example.com","password":"ldap-password"}"#,
            r#"{"method":"ldap-basic-auth","idp_id":"idp-1","password":"ldap-password"}"#,
            r#"{"method":"ldap-basic-auth","idp_id":"idp-1","email":"ldap@example.com"}"#,
        ];
        for body in bodies {
            let (status, content_type, text) = post(auth_url(&dsm), None, Some(body)).await;
            assert_plain_error(status, &content_type, &text, 400);
        }
        // With Basic, the body must still be a JSON object with a valid token_type.
        let auth = basic("demo@example.com", "demo-password");
        for body in ["not json", r#"{"token_type":"Mac"}"#] {
            let (status, _, _) = post(auth_url(&dsm), Some(&auth), Some(body)).await;
            assert_eq!(status, 400, "{body}");
        }
        assert_eq!(dsm.auth_requests(), bodies.len() + 2);
        assert!(dsm.issued_tokens().is_empty());
        assert_eq!(
            dsm.last_auth_request().unwrap().method.as_deref(),
            Some("basic")
        );
    }

    #[tokio::test]
    async fn mfa_user_gets_a_challenge_and_an_unusable_token() {
        let dsm = FortanixStandIn::start(settings_with_everything())
            .await
            .unwrap();
        let by_basic = basic_login(&dsm, "mfa@example.com", "mfa-password").await;
        let by_body = post(
            auth_url(&dsm),
            None,
            Some(r#"{"method":"password","email":"mfa@example.com","password":"mfa-password"}"#),
        )
        .await;
        for (status, _, body) in [by_basic, by_body] {
            assert_eq!(status, 200, "{body}");
            let body = json_of(&body);
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 300);
            assert_eq!(body["entity_id"], user_entity_id("mfa@example.com"));
            let challenge = &body["challenge"];
            assert!(!challenge["u2f_challenge"].as_str().unwrap().is_empty());
            assert_eq!(challenge["u2f_keys"], json!([]));
            let methods = body["allowed_mfa_methods"].as_array().unwrap();
            assert_eq!(methods.len(), 1);
            assert!(methods[0]["Fido2"]["challenge"]["challenge"].is_string());
            let token = body["access_token"].as_str().unwrap();
            assert!(dsm.issued_tokens().iter().any(|t| t == token));
            assert!(!dsm.is_valid_token(token), "usable only after 2FA");
        }
        // A wrong password for an MFA user is a plain 401.
        let (status, _, _) = basic_login(&dsm, "mfa@example.com", "wrong").await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn terminate_ends_the_session() {
        let dsm: FortanixStandIn = started().await;
        let (_, _, body) = basic_login(&dsm, "demo@example.com", "demo-password").await;
        let token = json_of(&body)["access_token"].as_str().unwrap().to_owned();
        assert!(dsm.is_valid_token(&token));

        let (status, _, text) =
            post(terminate_url(&dsm), Some(&format!("Bearer {token}")), None).await;
        assert_eq!(status, 204);
        assert_eq!(text, "");
        assert!(!dsm.is_valid_token(&token));
        assert_eq!(dsm.terminate_requests(), 1);

        // Already terminated, unknown, missing, other scheme.
        for header in [
            Some(format!("Bearer {token}")),
            Some("Bearer never-issued".to_owned()),
            Some("Bearer ".to_owned()),
            Some(basic("demo@example.com", "demo-password")),
            None,
        ] {
            let (status, content_type, text) =
                post(terminate_url(&dsm), header.as_deref(), None).await;
            assert_plain_error(status, &content_type, &text, 401);
        }
        assert_eq!(dsm.terminate_requests(), 6);
        assert_eq!(dsm.auth_requests(), 1);
    }

    #[tokio::test]
    async fn unavailable_answers_503_and_still_counts() {
        let dsm: FortanixStandIn = started().await;
        dsm.set_available(false);
        let auth = basic("demo@example.com", "demo-password");
        let (status, content_type, text) = post(auth_url(&dsm), Some(&auth), None).await;
        assert_plain_error(status, &content_type, &text, 503);
        let (status, _, _) = post(terminate_url(&dsm), Some("Bearer x"), None).await;
        assert_eq!(status, 503);
        assert_eq!(dsm.auth_requests(), 1);
        assert_eq!(dsm.terminate_requests(), 1);
        assert!(dsm.issued_tokens().is_empty());
        assert_eq!(
            dsm.last_auth_request().unwrap().method.as_deref(),
            Some("basic")
        );
        dsm.set_available(true);
        let (status, _, _) = post(auth_url(&dsm), Some(&auth), None).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn ttl_revoke_all_and_expiry() {
        let dsm: FortanixStandIn = started().await;
        let auth = basic("demo@example.com", "demo-password");
        let (first, second) = assert_ttl_expiry_and_revocation(&dsm, || async {
            let (_, _, body) = post(auth_url(&dsm), Some(&auth), None).await;
            let body = json_of(&body);
            let token = body["access_token"].as_str().unwrap().to_owned();
            (token, body["expires_in"].as_u64().unwrap())
        })
        .await;
        // A revoked session cannot be terminated either.
        let (status, _, _) =
            post(terminate_url(&dsm), Some(&format!("Bearer {first}")), None).await;
        assert_eq!(status, 401);
        assert_eq!(dsm.issued_tokens(), [first, second]);
    }

    #[tokio::test]
    async fn delay_slows_the_answer() {
        let dsm: FortanixStandIn = started().await;
        let auth = basic("demo@example.com", "demo-password");
        let url = auth_url(&dsm);
        assert_delay_applies(&dsm, || async {
            post(url.clone(), Some(&auth), None).await.0
        })
        .await;
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let dsm: FortanixStandIn = started().await;
        let urls = [auth_url(&dsm), terminate_url(&dsm)];
        assert_only_post(&urls, || dsm.auth_requests() + dsm.terminate_requests()).await;
    }
}
