//! BagID authentication (seed 004), paths under `/v2/auth`, and an attestor stand-in:
//!
//! - `POST /v2/auth/federated/sessions`: header `X-Source-App-Key`, body `{"token"}` (a JWT
//!   of the host app, trusted when it verifies with [`jwt::verify`], the demo HS256 key, and
//!   is unexpired; see [`host_token`]). The access token's `sub` is the host token's `sub`.
//! - `POST /v2/auth/nonces`: `{"nonce":"n_…","expiresAt":"<RFC 3339 UTC>","ttlSeconds"}`.
//! - `POST /v2/auth/attestation/sessions` and `POST /v2/auth/guest/sessions`: body
//!   `{"nonce","attestationObject"}`; the nonce must have been issued here, be unexpired and
//!   never presented before, and `attestationObject` must equal [`attestation_for`]`(nonce)`.
//!   `sub` is [`ATTESTATION_SUBJECT`] or [`GUEST_SUBJECT`].
//! - `POST /v2/auth/b2b-secret/sessions`: headers `X-Source-App-Key` and `X-B2B-Secret`,
//!   body `{"username","password"}`; `sub` is the username.
//! - `POST /v2/auth/refresh` with `{"refreshToken"}`: a new LoginResponse for the same
//!   `sub`; refresh tokens are single use (each use retires the old one and issues a new one).
//!
//! A login answers 200 LoginResponse `{"accessToken" (HS256 JWT), "tokenType":"Bearer",
//! "expiresIn", "refreshToken"?, "refreshExpiresIn"?}` (the last two when
//! [`BagIdSettings::issue_refresh_tokens`]). No header is required on the nonce, attestation,
//! guest and refresh operations (the seed lists none).
//!
//! The seed gives no error answers; these are the stand-in's, all JSON
//! `{"error": CODE, "message": "..."}`:
//!
//! | case | status, `error` |
//! |---|---|
//! | a mandatory header missing or empty; the body not a JSON object; a mandatory field missing, empty or not a string | 400 `bad_request` |
//! | unknown app key or B2B secret; unknown B2B user or wrong password; host token not verifying or expired, or its `sub` in [`BagIdSettings::refused_subjects`]; nonce unknown, expired or already presented; wrong attestation object; refresh token unknown, already used, revoked or expired | 401 `unauthorized` |
//! | [`BagIdStandIn::set_available`]`(false)` | 503 `service_unavailable` |
//!
//! Headers are checked before the body, and presence (400) before values (401). A nonce is
//! spent by the first well-formed attestation or guest login that presents it, even when
//! the attestation object is wrong (so a nonce cannot be used to guess).
//!
//! [`AttestorStandIn`] plays the attestor a gateway hands the nonce to: `POST /attest`
//! `{"nonce"}` → 200 `{"attestationObject": attestation_for(nonce)}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::MethodFilter;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::controls::{Kind, Lifetime, Paired, Switches, TokenBook, Tokens};
use crate::handle::{answer, Provider, StandIn, Switched};
use crate::{any_loopback_port, find_header, header_list, json_response, jwt, lock};

pub const FEDERATED_PATH: &str = "/v2/auth/federated/sessions";
pub const NONCES_PATH: &str = "/v2/auth/nonces";
pub const ATTESTATION_PATH: &str = "/v2/auth/attestation/sessions";
pub const GUEST_PATH: &str = "/v2/auth/guest/sessions";
pub const B2B_SECRET_PATH: &str = "/v2/auth/b2b-secret/sessions";
pub const REFRESH_PATH: &str = "/v2/auth/refresh";
/// The attestor stand-in's one endpoint.
pub const ATTEST_PATH: &str = "/attest";

pub const APP_KEY_HEADER: &str = "X-Source-App-Key";
pub const B2B_SECRET_HEADER: &str = "X-B2B-Secret";

/// The key behind [`attestation_for`]. Not a secret: demo only.
pub const ATTESTATION_KEY: &[u8] = b"tollgate-demo-attestation-key-not-a-secret";
/// `sub` of access tokens from an attestation login.
pub const ATTESTATION_SUBJECT: &str = "bagid-attested-app";
/// `sub` of access tokens from a guest login.
pub const GUEST_SUBJECT: &str = "bagid-guest";
/// `iss` of the host tokens made by [`host_token`] (the issuer is not checked).
pub const HOST_ISSUER: &str = "https://host-app.example";

/// The login flows, as named by [`BagIdStandIn::login_requests`].
pub const FLOWS: [&str; 4] = ["federated", "attestation", "guest", "b2b_secret"];

/// The attestation object BagID accepts for `nonce`: base64url (no padding) of
/// `sha256(ATTESTATION_KEY || nonce)`.
pub fn attestation_for(nonce: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ATTESTATION_KEY);
    hasher.update(nonce.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// A trusted host-app JWT for the federated flow, for `subject`, valid for `ttl`.
pub fn host_token(subject: &str, ttl: Duration) -> String {
    jwt::mint(subject, HOST_ISSUER, ttl)
}

/// What the stand-in accepts and how it answers.
#[derive(Clone, Debug)]
pub struct BagIdSettings {
    /// Issued client keys accepted in `X-Source-App-Key`.
    pub app_keys: Vec<String>,
    /// The B2B shared secret expected in `X-B2B-Secret`.
    pub b2b_secret: String,
    /// B2B username, password.
    pub b2b_users: Vec<(String, String)>,
    /// Lifetime of access tokens (`expiresIn`, and `exp` of the JWTs).
    pub token_ttl: Duration,
    /// Lifetime of refresh tokens (`refreshExpiresIn`).
    pub refresh_ttl: Duration,
    /// Lifetime of nonces (`ttlSeconds`).
    pub nonce_ttl: Duration,
    /// Issue a refresh token with every login and refresh.
    pub issue_refresh_tokens: bool,
    /// Host-token subjects the federated login refuses (401 `unauthorized`).
    pub refused_subjects: Vec<String>,
}

impl Default for BagIdSettings {
    fn default() -> Self {
        BagIdSettings {
            app_keys: vec!["demo-app-key".to_owned()],
            b2b_secret: "demo-b2b-secret".to_owned(),
            b2b_users: vec![("svc".to_owned(), "bagid-password".to_owned())],
            token_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(3600),
            nonce_ttl: Duration::from_secs(60),
            issue_refresh_tokens: true,
            refused_subjects: Vec::new(),
        }
    }
}

/// A request as the stand-in received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub path: String,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

fn record(path: &str, headers: &HeaderMap, body: &[u8]) -> RecordedRequest {
    RecordedRequest {
        path: path.to_owned(),
        headers: header_list(headers),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// The BagID stand-in. Down, every endpoint answers 503 `service_unavailable` (and still
/// counts).
pub type BagIdStandIn = StandIn<BagId>;

/// The state of the BagID stand-in.
pub struct BagId {
    issuer: String,
    app_keys: Vec<String>,
    b2b_secret: String,
    b2b_users: Vec<(String, String)>,
    issue_refresh_tokens: bool,
    refused_subjects: Vec<String>,
    switches: Switches,
    refresh_ttl: Lifetime,
    nonce_ttl: Lifetime,
    nonce_requests: AtomicUsize,
    login_requests: Mutex<HashMap<&'static str, usize>>,
    refresh_requests: AtomicUsize,
    /// Each token's subject. Used refresh tokens are retired.
    tokens: Tokens<Paired<String>>,
    /// Presented nonces are retired: each is good for one login.
    nonces: Mutex<TokenBook<()>>,
    last_request: Mutex<Option<RecordedRequest>>,
}

#[derive(Clone, Copy)]
enum Counter {
    Nonce,
    Refresh,
    Login(&'static str),
}

impl BagId {
    /// Count and record a request, then answer it with `answer` (the 503 answer when down).
    fn answer(
        &self,
        counter: Counter,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        answer: impl FnOnce() -> Result<Response, Failure>,
    ) -> Response {
        match counter {
            Counter::Nonce => {
                self.nonce_requests.fetch_add(1, Ordering::SeqCst);
            }
            Counter::Refresh => {
                self.refresh_requests.fetch_add(1, Ordering::SeqCst);
            }
            Counter::Login(flow) => {
                *lock(&self.login_requests).entry(flow).or_insert(0) += 1;
            }
        }
        *lock(&self.last_request) = Some(record(path, headers, body));
        if !self.switches.is_available() {
            return switched_off("BagID");
        }
        answer().unwrap_or_else(Failure::into_response)
    }

    fn known_app_key(&self, key: &str) -> bool {
        self.app_keys.iter().any(|k| k == key)
    }

    /// Mint and record an access token (and a refresh token when configured) for
    /// `subject`, and return the LoginResponse.
    fn issue(&self, subject: &str) -> Response {
        let refresh_ttl = self.issue_refresh_tokens.then(|| self.refresh_ttl.get());
        let pair = self.tokens.issue_pair(
            |ttl| jwt::mint(subject, &self.issuer, ttl),
            refresh_ttl,
            subject.to_owned(),
        );
        let mut body = json!({
            "accessToken": pair.access,
            "tokenType": "Bearer",
            "expiresIn": pair.ttl.as_secs(),
        });
        if let Some((refresh_token, refresh_ttl)) = pair.refresh {
            body["refreshToken"] = Value::String(refresh_token);
            body["refreshExpiresIn"] = Value::from(refresh_ttl.as_secs());
        }
        json_response(StatusCode::OK, &body)
    }
}

impl Switched for BagId {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl Provider for BagId {
    type Settings = BagIdSettings;
    type Facts = Paired<String>;

    fn new(settings: BagIdSettings, url: String) -> BagId {
        BagId {
            issuer: url,
            app_keys: settings.app_keys,
            b2b_secret: settings.b2b_secret,
            b2b_users: settings.b2b_users,
            issue_refresh_tokens: settings.issue_refresh_tokens,
            refused_subjects: settings.refused_subjects,
            switches: Switches::default(),
            refresh_ttl: Lifetime::new(settings.refresh_ttl),
            nonce_ttl: Lifetime::new(settings.nonce_ttl),
            nonce_requests: AtomicUsize::new(0),
            login_requests: Mutex::new(HashMap::new()),
            refresh_requests: AtomicUsize::new(0),
            tokens: Tokens::new(settings.token_ttl),
            nonces: Mutex::new(TokenBook::default()),
            last_request: Mutex::new(None),
        }
    }

    fn router() -> Router<Arc<BagId>> {
        let post = MethodFilter::POST;
        Router::new()
            .route(FEDERATED_PATH, answer(post, federated))
            .route(NONCES_PATH, answer(post, nonces))
            .route(ATTESTATION_PATH, answer(post, attestation))
            .route(GUEST_PATH, answer(post, guest))
            .route(B2B_SECRET_PATH, answer(post, b2b_secret))
            .route(REFRESH_PATH, answer(post, refresh))
    }

    fn tokens(&self) -> &Tokens<Paired<String>> {
        &self.tokens
    }

    /// Refresh tokens are not access tokens.
    fn usable(facts: &Paired<String>) -> bool {
        facts.kind == Kind::Access
    }
}

impl BagIdStandIn {
    /// `POST /v2/auth/nonces` requests, whatever the outcome.
    pub fn nonce_requests(&self) -> usize {
        self.state().nonce_requests.load(Ordering::SeqCst)
    }

    /// Login requests of `flow` (one of [`FLOWS`]: `"federated"`, `"attestation"`,
    /// `"guest"`, `"b2b_secret"`), whatever the outcome; 0 for any other name.
    pub fn login_requests(&self, flow: &str) -> usize {
        lock(&self.state().login_requests)
            .get(flow)
            .copied()
            .unwrap_or(0)
    }

    /// `POST /v2/auth/refresh` requests, whatever the outcome.
    pub fn refresh_requests(&self) -> usize {
        self.state().refresh_requests.load(Ordering::SeqCst)
    }

    /// The last request received, on any path.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state().last_request).clone()
    }

    /// Lifetime of refresh tokens issued from now on.
    pub fn set_refresh_ttl(&self, ttl: Duration) {
        self.state().refresh_ttl.set(ttl);
    }

    /// Lifetime of nonces issued from now on.
    pub fn set_nonce_ttl(&self, ttl: Duration) {
        self.state().nonce_ttl.set(ttl);
    }

    /// Every nonce issued, oldest first.
    pub fn issued_nonces(&self) -> Vec<String> {
        lock(&self.state().nonces).issued()
    }

    /// Every refresh token issued so far becomes invalid; access tokens stay valid.
    pub fn revoke_refresh_tokens(&self) {
        self.state()
            .tokens
            .book()
            .retire_where(|facts| facts.kind == Kind::Refresh);
    }
}

/// A refused request: `{"error": error, "message": message}` with `status`.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl Failure {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({"error": self.error, "message": self.message}),
        )
    }
}

fn failure(status: StatusCode, error: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        error,
        message: message.into(),
    }
}

/// The answer of BagID, and of the attestor, when down.
fn switched_off(who: &str) -> Response {
    let message = format!("the {who} stand-in is switched off");
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        message,
    )
    .into_response()
}

fn bad_request(message: impl Into<String>) -> Failure {
    failure(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn unauthorized(message: impl Into<String>) -> Failure {
    failure(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// A mandatory, non-empty header, or the 400 answer naming it.
fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Failure> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad_request(format!("header {name} is mandatory")))
}

/// The body as a JSON object, or the 400 answer.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_request("the body must be a JSON object")),
    }
}

/// A mandatory, non-empty string field, or the 400 answer naming it.
fn required_field<'a>(request: &'a Map<String, Value>, name: &str) -> Result<&'a str, Failure> {
    match request.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(bad_request(format!("field {name} is mandatory")))
        }
        Some(_) => Err(bad_request(format!("field {name} must be a string"))),
    }
}

fn federated(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    let counter = Counter::Login("federated");
    shared.answer(counter, FEDERATED_PATH, headers, body, || {
        let app_key = required_header(headers, APP_KEY_HEADER)?;
        let request = json_object(body)?;
        let token = required_field(&request, "token")?;
        if !shared.known_app_key(app_key) {
            return Err(unauthorized("unknown source app key"));
        }
        let claims = jwt::verify(token)
            .map_err(|_| unauthorized("the host token is not trusted or has expired"))?;
        if shared.refused_subjects.contains(&claims.sub) {
            return Err(unauthorized("this host user may not log in"));
        }
        Ok(shared.issue(&claims.sub))
    })
}

fn nonces(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    shared.answer(Counter::Nonce, NONCES_PATH, headers, body, || {
        let ttl = shared.nonce_ttl.get();
        let mut random = [0u8; 12];
        rand::rng().fill_bytes(&mut random);
        let nonce = format!(
            "n_{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        lock(&shared.nonces).record(nonce.clone(), Instant::now() + ttl, ());
        let expires_at = humantime::format_rfc3339_seconds(SystemTime::now() + ttl).to_string();
        Ok(json_response(
            StatusCode::OK,
            &json!({"nonce": nonce, "expiresAt": expires_at, "ttlSeconds": ttl.as_secs()}),
        ))
    })
}

/// The attestation and guest logins: spend the nonce, check the attestation object.
fn attested_login(shared: &BagId, body: &[u8], subject: &str) -> Result<Response, Failure> {
    let request = json_object(body)?;
    let nonce = required_field(&request, "nonce")?;
    let attestation_object = required_field(&request, "attestationObject")?;
    {
        let mut nonces = lock(&shared.nonces);
        let Some(issued) = nonces.get_mut(nonce) else {
            return Err(unauthorized("unknown nonce"));
        };
        if issued.retired {
            return Err(unauthorized("the nonce was already used"));
        }
        issued.retired = true;
        if Instant::now() >= issued.expires_at {
            return Err(unauthorized("the nonce has expired"));
        }
    }
    if attestation_object != attestation_for(nonce) {
        return Err(unauthorized("the attestation object is not valid"));
    }
    Ok(shared.issue(subject))
}

fn attestation(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    let counter = Counter::Login("attestation");
    shared.answer(counter, ATTESTATION_PATH, headers, body, || {
        attested_login(shared, body, ATTESTATION_SUBJECT)
    })
}

fn guest(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    let counter = Counter::Login("guest");
    shared.answer(counter, GUEST_PATH, headers, body, || {
        attested_login(shared, body, GUEST_SUBJECT)
    })
}

fn b2b_secret(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    let counter = Counter::Login("b2b_secret");
    shared.answer(counter, B2B_SECRET_PATH, headers, body, || {
        let app_key = required_header(headers, APP_KEY_HEADER)?;
        let secret = required_header(headers, B2B_SECRET_HEADER)?;
        let request = json_object(body)?;
        let username = required_field(&request, "username")?;
        let password = required_field(&request, "password")?;
        if !shared.known_app_key(app_key) {
            return Err(unauthorized("unknown source app key"));
        }
        if shared.b2b_secret != secret {
            return Err(unauthorized("invalid B2B secret"));
        }
        let known = shared
            .b2b_users
            .iter()
            .any(|(u, p)| u == username && p == password);
        if !known {
            return Err(unauthorized("invalid username or password"));
        }
        Ok(shared.issue(username))
    })
}

fn refresh(shared: &BagId, headers: &HeaderMap, body: &[u8]) -> Response {
    shared.answer(Counter::Refresh, REFRESH_PATH, headers, body, || {
        let request = json_object(body)?;
        let refresh_token = required_field(&request, "refreshToken")?;
        let subject = shared.tokens.spend_refresh(
            refresh_token,
            |_| unauthorized("the refresh token is unknown, used, revoked or expired"),
            |_| Ok(()),
        )?;
        Ok(shared.issue(&subject))
    })
}

/// The attestor a gateway hands the BagID nonce to: `POST /attest {"nonce"}` →
/// `{"attestationObject": attestation_for(nonce)}`. Errors as BagID's: 400 `bad_request`
/// for a body that is not a JSON object with a non-empty string `nonce`, 503
/// `service_unavailable` when down. Tampered, it answers 200 with an attestation object
/// BagID rejects.
pub type AttestorStandIn = StandIn<Attestor>;

/// The state of the attestor stand-in.
pub struct Attestor {
    switches: Switches,
    tampered: AtomicBool,
    requests: AtomicUsize,
    last_nonce: Mutex<Option<String>>,
}

impl Switched for Attestor {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl AttestorStandIn {
    /// Start on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<AttestorStandIn> {
        Self::start_on(any_loopback_port()).await
    }

    /// Start on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<AttestorStandIn> {
        let attestor = |_| Attestor {
            switches: Switches::default(),
            tampered: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            last_nonce: Mutex::new(None),
        };
        let router = Router::new().route(ATTEST_PATH, answer(MethodFilter::POST, attest));
        Self::launch(addr, attestor, router).await
    }

    /// `url() + "/attest"`.
    pub fn attest_url(&self) -> String {
        format!("{}{}", self.url(), ATTEST_PATH)
    }

    /// `POST /attest` requests, whatever the outcome.
    pub fn requests(&self) -> usize {
        self.state().requests.load(Ordering::SeqCst)
    }

    /// The nonce of the last well-formed request.
    pub fn last_nonce(&self) -> Option<String> {
        lock(&self.state().last_nonce).clone()
    }

    /// When true, answers 200 with an attestation object BagID rejects.
    pub fn set_tampered(&self, tampered: bool) {
        self.state().tampered.store(tampered, Ordering::SeqCst);
    }
}

fn attest(shared: &Attestor, _: &HeaderMap, body: &[u8]) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if !shared.switches.is_available() {
        return switched_off("attestor");
    }
    let attested = json_object(body).and_then(|request| {
        let nonce = required_field(&request, "nonce")?;
        *lock(&shared.last_nonce) = Some(nonce.to_owned());
        Ok(if shared.tampered.load(Ordering::SeqCst) {
            attestation_for(&format!("{nonce}-tampered"))
        } else {
            attestation_for(nonce)
        })
    });
    match attested {
        Ok(attestation_object) => json_response(
            StatusCode::OK,
            &json!({"attestationObject": attestation_object}),
        ),
        Err(failure) => failure.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::testing::started;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    /// (status, body), which is JSON whatever the status.
    async fn post(url: String, headers: &[(&str, &str)], body: Option<&str>) -> (u16, Value) {
        let reply = testing::post(&url, headers, body).await;
        assert_eq!(reply.content_type, "application/json");
        (reply.status, reply.json())
    }

    fn url(bagid: &BagIdStandIn, path: &str) -> String {
        format!("{}{path}", bagid.url())
    }

    const APP_KEY: (&str, &str) = ("X-Source-App-Key", "demo-app-key");
    const B2B: (&str, &str) = ("X-B2B-Secret", "demo-b2b-secret");
    const B2B_LOGIN: &str = r#"{"username":"svc","password":"bagid-password"}"#;

    fn assert_error(reply: &(u16, Value), status: u16, error: &str) {
        assert_eq!(reply.0, status, "{}", reply.1);
        assert_eq!(reply.1["error"], error, "{}", reply.1);
        assert!(
            !reply.1["message"].as_str().unwrap().is_empty(),
            "{}",
            reply.1
        );
    }

    /// Check a LoginResponse with refresh token; return (access, refresh).
    fn login_response(bagid: &BagIdStandIn, body: &Value, sub: &str) -> (String, String) {
        assert_eq!(body["tokenType"], "Bearer");
        assert_eq!(body["expiresIn"], 300);
        assert_eq!(body["refreshExpiresIn"], 3600);
        let access = body["accessToken"].as_str().unwrap().to_owned();
        let refresh = body["refreshToken"].as_str().unwrap().to_owned();
        testing::assert_jwt_of(bagid, &access, sub, 300);
        assert!(
            !bagid.is_valid_token(&refresh),
            "a refresh token is no access token"
        );
        (access, refresh)
    }

    async fn b2b_login(bagid: &BagIdStandIn) -> (u16, Value) {
        post(
            url(bagid, B2B_SECRET_PATH),
            &[APP_KEY, B2B],
            Some(B2B_LOGIN),
        )
        .await
    }

    async fn refresh_with(bagid: &BagIdStandIn, token: &str) -> (u16, Value) {
        let body = json!({"refreshToken": token}).to_string();
        post(url(bagid, REFRESH_PATH), &[], Some(&body)).await
    }

    async fn attest(attestor: &AttestorStandIn, nonce: &str) -> (u16, Value) {
        let body = json!({"nonce": nonce}).to_string();
        post(attestor.attest_url(), &[], Some(&body)).await
    }

    async fn new_nonce(bagid: &BagIdStandIn) -> String {
        let (status, body) = post(url(bagid, NONCES_PATH), &[], None).await;
        assert_eq!(status, 200, "{body}");
        body["nonce"].as_str().unwrap().to_owned()
    }

    fn attested_body(nonce: &str, attestation: &str) -> String {
        json!({"nonce": nonce, "attestationObject": attestation}).to_string()
    }

    /// An HS256 demo-key token whose `exp` is in the past.
    fn expired_host_token() -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = jwt::Claims {
            sub: "host-user".into(),
            iss: HOST_ISSUER.into(),
            iat: now - 120,
            exp: now - 60,
            jti: "x".into(),
            aud: None,
            act: None,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(jwt::DEMO_KEY),
        )
        .unwrap()
    }

    #[test]
    fn attestation_for_is_keyed_and_deterministic() {
        let a = attestation_for("n_1");
        assert_eq!(a, attestation_for("n_1"));
        assert_ne!(a, attestation_for("n_2"));
        assert_eq!(a.len(), 43);
        let unkeyed = URL_SAFE_NO_PAD.encode(Sha256::digest(b"n_1"));
        assert_ne!(a, unkeyed);
        let mut keyed = ATTESTATION_KEY.to_vec();
        keyed.extend_from_slice(b"n_1");
        assert_eq!(a, URL_SAFE_NO_PAD.encode(Sha256::digest(&keyed)));
    }

    #[tokio::test]
    async fn federated_login() {
        let bagid: BagIdStandIn = started().await;
        let host = host_token("host-user-7", Duration::from_secs(60));
        let body = json!({"token": host}).to_string();
        let (status, reply) = post(url(&bagid, FEDERATED_PATH), &[APP_KEY], Some(&body)).await;
        assert_eq!(status, 200, "{reply}");
        let (access, refresh) = login_response(&bagid, &reply, "host-user-7");
        assert_eq!(bagid.issued_tokens(), [access, refresh]);
        assert_eq!(bagid.login_requests("federated"), 1);
        assert_eq!(bagid.login_requests("b2b_secret"), 0);
        assert_eq!(bagid.login_requests("nonsense"), 0);
        let last = bagid.last_request().unwrap();
        assert_eq!(last.path, FEDERATED_PATH);
        assert_eq!(last.header("x-source-app-key"), Some("demo-app-key"));
        assert_eq!(last.body_json().unwrap()["token"], host);
        bagid.stop().await;
    }

    #[tokio::test]
    async fn federated_errors() {
        let bagid: BagIdStandIn = started().await;
        let u = url(&bagid, FEDERATED_PATH);
        let good = json!({"token": host_token("h", Duration::from_secs(60))}).to_string();
        // Missing header, empty header, missing or bad body.
        assert_error(&post(u.clone(), &[], Some(&good)).await, 400, "bad_request");
        assert_error(
            &post(u.clone(), &[("X-Source-App-Key", "")], Some(&good)).await,
            400,
            "bad_request",
        );
        for body in [
            None,
            Some("not json"),
            Some("[]"),
            Some("{}"),
            Some(r#"{"token":""}"#),
            Some(r#"{"token":5}"#),
        ] {
            assert_error(&post(u.clone(), &[APP_KEY], body).await, 400, "bad_request");
        }
        // Wrong app key; untrusted host tokens.
        assert_error(
            &post(u.clone(), &[("X-Source-App-Key", "other")], Some(&good)).await,
            401,
            "unauthorized",
        );
        let wrong_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &jwt::verify(&host_token("h", Duration::from_secs(60))).unwrap(),
            &EncodingKey::from_secret(b"some other key"),
        )
        .unwrap();
        for token in ["garbage", wrong_key.as_str(), expired_host_token().as_str()] {
            let body = json!({"token": token}).to_string();
            assert_error(
                &post(u.clone(), &[APP_KEY], Some(&body)).await,
                401,
                "unauthorized",
            );
        }
        assert_eq!(bagid.login_requests("federated"), 12);
        assert!(bagid.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn nonce_shape() {
        let bagid: BagIdStandIn = started().await;
        let before = SystemTime::now();
        let (status, body) = post(url(&bagid, NONCES_PATH), &[], None).await;
        assert_eq!(status, 200);
        let nonce = body["nonce"].as_str().unwrap();
        assert!(nonce.starts_with("n_") && nonce.len() > 10, "{nonce}");
        assert_eq!(body["ttlSeconds"], 60);
        let expires_at = body["expiresAt"].as_str().unwrap();
        assert!(expires_at.ends_with('Z'), "{expires_at}");
        let expires_at = humantime::parse_rfc3339(expires_at).unwrap();
        let ahead = expires_at.duration_since(before).unwrap();
        assert!(ahead >= Duration::from_secs(59) && ahead <= Duration::from_secs(61));
        // A body is not needed, and any body is ignored.
        let (status, second) = post(url(&bagid, NONCES_PATH), &[], Some("{}")).await;
        assert_eq!(status, 200);
        assert_ne!(second["nonce"], body["nonce"]);
        assert_eq!(bagid.nonce_requests(), 2);
        assert_eq!(bagid.issued_nonces().len(), 2);
        assert_eq!(bagid.issued_nonces()[0], nonce);
    }

    #[tokio::test]
    async fn attestation_and_guest_logins() {
        let bagid: BagIdStandIn = started().await;
        for (path, subject) in [
            (ATTESTATION_PATH, ATTESTATION_SUBJECT),
            (GUEST_PATH, GUEST_SUBJECT),
        ] {
            let nonce = new_nonce(&bagid).await;
            let body = attested_body(&nonce, &attestation_for(&nonce));
            let (status, reply) = post(url(&bagid, path), &[], Some(&body)).await;
            assert_eq!(status, 200, "{reply}");
            login_response(&bagid, &reply, subject);
        }
        assert_ne!(ATTESTATION_SUBJECT, GUEST_SUBJECT);

        assert_eq!(bagid.login_requests("attestation"), 1);
        assert_eq!(bagid.login_requests("guest"), 1);
        assert_eq!(bagid.nonce_requests(), 2);
        assert_eq!(bagid.issued_tokens().len(), 4);
    }

    #[tokio::test]
    async fn nonces_are_single_use() {
        let bagid: BagIdStandIn = started().await;
        let nonce = new_nonce(&bagid).await;
        let body = attested_body(&nonce, &attestation_for(&nonce));
        let (status, _) = post(url(&bagid, GUEST_PATH), &[], Some(&body)).await;
        assert_eq!(status, 200);
        for path in [GUEST_PATH, ATTESTATION_PATH] {
            let reply = post(url(&bagid, path), &[], Some(&body)).await;
            assert_error(&reply, 401, "unauthorized");
        }
        // A wrong attestation object spends the nonce too.
        let nonce = new_nonce(&bagid).await;
        let wrong = attested_body(&nonce, &attestation_for("another nonce"));
        assert_error(
            &post(url(&bagid, ATTESTATION_PATH), &[], Some(&wrong)).await,
            401,
            "unauthorized",
        );
        let right = attested_body(&nonce, &attestation_for(&nonce));
        assert_error(
            &post(url(&bagid, ATTESTATION_PATH), &[], Some(&right)).await,
            401,
            "unauthorized",
        );
        assert_eq!(bagid.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn attested_login_errors() {
        let bagid: BagIdStandIn = started().await;
        let nonce = new_nonce(&bagid).await;
        let attestation = attestation_for(&nonce);
        for path in [ATTESTATION_PATH, GUEST_PATH] {
            for body in [
                None,
                Some("not json".to_owned()),
                Some(json!({"attestationObject": attestation}).to_string()),
                Some(json!({"nonce": nonce}).to_string()),
                Some(json!({"nonce": nonce, "attestationObject": ""}).to_string()),
                Some(json!({"nonce": 1, "attestationObject": attestation}).to_string()),
            ] {
                let reply = post(url(&bagid, path), &[], body.as_deref()).await;
                assert_error(&reply, 400, "bad_request");
            }
            // A nonce never issued.
            let body = attested_body("n_forged", &attestation_for("n_forged"));
            assert_error(
                &post(url(&bagid, path), &[], Some(&body)).await,
                401,
                "unauthorized",
            );
        }
        // The malformed requests did not spend the nonce.
        let body = attested_body(&nonce, &attestation);
        let (status, _) = post(url(&bagid, ATTESTATION_PATH), &[], Some(&body)).await;
        assert_eq!(status, 200);
        assert_eq!(bagid.login_requests("attestation"), 8);
        assert_eq!(bagid.login_requests("guest"), 7);
    }

    #[tokio::test]
    async fn expired_nonce_is_refused() {
        let settings = BagIdSettings {
            nonce_ttl: Duration::from_millis(300),
            ..BagIdSettings::default()
        };
        let bagid = BagIdStandIn::start(settings).await.unwrap();
        let (_, reply) = post(url(&bagid, NONCES_PATH), &[], None).await;
        assert_eq!(reply["ttlSeconds"], 0);
        let nonce = reply["nonce"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let body = attested_body(&nonce, &attestation_for(&nonce));
        assert_error(
            &post(url(&bagid, GUEST_PATH), &[], Some(&body)).await,
            401,
            "unauthorized",
        );

        // set_nonce_ttl applies to the next nonces.
        bagid.set_nonce_ttl(Duration::from_secs(5));
        let nonce = new_nonce(&bagid).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let body = attested_body(&nonce, &attestation_for(&nonce));
        let (status, _) = post(url(&bagid, GUEST_PATH), &[], Some(&body)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn b2b_secret_login() {
        let bagid: BagIdStandIn = started().await;
        let u = url(&bagid, B2B_SECRET_PATH);
        let (status, reply) = post(u.clone(), &[APP_KEY, B2B], Some(B2B_LOGIN)).await;
        assert_eq!(status, 200, "{reply}");
        login_response(&bagid, &reply, "svc");
        let last = bagid.last_request().unwrap();
        assert_eq!(last.header("X-B2B-Secret"), Some("demo-b2b-secret"));
        assert_eq!(last.header("x-source-app-key"), Some("demo-app-key"));

        // Missing headers or fields: 400.
        assert_error(
            &post(u.clone(), &[B2B], Some(B2B_LOGIN)).await,
            400,
            "bad_request",
        );
        assert_error(
            &post(u.clone(), &[APP_KEY], Some(B2B_LOGIN)).await,
            400,
            "bad_request",
        );
        for body in [
            None,
            Some("nope"),
            Some(r#"{"password":"bagid-password"}"#),
            Some(r#"{"username":"svc"}"#),
            Some(r#"{"username":"svc","password":""}"#),
        ] {
            assert_error(
                &post(u.clone(), &[APP_KEY, B2B], body).await,
                400,
                "bad_request",
            );
        }
        // Bad values: 401.
        for (headers, body) in [
            ([("X-Source-App-Key", "other"), B2B], B2B_LOGIN),
            ([APP_KEY, ("X-B2B-Secret", "other")], B2B_LOGIN),
            ([APP_KEY, B2B], r#"{"username":"svc","password":"wrong"}"#),
            (
                [APP_KEY, B2B],
                r#"{"username":"bob","password":"bagid-password"}"#,
            ),
        ] {
            assert_error(
                &post(u.clone(), &headers, Some(body)).await,
                401,
                "unauthorized",
            );
        }
        assert_eq!(bagid.login_requests("b2b_secret"), 12);
        assert_eq!(bagid.issued_tokens().len(), 2);
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_are_single_use() {
        let bagid: BagIdStandIn = started().await;
        let (_, reply) = b2b_login(&bagid).await;
        let (access1, refresh1) = login_response(&bagid, &reply, "svc");

        let (status, reply) = refresh_with(&bagid, &refresh1).await;
        assert_eq!(status, 200, "{reply}");
        let (access2, refresh2) = login_response(&bagid, &reply, "svc");
        assert_ne!(access1, access2);
        assert_ne!(refresh1, refresh2);
        assert!(bagid.is_valid_token(&access1));

        // The used refresh token, an access token, an unknown one: 401.
        for token in [refresh1.as_str(), access2.as_str(), "never-issued"] {
            let reply = refresh_with(&bagid, token).await;
            assert_error(&reply, 401, "unauthorized");
        }
        // Missing or malformed: 400.
        for body in [
            None,
            Some("{}"),
            Some("x"),
            Some(r#"{"refreshToken":""}"#),
            Some(r#"{"refresh_token":"a"}"#),
        ] {
            assert_error(
                &post(url(&bagid, REFRESH_PATH), &[], body).await,
                400,
                "bad_request",
            );
        }
        // The new one works.
        let (status, _) = refresh_with(&bagid, &refresh2).await;
        assert_eq!(status, 200);
        assert_eq!(bagid.refresh_requests(), 10);
        assert_eq!(bagid.login_requests("b2b_secret"), 1);
        let issued = bagid.issued_tokens();
        assert_eq!(issued.len(), 6);
        assert!(issued.contains(&refresh1) && issued.contains(&refresh2));
    }

    #[tokio::test]
    async fn refresh_expiry_and_revocation() {
        let bagid: BagIdStandIn = started().await;
        // Each way a refresh token stops working.
        for spoil in ["expiry", "revoke_refresh_tokens", "revoke_all"] {
            let refresh_ttl = match spoil {
                "expiry" => Duration::from_millis(300),
                _ => Duration::from_secs(3600),
            };
            bagid.set_refresh_ttl(refresh_ttl);
            let (_, reply) = b2b_login(&bagid).await;
            assert_eq!(reply["refreshExpiresIn"], refresh_ttl.as_secs(), "{spoil}");
            let access = reply["accessToken"].as_str().unwrap().to_owned();
            let refresh = reply["refreshToken"].as_str().unwrap().to_owned();
            match spoil {
                "expiry" => tokio::time::sleep(Duration::from_millis(400)).await,
                "revoke_refresh_tokens" => {
                    bagid.revoke_refresh_tokens();
                    assert!(bagid.is_valid_token(&access), "access tokens survive");
                }
                _ => {
                    bagid.revoke_all();
                    assert!(!bagid.is_valid_token(&access));
                }
            }
            let reply = refresh_with(&bagid, &refresh).await;
            assert_error(&reply, 401, "unauthorized");
        }
    }

    #[tokio::test]
    async fn without_refresh_tokens() {
        let settings = BagIdSettings {
            issue_refresh_tokens: false,
            token_ttl: Duration::from_secs(600),
            ..BagIdSettings::default()
        };
        let bagid = BagIdStandIn::start(settings).await.unwrap();
        let (status, reply) = b2b_login(&bagid).await;
        assert_eq!(status, 200);
        assert_eq!(reply["expiresIn"], 600);
        assert!(reply.get("refreshToken").is_none());
        assert!(reply.get("refreshExpiresIn").is_none());
        assert_eq!(bagid.issued_tokens().len(), 1);
    }

    #[tokio::test]
    async fn unavailable_answers_503_everywhere() {
        let bagid: BagIdStandIn = started().await;
        bagid.set_available(false);
        let host = json!({"token": host_token("h", Duration::from_secs(60))}).to_string();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: [Case; 6] = [
            (FEDERATED_PATH, &[APP_KEY], Some(host.as_str())),
            (NONCES_PATH, &[], None),
            (
                ATTESTATION_PATH,
                &[],
                Some(r#"{"nonce":"n","attestationObject":"a"}"#),
            ),
            (
                GUEST_PATH,
                &[],
                Some(r#"{"nonce":"n","attestationObject":"a"}"#),
            ),
            (B2B_SECRET_PATH, &[APP_KEY, B2B], Some(B2B_LOGIN)),
            (REFRESH_PATH, &[], Some(r#"{"refreshToken":"r"}"#)),
        ];
        for (path, headers, body) in cases {
            let reply = post(url(&bagid, path), headers, body).await;
            assert_error(&reply, 503, "service_unavailable");
        }
        for flow in FLOWS {
            assert_eq!(bagid.login_requests(flow), 1, "{flow}");
        }
        assert_eq!(bagid.nonce_requests(), 1);
        assert_eq!(bagid.refresh_requests(), 1);
        assert!(bagid.issued_tokens().is_empty());
        assert!(bagid.issued_nonces().is_empty());
        bagid.set_available(true);
        let (status, _) = b2b_login(&bagid).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn token_ttl_revocation_and_expiry() {
        let bagid: BagIdStandIn = started().await;
        testing::assert_ttl_expiry_and_revocation(&bagid, || async {
            let (_, reply) = b2b_login(&bagid).await;
            let access = reply["accessToken"].as_str().unwrap().to_owned();
            let claims = jwt::verify(&access).unwrap();
            assert_eq!(reply["expiresIn"], claims.exp - claims.iat);
            (access, claims.exp - claims.iat)
        })
        .await;
    }

    #[tokio::test]
    async fn delay_slows_the_answer() {
        let bagid: BagIdStandIn = started().await;
        let nonce = || async { post(url(&bagid, NONCES_PATH), &[], None).await.0 };
        testing::assert_delay_applies(&bagid, nonce).await;
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let bagid: BagIdStandIn = started().await;
        let paths = [
            FEDERATED_PATH,
            NONCES_PATH,
            ATTESTATION_PATH,
            GUEST_PATH,
            B2B_SECRET_PATH,
            REFRESH_PATH,
        ];
        let counted = || {
            let logins: usize = FLOWS.iter().map(|flow| bagid.login_requests(flow)).sum();
            logins + bagid.nonce_requests() + bagid.refresh_requests()
        };
        testing::assert_only_post(&paths.map(|path| url(&bagid, path)), counted).await;
    }

    #[tokio::test]
    async fn attestor_feeds_the_attestation_flow() {
        let bagid: BagIdStandIn = started().await;
        let attestor = AttestorStandIn::start().await.unwrap();
        assert_eq!(attestor.attest_url(), format!("{}/attest", attestor.url()));
        let nonce = new_nonce(&bagid).await;
        let (status, reply) = attest(&attestor, &nonce).await;
        assert_eq!(status, 200, "{reply}");
        let attestation = reply["attestationObject"].as_str().unwrap();
        assert_eq!(attestation, attestation_for(&nonce));
        assert_eq!(attestor.requests(), 1);
        assert_eq!(attestor.last_nonce().as_deref(), Some(nonce.as_str()));
        let body = attested_body(&nonce, attestation);
        let (status, _) = post(url(&bagid, ATTESTATION_PATH), &[], Some(&body)).await;
        assert_eq!(status, 200);

        // Tampered: a 200 that BagID refuses.
        attestor.set_tampered(true);
        let nonce = new_nonce(&bagid).await;
        let (status, reply) = attest(&attestor, &nonce).await;
        assert_eq!(status, 200);
        let body = attested_body(&nonce, reply["attestationObject"].as_str().unwrap());
        assert_error(
            &post(url(&bagid, GUEST_PATH), &[], Some(&body)).await,
            401,
            "unauthorized",
        );
        attestor.stop().await;
    }

    #[tokio::test]
    async fn attestor_errors() {
        let attestor = AttestorStandIn::start().await.unwrap();
        for body in [
            None,
            Some("x"),
            Some("{}"),
            Some(r#"{"nonce":""}"#),
            Some(r#"{"nonce":3}"#),
        ] {
            assert_error(
                &post(attestor.attest_url(), &[], body).await,
                400,
                "bad_request",
            );
        }
        assert_eq!(attestor.last_nonce(), None);
        attestor.set_available(false);
        assert_error(
            &post(attestor.attest_url(), &[], Some(r#"{"nonce":"n_1"}"#)).await,
            503,
            "service_unavailable",
        );
        attestor.set_available(true);
        let attest = || async {
            let (status, _) = post(attestor.attest_url(), &[], Some(r#"{"nonce":"n_1"}"#)).await;
            status
        };
        testing::assert_delay_applies(&attestor, attest).await;
        assert_eq!(attestor.requests(), 8);
        let status = reqwest::get(attestor.attest_url()).await.unwrap().status();
        assert_eq!(status, 405);
    }
}
