//! The BigBucks Solutions Auth Engine (seed 002), base path `/api/v1`:
//!
//! - `POST /api/v1/signin` with `{"username","password","recaptcha"?}` answers 200 with the
//!   body being a JSON **string**: the JWT (HS256 from [`super::jwt`], `sub` = username,
//!   `exp` = now + ttl), `Content-Type: application/json`.
//! - `GET /api/v1/me` with `X-Auth: <jwt>` answers the user's profile (`username`,
//!   `profile{...}`, `roles[...]`, `organizations[...]`, `isSocialAccount`).
//! - `POST /api/v1/user/authorize` with `X-Auth` and `{"action","resource","scope","orgID"?}`
//!   answers `{"status": true|false}` from the permission list in the settings (`orgID` is
//!   checked for type, not matched).
//!
//! `X-Auth` carries the bare JWT (no `Bearer` prefix); it must be one this stand-in issued,
//! unexpired and not revoked. Every error body is a JSON object `{"error": "..."}`. The seed
//! lists 400/404/500 for `/signin` and 400/500 for `/me` and `/user/authorize`; the mapping:
//!
//! | endpoint | case | status |
//! |---|---|---|
//! | signin | body not a JSON object; `username`/`password` missing, empty or not strings; `recaptcha` not a string | 400 `invalid request` |
//! | signin | settings require a recaptcha and it is missing or wrong | 400 `invalid recaptcha` |
//! | signin | unknown username | 404 `user not found` |
//! | signin | wrong password (the seed has no 401 here) | 400 `invalid credentials` |
//! | signin | [`BigBucksStandIn::set_fail_with`]`(Some(code))` | `code` `stand-in forced status` |
//! | me | `X-Auth` missing, unknown, expired or revoked (the seed has no 401 here) | 400 `invalid or missing X-Auth token` |
//! | authorize | `X-Auth` missing, unknown, expired or revoked (checked first) | 401 `unauthorized` |
//! | authorize | body not a JSON object; `action`/`resource`/`scope` missing or not strings; `orgID` not an integer | 400 `invalid request` |
//! | all three | [`BigBucksStandIn::set_available`]`(false)` (the seed has no 503) | 500 `internal server error` |

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::MethodFilter;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::controls::{Switches, Tokens};
use crate::handle::{answer, Provider, StandIn, Switched};
use crate::{header_text, json_response, jwt, lock};

/// The API's base path; the gateway's `base_url` ends with it.
pub const BASE_PATH: &str = "/api/v1";
/// `POST` here with username and password.
pub const SIGNIN_PATH: &str = "/api/v1/signin";
/// `GET` here with `X-Auth`.
pub const ME_PATH: &str = "/api/v1/me";
/// `POST` here with `X-Auth` and the permission to check.
pub const AUTHORIZE_PATH: &str = "/api/v1/user/authorize";
/// The header every call but signin takes.
pub const X_AUTH: &str = "X-Auth";
/// The one organization every user of the stand-in belongs to: (id, name).
pub const DEMO_ORGANIZATION: (&str, &str) = ("1", "demo-org");

/// What the stand-in accepts.
#[derive(Clone, Debug)]
pub struct BigBucksSettings {
    /// username, password for `POST /signin`.
    pub users: Vec<(String, String)>,
    /// What `/user/authorize` allows: (username, action, resource, scope).
    pub permissions: Vec<(String, String, String, String)>,
    /// When set, `/signin` needs `"recaptcha"` with exactly this value.
    pub required_recaptcha: Option<String>,
    /// Lifetime of the JWTs (their `exp` claim).
    pub token_ttl: Duration,
}

impl Default for BigBucksSettings {
    fn default() -> Self {
        BigBucksSettings {
            users: vec![("svc-reporting".to_owned(), "engine-password".to_owned())],
            permissions: vec![(
                "svc-reporting".to_owned(),
                "read".to_owned(),
                "reports".to_owned(),
                "org".to_owned(),
            )],
            required_recaptcha: None,
            token_ttl: Duration::from_secs(300),
        }
    }
}

/// A request as the stand-in received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The `X-Auth` header.
    pub x_auth: Option<String>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// The BigBucks Auth Engine stand-in.
pub type BigBucksStandIn = StandIn<AuthEngine>;

/// The state of the BigBucks Auth Engine stand-in.
pub struct AuthEngine {
    issuer: String,
    users: Vec<(String, String)>,
    permissions: Vec<(String, String, String, String)>,
    required_recaptcha: Option<String>,
    switches: Switches,
    fail_with: Mutex<Option<u16>>,
    signin_requests: AtomicUsize,
    me_requests: AtomicUsize,
    authorize_requests: AtomicUsize,
    /// Each token's username.
    tokens: Tokens<String>,
    last_signin: Mutex<Option<RecordedRequest>>,
    last_authorize: Mutex<Option<RecordedRequest>>,
}

impl AuthEngine {
    fn mint(&self, username: &str) -> String {
        let (token, _) = self.tokens.issue(
            |ttl| jwt::mint(username, &self.issuer, ttl),
            username.to_owned(),
        );
        token
    }

    /// The username behind a valid `X-Auth`.
    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers.get(X_AUTH)?.to_str().ok()?.trim();
        self.tokens.book().live(token).cloned()
    }
}

impl Switched for AuthEngine {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl Provider for AuthEngine {
    type Settings = BigBucksSettings;
    type Facts = String;

    fn new(settings: BigBucksSettings, url: String) -> AuthEngine {
        AuthEngine {
            issuer: url,
            users: settings.users,
            permissions: settings.permissions,
            required_recaptcha: settings.required_recaptcha,
            switches: Switches::default(),
            fail_with: Mutex::new(None),
            signin_requests: AtomicUsize::new(0),
            me_requests: AtomicUsize::new(0),
            authorize_requests: AtomicUsize::new(0),
            tokens: Tokens::new(settings.token_ttl),
            last_signin: Mutex::new(None),
            last_authorize: Mutex::new(None),
        }
    }

    fn router() -> Router<Arc<AuthEngine>> {
        Router::new()
            .route(SIGNIN_PATH, answer(MethodFilter::POST, signin))
            .route(ME_PATH, answer(MethodFilter::GET, me))
            .route(AUTHORIZE_PATH, answer(MethodFilter::POST, authorize))
    }

    fn tokens(&self) -> &Tokens<String> {
        &self.tokens
    }
}

impl BigBucksStandIn {
    /// `url() + "/api/v1"`: what the gateway's `base_url` is set to.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.url(), BASE_PATH)
    }

    /// `POST /api/v1/signin` requests, whatever the outcome.
    pub fn signin_requests(&self) -> usize {
        self.state().signin_requests.load(Ordering::SeqCst)
    }

    /// `GET /api/v1/me` requests, whatever the outcome.
    pub fn me_requests(&self) -> usize {
        self.state().me_requests.load(Ordering::SeqCst)
    }

    /// `POST /api/v1/user/authorize` requests, whatever the outcome.
    pub fn authorize_requests(&self) -> usize {
        self.state().authorize_requests.load(Ordering::SeqCst)
    }

    /// The last request `/signin` received.
    pub fn last_signin_request(&self) -> Option<RecordedRequest> {
        lock(&self.state().last_signin).clone()
    }

    /// The last request `/user/authorize` received.
    pub fn last_authorize_request(&self) -> Option<RecordedRequest> {
        lock(&self.state().last_authorize).clone()
    }

    /// While `Some(code)`, every `/signin` answers `code` with
    /// `{"error":"stand-in forced status"}` (meant for 400, 404 and 500, any code works);
    /// `None` restores normal answers. `/me` and `/user/authorize` are not affected.
    pub fn set_fail_with(&self, status: Option<u16>) {
        *lock(&self.state().fail_with) = status;
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

fn down() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

fn invalid_request() -> Response {
    error(StatusCode::BAD_REQUEST, "invalid request")
}

fn record(headers: &HeaderMap, body: &[u8]) -> RecordedRequest {
    RecordedRequest {
        x_auth: header_text(headers, X_AUTH),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// Count a request, and keep it in `last` when given; false when the engine is down.
fn arrive(
    shared: &AuthEngine,
    count: &AtomicUsize,
    last: Option<&Mutex<Option<RecordedRequest>>>,
    (headers, body): (&HeaderMap, &[u8]),
) -> bool {
    count.fetch_add(1, Ordering::SeqCst);
    if let Some(last) = last {
        *lock(last) = Some(record(headers, body));
    }
    shared.switches.is_available()
}

fn signin(shared: &AuthEngine, headers: &HeaderMap, body: &[u8]) -> Response {
    let last = Some(&shared.last_signin);
    if !arrive(shared, &shared.signin_requests, last, (headers, body)) {
        return down();
    }
    if let Some(status) = *lock(&shared.fail_with) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "stand-in forced status");
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return invalid_request();
    };
    let (Some(Value::String(username)), Some(Value::String(password))) =
        (request.get("username"), request.get("password"))
    else {
        return invalid_request();
    };
    if username.is_empty() || password.is_empty() {
        return invalid_request();
    }
    let recaptcha = match request.get("recaptcha") {
        None | Some(Value::Null) => None,
        Some(Value::String(value)) => Some(value),
        Some(_) => return invalid_request(),
    };
    if let Some(required) = &shared.required_recaptcha {
        if recaptcha != Some(required) {
            return error(StatusCode::BAD_REQUEST, "invalid recaptcha");
        }
    }
    let Some((_, expected)) = shared.users.iter().find(|(u, _)| u == username) else {
        return error(StatusCode::NOT_FOUND, "user not found");
    };
    if expected != password {
        return error(StatusCode::BAD_REQUEST, "invalid credentials");
    }
    json_response(StatusCode::OK, &Value::String(shared.mint(username)))
}

fn me(shared: &AuthEngine, headers: &HeaderMap, body: &[u8]) -> Response {
    if !arrive(shared, &shared.me_requests, None, (headers, body)) {
        return down();
    }
    let Some(username) = shared.user_of(headers) else {
        return error(StatusCode::BAD_REQUEST, "invalid or missing X-Auth token");
    };
    let roles: Vec<Value> = {
        let mut names: Vec<String> = shared
            .permissions
            .iter()
            .filter(|(u, ..)| *u == username)
            .map(|(_, action, resource, _)| format!("{resource}-{action}"))
            .collect();
        names.sort();
        names.dedup();
        std::iter::once("user".to_owned())
            .chain(names)
            .map(|name| {
                json!({
                    "name": name,
                    "description": format!("{name} role of the demo engine"),
                    "extraAttrs": {},
                })
            })
            .collect()
    };
    let (org_id, org_name) = DEMO_ORGANIZATION;
    json_response(
        StatusCode::OK,
        &json!({
            "username": username,
            "profile": {
                "avatar": "",
                "bio": "",
                "country": "",
                "designation": "",
                "email": format!("{username}@bigbucks.example"),
                "firstName": username,
                "lastName": "Demo",
                "phone": "",
                "timezone": "UTC",
            },
            "roles": roles,
            "organizations": [{"id": org_id, "name": org_name}],
            "isSocialAccount": false,
        }),
    )
}

fn authorize(shared: &AuthEngine, headers: &HeaderMap, body: &[u8]) -> Response {
    let last = Some(&shared.last_authorize);
    if !arrive(shared, &shared.authorize_requests, last, (headers, body)) {
        return down();
    }
    let Some(username) = shared.user_of(headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return invalid_request();
    };
    let field = |name: &str, request: &Map<String, Value>| match request.get(name) {
        Some(Value::String(value)) => Some(value.clone()),
        _ => None,
    };
    let (Some(action), Some(resource), Some(scope)) = (
        field("action", &request),
        field("resource", &request),
        field("scope", &request),
    ) else {
        return invalid_request();
    };
    match request.get("orgID") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(_) => return invalid_request(),
    }
    let allowed = shared
        .permissions
        .iter()
        .any(|(u, a, r, s)| *u == username && *a == action && *r == resource && *s == scope);
    json_response(StatusCode::OK, &json!({"status": allowed}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::started;
    use crate::testing::{assert_delay_applies, assert_ttl_expiry_and_revocation};

    /// (status, content type, body text)
    type Reply = (u16, String, String);

    async fn send(request: reqwest::RequestBuilder) -> Reply {
        let reply = crate::testing::send(request).await;
        (reply.status, reply.content_type, reply.text)
    }

    async fn signin_with(engine: &BigBucksStandIn, body: &str) -> Reply {
        send(
            reqwest::Client::new()
                .post(format!("{}/signin", engine.base_url()))
                .header("Content-Type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    async fn me_with(engine: &BigBucksStandIn, x_auth: Option<&str>) -> Reply {
        let mut request = reqwest::Client::new().get(format!("{}/me", engine.base_url()));
        if let Some(token) = x_auth {
            request = request.header("X-Auth", token);
        }
        send(request).await
    }

    async fn authorize_with(engine: &BigBucksStandIn, x_auth: Option<&str>, body: &str) -> Reply {
        let mut request = reqwest::Client::new()
            .post(format!("{}/user/authorize", engine.base_url()))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(token) = x_auth {
            request = request.header("X-Auth", token);
        }
        send(request).await
    }

    const GOOD: &str = r#"{"username":"svc-reporting","password":"engine-password"}"#;

    async fn token_of(engine: &BigBucksStandIn) -> String {
        let (status, _, body) = signin_with(engine, GOOD).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<String>(&body).unwrap()
    }

    fn json_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn assert_error(reply: &Reply, status: u16, message: &str) {
        assert_eq!(reply.0, status, "{}", reply.2);
        assert_eq!(reply.1, "application/json");
        assert_eq!(json_of(&reply.2), json!({"error": message}));
    }

    #[tokio::test]
    async fn signin_returns_the_jwt_as_a_json_string() {
        let engine: BigBucksStandIn = started().await;
        assert_eq!(engine.base_url(), format!("{}/api/v1", engine.url()));
        let (status, content_type, body) = signin_with(&engine, GOOD).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "application/json");
        assert!(body.starts_with("\"eyJ") && body.ends_with('"'), "{body}");
        let token: String = serde_json::from_str(&body).unwrap();
        crate::testing::assert_jwt_of(&engine, &token, "svc-reporting", 300);
        assert_eq!(engine.issued_tokens(), [token]);
        assert_eq!(engine.signin_requests(), 1);
        assert_eq!(engine.me_requests(), 0);
        assert_eq!(engine.authorize_requests(), 0);
        let last = engine.last_signin_request().unwrap();
        assert_eq!(last.x_auth, None);
        assert_eq!(last.body_json(), Some(json_of(GOOD)));
        // An optional recaptcha is ignored when the settings require none.
        let (status, _, _) = signin_with(
            &engine,
            r#"{"username":"svc-reporting","password":"engine-password","recaptcha":"x"}"#,
        )
        .await;
        assert_eq!(status, 200);
        engine.stop().await;
    }

    #[tokio::test]
    async fn signin_errors_follow_the_seed_codes() {
        let engine: BigBucksStandIn = started().await;
        let malformed = [
            "not json",
            r#"["svc-reporting","engine-password"]"#,
            r#""svc-reporting""#,
            "",
            r#"{"password":"engine-password"}"#,
            r#"{"username":"svc-reporting"}"#,
            r#"{"username":"svc-reporting","password":""}"#,
            r#"{"username":"","password":"engine-password"}"#,
            r#"{"username":"svc-reporting","password":42}"#,
            r#"{"username":"svc-reporting","password":"engine-password","recaptcha":7}"#,
        ];
        for body in malformed {
            let reply = signin_with(&engine, body).await;
            assert_error(&reply, 400, "invalid request");
        }
        let reply = signin_with(
            &engine,
            r#"{"username":"someone","password":"engine-password"}"#,
        )
        .await;
        assert_error(&reply, 404, "user not found");
        let reply = signin_with(
            &engine,
            r#"{"username":"svc-reporting","password":"wrong"}"#,
        )
        .await;
        assert_error(&reply, 400, "invalid credentials");
        assert_eq!(engine.signin_requests(), malformed.len() + 2);
        assert!(engine.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn required_recaptcha() {
        let settings = BigBucksSettings {
            required_recaptcha: Some("human".into()),
            ..BigBucksSettings::default()
        };
        let engine = BigBucksStandIn::start(settings).await.unwrap();
        let reply = signin_with(&engine, GOOD).await;
        assert_error(&reply, 400, "invalid recaptcha");
        let reply = signin_with(
            &engine,
            r#"{"username":"svc-reporting","password":"engine-password","recaptcha":"robot"}"#,
        )
        .await;
        assert_error(&reply, 400, "invalid recaptcha");
        let (status, _, _) = signin_with(
            &engine,
            r#"{"username":"svc-reporting","password":"engine-password","recaptcha":"human"}"#,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(engine.issued_tokens().len(), 1);
    }

    #[tokio::test]
    async fn fail_with_forces_the_signin_status() {
        let engine: BigBucksStandIn = started().await;
        let token = token_of(&engine).await;
        for code in [400, 404, 500] {
            engine.set_fail_with(Some(code));
            let reply = signin_with(&engine, GOOD).await;
            assert_error(&reply, code, "stand-in forced status");
        }
        // /me and /user/authorize are not affected.
        let (status, _, _) = me_with(&engine, Some(&token)).await;
        assert_eq!(status, 200);
        engine.set_fail_with(None);
        let (status, _, _) = signin_with(&engine, GOOD).await;
        assert_eq!(status, 200);
        assert_eq!(engine.signin_requests(), 5);
        assert_eq!(engine.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn me_answers_the_profile() {
        let engine: BigBucksStandIn = started().await;
        let token = token_of(&engine).await;
        let (status, content_type, body) = me_with(&engine, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "application/json");
        let body = json_of(&body);
        assert_eq!(body["username"], "svc-reporting");
        assert_eq!(body["isSocialAccount"], false);
        let profile = &body["profile"];
        for field in [
            "avatar",
            "bio",
            "country",
            "designation",
            "email",
            "firstName",
            "lastName",
            "phone",
            "timezone",
        ] {
            assert!(profile[field].is_string(), "{field}");
        }
        assert_eq!(profile["email"], "svc-reporting@bigbucks.example");
        let roles = body["roles"].as_array().unwrap();
        assert!(!roles.is_empty());
        for role in roles {
            assert!(role["name"].is_string() && role["description"].is_string());
            assert_eq!(role["extraAttrs"], json!({}));
        }
        assert_eq!(
            body["organizations"],
            json!([{"id": "1", "name": "demo-org"}])
        );
        assert_eq!(engine.me_requests(), 1);
    }

    #[tokio::test]
    async fn me_without_a_valid_token_is_400() {
        let engine: BigBucksStandIn = started().await;
        let token = token_of(&engine).await;
        let bearer = format!("Bearer {token}");
        // Well signed, but not issued by the stand-in.
        let foreign = jwt::mint("svc-reporting", &engine.url(), Duration::from_secs(60));
        for x_auth in [
            None,
            Some("nope"),
            Some(""),
            Some(bearer.as_str()),
            Some(foreign.as_str()),
        ] {
            let reply = me_with(&engine, x_auth).await;
            assert_error(&reply, 400, "invalid or missing X-Auth token");
        }
        // A token in Authorization instead of X-Auth is not accepted.
        let reply = send(
            reqwest::Client::new()
                .get(format!("{}/me", engine.base_url()))
                .bearer_auth(&token),
        )
        .await;
        assert_error(&reply, 400, "invalid or missing X-Auth token");
        engine.revoke_all();
        let reply = me_with(&engine, Some(&token)).await;
        assert_error(&reply, 400, "invalid or missing X-Auth token");
        assert_eq!(engine.me_requests(), 7);
    }

    #[tokio::test]
    async fn authorize_checks_the_permission_list() {
        let mut settings = BigBucksSettings::default();
        settings
            .users
            .push(("auditor".into(), "audit-pw".to_owned()));
        let engine = BigBucksStandIn::start(settings).await.unwrap();
        let token = token_of(&engine).await;
        let cases = [
            (
                r#"{"action":"read","resource":"reports","scope":"org"}"#,
                true,
            ),
            (
                r#"{"action":"read","resource":"reports","scope":"org","orgID":1}"#,
                true,
            ),
            (
                r#"{"action":"read","resource":"reports","scope":"org","orgID":null}"#,
                true,
            ),
            (
                r#"{"action":"write","resource":"reports","scope":"org"}"#,
                false,
            ),
            (
                r#"{"action":"read","resource":"users","scope":"org"}"#,
                false,
            ),
            (
                r#"{"action":"read","resource":"reports","scope":"own"}"#,
                false,
            ),
        ];
        for (body, allowed) in cases {
            let (status, content_type, reply) = authorize_with(&engine, Some(&token), body).await;
            assert_eq!(status, 200, "{body}: {reply}");
            assert_eq!(content_type, "application/json");
            assert_eq!(json_of(&reply), json!({"status": allowed}), "{body}");
        }
        // Another user does not hold svc-reporting's permission.
        let (_, _, body) =
            signin_with(&engine, r#"{"username":"auditor","password":"audit-pw"}"#).await;
        let auditor: String = serde_json::from_str(&body).unwrap();
        let (status, _, reply) = authorize_with(&engine, Some(&auditor), cases[0].0).await;
        assert_eq!(status, 200);
        assert_eq!(json_of(&reply), json!({"status": false}));

        assert_eq!(engine.authorize_requests(), cases.len() + 1);
        let last = engine.last_authorize_request().unwrap();
        assert_eq!(last.x_auth.as_deref(), Some(auditor.as_str()));
        assert_eq!(last.body_json(), Some(json_of(cases[0].0)));
    }

    #[tokio::test]
    async fn authorize_errors() {
        let engine: BigBucksStandIn = started().await;
        let token = token_of(&engine).await;
        let good = r#"{"action":"read","resource":"reports","scope":"org"}"#;
        for x_auth in [None, Some("nope"), Some("")] {
            let reply = authorize_with(&engine, x_auth, good).await;
            assert_error(&reply, 401, "unauthorized");
        }
        // The token is checked before the body.
        let reply = authorize_with(&engine, None, "not json").await;
        assert_error(&reply, 401, "unauthorized");
        for body in [
            "not json",
            "[]",
            r#"{"resource":"reports","scope":"org"}"#,
            r#"{"action":"read","scope":"org"}"#,
            r#"{"action":"read","resource":"reports"}"#,
            r#"{"action":1,"resource":"reports","scope":"org"}"#,
            r#"{"action":"read","resource":"reports","scope":"org","orgID":"1"}"#,
            r#"{"action":"read","resource":"reports","scope":"org","orgID":1.5}"#,
        ] {
            let reply = authorize_with(&engine, Some(&token), body).await;
            assert_error(&reply, 400, "invalid request");
        }
        engine.revoke_all();
        let reply = authorize_with(&engine, Some(&token), good).await;
        assert_error(&reply, 401, "unauthorized");
        assert_eq!(engine.authorize_requests(), 13);
    }

    #[tokio::test]
    async fn unavailable_is_500_everywhere_and_still_counts() {
        let engine: BigBucksStandIn = started().await;
        let token = token_of(&engine).await;
        engine.set_available(false);
        let good = r#"{"action":"read","resource":"reports","scope":"org"}"#;
        assert_error(
            &signin_with(&engine, GOOD).await,
            500,
            "internal server error",
        );
        assert_error(
            &me_with(&engine, Some(&token)).await,
            500,
            "internal server error",
        );
        assert_error(
            &authorize_with(&engine, Some(&token), good).await,
            500,
            "internal server error",
        );
        assert_eq!(engine.signin_requests(), 2);
        assert_eq!(engine.me_requests(), 1);
        assert_eq!(engine.authorize_requests(), 1);
        assert_eq!(engine.issued_tokens().len(), 1);
        engine.set_available(true);
        let (status, _, _) = me_with(&engine, Some(&token)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn ttl_revocation_and_expiry() {
        let engine: BigBucksStandIn = started().await;
        let (first, second) = assert_ttl_expiry_and_revocation(&engine, || async {
            let token = token_of(&engine).await;
            let (status, _, _) = me_with(&engine, Some(&token)).await;
            assert_eq!(status, 200, "/me takes the token while it is valid");
            let claims = jwt::verify(&token).unwrap();
            (token, claims.exp - claims.iat)
        })
        .await;
        for token in [first, second] {
            let (status, _, _) = me_with(&engine, Some(&token)).await;
            assert_eq!(status, 400, "revoked, then expired");
        }
    }

    #[tokio::test]
    async fn delay_slows_the_answer() {
        let engine: BigBucksStandIn = started().await;
        assert_delay_applies(&engine, || async { signin_with(&engine, GOOD).await.0 }).await;
    }

    #[tokio::test]
    async fn wrong_methods_are_405() {
        let engine: BigBucksStandIn = started().await;
        let client = reqwest::Client::new();
        let base = engine.base_url();
        let (status, _, _) = send(client.get(format!("{base}/signin"))).await;
        assert_eq!(status, 405);
        let (status, _, _) = send(client.post(format!("{base}/me"))).await;
        assert_eq!(status, 405);
        let (status, _, _) = send(client.get(format!("{base}/user/authorize"))).await;
        assert_eq!(status, 405);
        assert_eq!(engine.signin_requests(), 0);
        assert_eq!(engine.me_requests(), 0);
        assert_eq!(engine.authorize_requests(), 0);
    }
}
