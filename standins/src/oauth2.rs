//! An RFC 6749 token endpoint: `POST /oauth/token` with the `client_credentials` (§4.4),
//! `password` (§4.3) and `refresh_token` (§6) grants, client authentication by HTTP Basic
//! or by `client_id`/`client_secret` in the body (§2.3.1), and §5.2 error answers.
//!
//! It is also an RFC 8693 token exchange endpoint (grant type
//! `urn:ietf:params:oauth:grant-type:token-exchange`, section 2.1): a confidential client
//! sends `subject_token` (a demo JWT, [`jwt::verify`]) with `subject_token_type`
//! (`...:access_token` or `...:jwt`), and optionally `requested_token_type`, `audience` and
//! `resource` (each any number of times), `scope`, and `actor_token` with
//! `actor_token_type`. The reply (section 2.2.1) adds `issued_token_type`; the token's `sub`
//! is the subject token's, its `aud` the resources and audiences asked for, its `act` the
//! actor token's `sub`. Errors (section 2.2.2): a subject or actor token that is invalid,
//! expired or of another type, or a subject in [`OAuth2Settings::refused_subjects`], is
//! `invalid_request`; an audience outside [`OAuth2Settings::audiences`] or an unknown
//! resource is `invalid_target`. A subject in [`OAuth2Settings::failing_subjects`] gets
//! 500 `server_error`, a server failing for that caller only.
//!
//! Access tokens are HS256 JWTs from [`crate::jwt`] (or opaque strings), refresh tokens are
//! opaque and single use: each use returns a new one and retires the old. Down, every
//! request gets 503 `temporarily_unavailable` (and is still counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::MethodFilter;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::controls::{Kind, Lifetime, Paired, Switches, Tokens, Unspendable};
use crate::handle::{answer, Provider, StandIn, Switched};
use crate::{basic_credentials, header_text, json_response, jwt, lock, strip_scheme};

/// The path of the token endpoint under the stand-in's base URL.
pub const TOKEN_PATH: &str = "/oauth/token";

/// RFC 8693 section 2.1: the grant type of a token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 section 3: the token types this server takes as subject or actor tokens and
/// issues (its tokens are JWTs and access tokens both).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPES: [&str; 2] = [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE];

/// The realm in `WWW-Authenticate` on a failed Basic client authentication.
pub const REALM: &str = "tollgate-demo";

/// Lifetime of refresh tokens unless changed with [`OAuth2StandIn::set_refresh_token_ttl`].
const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the stand-in accepts and how it answers.
#[derive(Clone, Debug)]
pub struct OAuth2Settings {
    /// Registered confidential clients: client_id, client_secret.
    pub clients: Vec<(String, String)>,
    /// Resource owners for the password grant: username, password.
    pub users: Vec<(String, String)>,
    /// Lifetime of access tokens (`expires_in`, and `exp` of JWTs).
    pub token_ttl: Duration,
    /// If false, the reply carries no `expires_in`.
    pub include_expires_in: bool,
    /// JWT access tokens (via [`jwt::mint`]) if true, opaque ones if false.
    pub jwt_access_tokens: bool,
    /// Issue a refresh token with every successful grant (including `client_credentials`,
    /// which RFC 6749 §4.4.3 discourages but lets a test exercise the refresh path).
    pub issue_refresh_tokens: bool,
    /// The resources (RFC 8707) tokens may be asked for; empty: any absolute URI.
    pub resources: Vec<String>,
    /// The audiences (RFC 8693) a token exchange may ask for; empty: any.
    pub audiences: Vec<String>,
    /// Subjects whose tokens a token exchange refuses (`invalid_request`).
    pub refused_subjects: Vec<String>,
    /// Subjects for whom a token exchange fails (500 `server_error`).
    pub failing_subjects: Vec<String>,
}

impl Default for OAuth2Settings {
    fn default() -> Self {
        OAuth2Settings {
            clients: vec![("demo-client".to_owned(), "demo-secret".to_owned())],
            users: vec![("demo-user".to_owned(), "demo-password".to_owned())],
            token_ttl: Duration::from_secs(300),
            include_expires_in: true,
            jwt_access_tokens: true,
            issue_refresh_tokens: false,
            resources: Vec::new(),
            audiences: Vec::new(),
            refused_subjects: Vec::new(),
            failing_subjects: Vec::new(),
        }
    }
}

/// The last request the token endpoint received, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedTokenRequest {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The form parameters in order (empty when the body was not a form).
    pub form: Vec<(String, String)>,
}

impl RecordedTokenRequest {
    /// The first value of form parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a token was issued for; a refresh carries it over to the new tokens.
#[derive(Clone, Debug)]
pub struct Grant {
    client_id: String,
    subject: String,
    scope: Option<String>,
    audience: Option<String>,
    /// RFC 8707 resources; they become the token's audience.
    resources: Vec<String>,
    /// RFC 8693 audiences of a token exchange; they join the token's audience.
    audiences: Vec<String>,
    /// RFC 8693: the `sub` of the actor token, the token's `act`.
    actor: Option<String>,
}

/// The OAuth 2.0 token endpoint stand-in.
pub type OAuth2StandIn = StandIn<OAuth2>;

/// The state of the OAuth 2.0 token endpoint stand-in.
pub struct OAuth2 {
    issuer: String,
    clients: Vec<(String, String)>,
    users: Vec<(String, String)>,
    include_expires_in: bool,
    jwt_access_tokens: bool,
    issue_refresh_tokens: bool,
    resources: Vec<String>,
    audiences: Vec<String>,
    refused_subjects: Vec<String>,
    failing_subjects: Vec<String>,
    switches: Switches,
    refresh_ttl: Lifetime,
    token_requests: AtomicUsize,
    grant_requests: Mutex<HashMap<String, usize>>,
    /// Used refresh tokens are retired.
    tokens: Tokens<Paired<Grant>>,
    last_request: Mutex<Option<RecordedTokenRequest>>,
}

impl Switched for OAuth2 {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

impl Provider for OAuth2 {
    type Settings = OAuth2Settings;
    type Facts = Paired<Grant>;

    fn new(settings: OAuth2Settings, url: String) -> OAuth2 {
        OAuth2 {
            issuer: url,
            clients: settings.clients,
            users: settings.users,
            include_expires_in: settings.include_expires_in,
            jwt_access_tokens: settings.jwt_access_tokens,
            issue_refresh_tokens: settings.issue_refresh_tokens,
            resources: settings.resources,
            audiences: settings.audiences,
            refused_subjects: settings.refused_subjects,
            failing_subjects: settings.failing_subjects,
            switches: Switches::default(),
            refresh_ttl: Lifetime::new(DEFAULT_REFRESH_TTL),
            token_requests: AtomicUsize::new(0),
            grant_requests: Mutex::new(HashMap::new()),
            tokens: Tokens::new(settings.token_ttl),
            last_request: Mutex::new(None),
        }
    }

    fn router() -> Router<Arc<OAuth2>> {
        Router::new().route(TOKEN_PATH, answer(MethodFilter::POST, token_endpoint))
    }

    fn tokens(&self) -> &Tokens<Paired<Grant>> {
        &self.tokens
    }

    /// Refresh tokens are not access tokens.
    fn usable(facts: &Paired<Grant>) -> bool {
        facts.kind == Kind::Access
    }
}

impl OAuth2StandIn {
    /// `url() + "/oauth/token"`.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.url(), TOKEN_PATH)
    }

    /// Every POST to the token endpoint, whatever the outcome.
    pub fn token_requests(&self) -> usize {
        self.state().token_requests.load(Ordering::SeqCst)
    }

    /// Requests (successful or not) whose form carried this `grant_type`.
    pub fn grant_requests(&self, grant_type: &str) -> usize {
        lock(&self.state().grant_requests)
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// Lifetime of refresh tokens issued from now on (default 24 h).
    pub fn set_refresh_token_ttl(&self, ttl: Duration) {
        self.state().refresh_ttl.set(ttl);
    }

    /// The last request received by the token endpoint.
    pub fn last_request(&self) -> Option<RecordedTokenRequest> {
        lock(&self.state().last_request).clone()
    }
}

/// A §5.2 error reply.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Add `WWW-Authenticate: Basic` (the client tried the Authorization header).
    challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: false,
        }
    }

    fn into_response(self) -> Response {
        let mut response = json_response(
            self.status,
            &json!({"error": self.error, "error_description": self.description}),
        );
        no_store(&mut response);
        if self.challenge {
            if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\"")) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// 401 `invalid_client`, with the challenge when the client tried the Authorization header.
fn invalid_client(description: &str, challenge: bool) -> OAuthError {
    OAuthError {
        challenge,
        ..OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

fn token_endpoint(shared: &OAuth2, headers: &HeaderMap, body: &[u8]) -> Response {
    token_request(shared, headers, body).unwrap_or_else(OAuthError::into_response)
}

fn token_request(
    shared: &OAuth2,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let authorization = header_text(headers, header::AUTHORIZATION);
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let form_ok = is_form(content_type.as_deref());
    let form: Vec<(String, String)> = if form_ok {
        url::form_urlencoded::parse(body).into_owned().collect()
    } else {
        Vec::new()
    };
    if let Some((_, grant)) = form.iter().find(|(n, _)| n == "grant_type") {
        *lock(&shared.grant_requests)
            .entry(grant.clone())
            .or_insert(0) += 1;
    }
    *lock(&shared.last_request) = Some(RecordedTokenRequest {
        authorization: authorization.clone(),
        content_type,
        form: form.clone(),
    });

    if !shared.switches.is_available() {
        return Err(OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the token endpoint stand-in is switched off",
        ));
    }
    if !form_ok {
        return Err(invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }

    // RFC 8707 §2: `resource` may be given more than once, each an absolute URI without
    // a fragment, each one this server knows.
    let resources: Vec<String> = form
        .iter()
        .filter(|(name, value)| name == "resource" && !value.is_empty())
        .map(|(_, value)| value.clone())
        .collect();
    for resource in &resources {
        let absolute = url::Url::parse(resource).is_ok_and(|url| url.fragment().is_none());
        if !absolute || !(shared.resources.is_empty() || shared.resources.contains(resource)) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                format!("the resource {resource} is not one this server issues tokens for"),
            ));
        }
    }

    // §3.2: no parameter more than once; a parameter without a value counts as omitted.
    // A token exchange may give `audience` several times (RFC 8693 section 2.1).
    let exchange = form
        .iter()
        .any(|(name, value)| name == "grant_type" && value == TOKEN_EXCHANGE_GRANT);
    let mut audiences: Vec<String> = Vec::new();
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (name, value) in &form {
        if value.is_empty() || name == "resource" {
            continue;
        }
        if exchange && name == "audience" {
            audiences.push(value.clone());
            continue;
        }
        if params.insert(name.as_str(), value.as_str()).is_some() {
            return Err(invalid_request(format!("parameter {name} is repeated")));
        }
    }

    let client_id = authenticate_client(shared, authorization.as_deref(), &params)?;

    let Some(grant_type) = params.get("grant_type").copied() else {
        return Err(invalid_request("grant_type is missing"));
    };
    let scope = params.get("scope").map(|s| normalize_scope(s));
    let audience = params.get("audience").map(|s| (*s).to_owned());
    // What the request asks for; the grant type decides the subject.
    let asked = Grant {
        subject: client_id.clone(),
        client_id,
        scope,
        audience,
        resources,
        audiences: Vec::new(),
        actor: None,
    };
    let grant = match grant_type {
        "client_credentials" => asked,
        "password" => {
            let (Some(username), Some(password)) = (params.get("username"), params.get("password"))
            else {
                return Err(invalid_request(
                    "the password grant needs username and password",
                ));
            };
            let known = shared
                .users
                .iter()
                .any(|(u, p)| u == username && p == *password);
            if !known {
                return Err(invalid_grant("the resource owner credentials are invalid"));
            }
            Grant {
                subject: (*username).to_owned(),
                ..asked
            }
        }
        "refresh_token" => {
            let Some(refresh_token) = params.get("refresh_token") else {
                return Err(invalid_request("refresh_token is missing"));
            };
            use_refresh_token(shared, refresh_token, asked)?
        }
        TOKEN_EXCHANGE_GRANT => {
            let (grant, issued_token_type) = token_exchange(shared, &params, audiences, asked)?;
            return Ok(issue(shared, grant, Some(issued_token_type)));
        }
        other => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            ))
        }
    };
    Ok(issue(shared, grant, None))
}

/// RFC 8693 section 2.1: check the subject (and actor) token and what is asked for it;
/// the grant for the subject token's `sub`, and the `issued_token_type`.
fn token_exchange(
    shared: &OAuth2,
    params: &HashMap<&str, &str>,
    audiences: Vec<String>,
    asked: Grant,
) -> Result<(Grant, &'static str), OAuthError> {
    let Some(subject_token) = params.get("subject_token") else {
        return Err(invalid_request("subject_token is missing"));
    };
    let Some(subject_token_type) = params.get("subject_token_type") else {
        return Err(invalid_request("subject_token_type is missing"));
    };
    let subject = exchanged_token(subject_token, subject_token_type, "subject")?;
    if shared.refused_subjects.contains(&subject.sub) {
        return Err(invalid_request("the subject token is not acceptable here"));
    }
    if shared.failing_subjects.contains(&subject.sub) {
        return Err(OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the stand-in fails for this subject",
        ));
    }
    let actor = match (params.get("actor_token"), params.get("actor_token_type")) {
        (None, None) => None,
        (Some(token), Some(token_type)) => Some(exchanged_token(token, token_type, "actor")?.sub),
        (Some(_), None) => {
            return Err(invalid_request(
                "actor_token_type is required with actor_token",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid_request(
                "actor_token_type is sent only with actor_token",
            ))
        }
    };
    let issued_token_type = match params.get("requested_token_type").copied() {
        None | Some(ACCESS_TOKEN_TYPE) => ACCESS_TOKEN_TYPE,
        Some(JWT_TOKEN_TYPE) => JWT_TOKEN_TYPE,
        Some(other) => {
            return Err(invalid_request(format!(
                "requested_token_type {other} cannot be issued here"
            )))
        }
    };
    if let Some(audience) = audiences
        .iter()
        .find(|audience| !(shared.audiences.is_empty() || shared.audiences.contains(audience)))
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("the audience {audience} is not one this server issues tokens for"),
        ));
    }
    let grant = Grant {
        subject: subject.sub,
        audiences,
        actor,
        ..asked
    };
    Ok((grant, issued_token_type))
}

/// A subject or actor token: a demo JWT, unexpired, of a type this server takes. Anything
/// else is `invalid_request` (RFC 8693 section 2.2.2).
fn exchanged_token(token: &str, token_type: &str, what: &str) -> Result<jwt::Claims, OAuthError> {
    if !TOKEN_TYPES.contains(&token_type) {
        return Err(invalid_request(format!(
            "{what}_token_type {token_type} is not one this server takes"
        )));
    }
    jwt::verify(token)
        .map_err(|_| invalid_request(format!("the {what} token is invalid or has expired")))
}

/// §2.3.1: HTTP Basic, or `client_id` + `client_secret` in the body, never both.
fn authenticate_client(
    shared: &OAuth2,
    authorization: Option<&str>,
    params: &HashMap<&str, &str>,
) -> Result<String, OAuthError> {
    let body_id = params.get("client_id").copied();
    let body_secret = params.get("client_secret").copied();
    let known = |id: &str, secret: &str| shared.clients.iter().any(|(i, s)| i == id && s == secret);
    match authorization {
        Some(value) => {
            let Some(encoded) = strip_scheme(value, "Basic") else {
                return Err(invalid_client(
                    "client authentication must use the Basic scheme",
                    true,
                ));
            };
            if body_secret.is_some() {
                return Err(invalid_request(
                    "the client used both HTTP Basic and client_secret in the body",
                ));
            }
            let Some((id, secret)) = decode_basic(encoded) else {
                return Err(invalid_client("malformed Basic credentials", true));
            };
            if body_id.is_some_and(|b| b != id) {
                return Err(invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            if !known(&id, &secret) {
                return Err(invalid_client("client authentication failed", true));
            }
            Ok(id)
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => {
                if known(id, secret) {
                    Ok(id.to_owned())
                } else {
                    Err(invalid_client("client authentication failed", false))
                }
            }
            (Some(_), None) => Err(invalid_client("client_secret is missing", false)),
            (None, Some(_)) => Err(invalid_request("client_secret without client_id")),
            (None, None) => Err(invalid_client("no client authentication", false)),
        },
    }
}

/// `base64(urlencode(id) ":" urlencode(secret))` → (id, secret).
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let (id, secret) = basic_credentials(encoded)?;
    Some((form_decode(&id)?, form_decode(&secret)?))
}

/// application/x-www-form-urlencoded decoding of one component: `+` is a space, `%XX` a
/// byte. A `%` not followed by two hex digits stays as it is.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn normalize_scope(scope: &str) -> String {
    scope.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// §6: check and retire the refresh token; the new tokens keep its subject, scope (or the
/// narrower one `asked`) and audience (or the one asked).
fn use_refresh_token(
    shared: &OAuth2,
    refresh_token: &str,
    asked: Grant,
) -> Result<Grant, OAuthError> {
    let granted = shared.tokens.spend_refresh(
        refresh_token,
        |why| {
            invalid_grant(match why {
                Unspendable::Unknown => "unknown refresh token",
                Unspendable::WrongKind => "not a refresh token",
                Unspendable::Retired => "the refresh token was revoked or already used",
                Unspendable::Expired => "the refresh token has expired",
            })
        },
        |granted| {
            if granted.client_id != asked.client_id {
                return Err(invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            if let (Some(asked), Some(granted)) = (&asked.scope, &granted.scope) {
                let granted: Vec<&str> = granted.split(' ').collect();
                if !asked.split(' ').all(|s| granted.contains(&s)) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "the requested scope exceeds the scope originally granted",
                    ));
                }
            }
            Ok(())
        },
    )?;
    // RFC 8707 §2.2: a refresh may narrow the resources; without any, the original ones.
    let resources = if asked.resources.is_empty() {
        granted.resources.clone()
    } else {
        asked.resources
    };
    Ok(Grant {
        scope: asked.scope.or(granted.scope),
        audience: asked.audience.or(granted.audience),
        resources,
        ..granted
    })
}

/// Mint, record and return the §5.1 success reply; for a token exchange, with its
/// `issued_token_type` (RFC 8693 section 2.2.1).
fn issue(shared: &OAuth2, grant: Grant, issued_token_type: Option<&str>) -> Response {
    let refresh_ttl = shared
        .issue_refresh_tokens
        .then(|| shared.refresh_ttl.get());
    let pair = shared.tokens.issue_pair(
        |ttl| {
            if shared.jwt_access_tokens {
                // The resources asked for are the audience (RFC 8707 §2); the older,
                // non-standard `audience` parameter only when none was.
                // A token exchange's audiences join them (RFC 8693 section 2.1).
                let mut audiences: Vec<String> = if grant.resources.is_empty() {
                    grant.audience.iter().cloned().collect()
                } else {
                    grant.resources.clone()
                };
                audiences.extend(grant.audiences.iter().cloned());
                jwt::mint_acting(
                    &grant.subject,
                    &shared.issuer,
                    &audiences,
                    grant.actor.as_deref(),
                    ttl,
                )
            } else {
                jwt::opaque_token()
            }
        },
        refresh_ttl,
        grant.clone(),
    );

    let mut body = Map::new();
    body.insert("access_token".into(), Value::String(pair.access));
    if let Some(issued_token_type) = issued_token_type {
        body.insert(
            "issued_token_type".into(),
            Value::String(issued_token_type.into()),
        );
    }
    body.insert("token_type".into(), Value::String("Bearer".into()));
    if shared.include_expires_in {
        body.insert("expires_in".into(), Value::from(pair.ttl.as_secs()));
    }
    if let Some((refresh_token, _)) = pair.refresh {
        body.insert("refresh_token".into(), Value::String(refresh_token));
    }
    if let Some(scope) = grant.scope {
        body.insert("scope".into(), Value::String(scope));
    }
    let mut response = json_response(StatusCode::OK, &Value::Object(body));
    no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::started;
    use crate::testing::{
        assert_delay_applies, assert_only_post, assert_ttl_expiry_and_revocation,
    };
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    fn basic(id: &str, secret: &str) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
        )
    }

    async fn post_form(
        url: &str,
        authorization: Option<&str>,
        form: &[(&str, &str)],
    ) -> (u16, HeaderMap, Value) {
        let mut request = reqwest::Client::new().post(url).form(form);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let reply = crate::testing::send(request).await;
        let body = reply.json();
        (reply.status, reply.headers, body)
    }

    /// A request that the endpoint refuses, and what it answers: status, `error`, headers.
    type Refused<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], u16, &'a str);

    /// Each request gets its status and §5.2 `error`, with a description and `no-store`;
    /// returns the headers and body of each answer.
    async fn assert_refused(url: &str, cases: &[Refused<'_>]) -> Vec<(HeaderMap, Value)> {
        let mut answers = Vec::new();
        for (authorization, form, status, error) in cases {
            let (got, headers, body) = post_form(url, *authorization, form).await;
            let expected = (*status, Some(*error));
            assert_eq!((got, body["error"].as_str()), expected, "{form:?}");
            assert!(body["error_description"].is_string(), "{body}");
            assert_eq!(headers["cache-control"], "no-store");
            answers.push((headers, body));
        }
        answers
    }

    async fn start(settings: OAuth2Settings) -> OAuth2StandIn {
        OAuth2StandIn::start(settings).await.unwrap()
    }

    fn with_refresh() -> OAuth2Settings {
        OAuth2Settings {
            issue_refresh_tokens: true,
            ..OAuth2Settings::default()
        }
    }

    const CC_POST: &[(&str, &str)] = &[
        ("grant_type", "client_credentials"),
        ("client_id", "demo-client"),
        ("client_secret", "demo-secret"),
    ];
    const CC: &[(&str, &str)] = &[("grant_type", "client_credentials")];

    #[tokio::test]
    async fn client_credentials_with_post_auth() {
        let idp: OAuth2StandIn = started().await;
        assert_eq!(idp.token_url(), format!("{}/oauth/token", idp.url()));
        let (status, headers, body) = post_form(&idp.token_url(), None, CC_POST).await;
        assert_eq!(status, 200);
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert!(body.get("refresh_token").is_none());
        assert!(body.get("scope").is_none());
        let token = body["access_token"].as_str().unwrap();
        let claims = crate::testing::assert_jwt_of(&idp, token, "demo-client", 300);
        assert_eq!(claims.aud, None);
        assert!(!idp.is_valid_token("not-issued"));
        assert_eq!(idp.issued_tokens(), [token]);
        assert_eq!(idp.token_requests(), 1);
        assert_eq!(idp.grant_requests("client_credentials"), 1);
        assert_eq!(idp.grant_requests("password"), 0);
        idp.stop().await;
    }

    #[tokio::test]
    async fn client_credentials_with_basic_auth_urlencoded() {
        let settings = OAuth2Settings {
            clients: vec![("my client:1".into(), "s3c:r+t&%=é".to_owned())],
            ..OAuth2Settings::default()
        };
        let idp = start(settings).await;
        let auth = basic("my client:1", "s3c:r+t&%=é");
        let (status, _, body) = post_form(&idp.token_url(), Some(&auth), CC).await;
        assert_eq!(status, 200, "{body}");
        let claims = jwt::verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.sub, "my client:1");
        let last = idp.last_request().unwrap();
        assert_eq!(last.authorization.as_deref(), Some(auth.as_str()));
        assert_eq!(
            last.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            last.form,
            [("grant_type".to_owned(), "client_credentials".to_owned())]
        );
        // Basic with a client_id in the body that matches is fine.
        let form = [CC[0], ("client_id", "my client:1")];
        let (status, _, _) = post_form(&idp.token_url(), Some(&auth), &form).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn basic_and_body_secret_together_is_invalid_request() {
        let idp: OAuth2StandIn = started().await;
        let auth = basic("demo-client", "demo-secret");
        let other_id = [CC[0], ("client_id", "other")];
        assert_refused(
            &idp.token_url(),
            &[
                (Some(&auth), CC_POST, 400, "invalid_request"),
                // Basic plus a different client_id in the body.
                (Some(&auth), &other_id, 400, "invalid_request"),
            ],
        )
        .await;
        assert!(idp.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn bad_client_is_401_with_challenge_only_for_basic() {
        let idp: OAuth2StandIn = started().await;
        let wrong_secret = basic("demo-client", "wrong");
        let unknown_client = basic("nobody", "demo-secret");
        let body_wrong_secret = [
            CC[0],
            ("client_id", "demo-client"),
            ("client_secret", "wrong"),
        ];
        let body_no_secret = [CC[0], ("client_id", "demo-client")];
        fn bad<'a>(authorization: Option<&'a str>, form: &'a [(&'a str, &'a str)]) -> Refused<'a> {
            (authorization, form, 401, "invalid_client")
        }
        let refused: [Refused; 7] = [
            bad(Some(&wrong_secret), CC),
            bad(Some(&unknown_client), CC),
            bad(Some("Basic !!!notbase64"), CC),
            bad(Some("Bearer xyz"), CC),
            bad(None, &body_wrong_secret),
            bad(None, &body_no_secret),
            bad(None, CC),
        ];
        // Whether each answer carries a Basic challenge (None: not checked).
        let challenges = [
            Some(true),
            Some(true),
            Some(true),
            None,
            Some(false),
            None,
            Some(false),
        ];
        let answers = assert_refused(&idp.token_url(), &refused).await;
        for ((challenge, (headers, _)), case) in challenges.iter().zip(&answers).zip(&refused) {
            if let Some(challenge) = challenge {
                let got = headers.contains_key("www-authenticate");
                assert_eq!(got, *challenge, "{case:?}");
            }
        }
        assert_eq!(
            answers[0].0["www-authenticate"],
            "Basic realm=\"tollgate-demo\""
        );
        assert_eq!(idp.token_requests(), 7);
        assert_eq!(idp.grant_requests("client_credentials"), 7);
        assert!(idp.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn password_grant() {
        let idp: OAuth2StandIn = started().await;
        let url = idp.token_url();
        let auth = basic("demo-client", "demo-secret");
        let grant = |password| {
            [
                ("grant_type", "password"),
                ("username", "demo-user"),
                ("password", password),
            ]
        };
        let (status, _, body) = post_form(&url, Some(&auth), &grant("demo-password")).await;
        assert_eq!(status, 200, "{body}");
        let claims = jwt::verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.sub, "demo-user");

        let wrong = grant("nope");
        // An empty value counts as omitted.
        let empty = grant("");
        let missing = &empty[..2];
        assert_refused(
            &url,
            &[
                (Some(&auth), &wrong, 400, "invalid_grant"),
                (Some(&auth), missing, 400, "invalid_request"),
                (Some(&auth), &empty, 400, "invalid_request"),
            ],
        )
        .await;
        assert_eq!(idp.grant_requests("password"), 4);
        assert_eq!(idp.issued_tokens().len(), 1);
    }

    #[tokio::test]
    async fn grant_type_errors_and_duplicates() {
        let idp: OAuth2StandIn = started().await;
        let auth = basic("demo-client", "demo-secret");
        let device_code = "urn:ietf:params:oauth:grant-type:device_code";
        let grant_twice = [CC[0], CC[0]];
        let scope_twice = [CC[0], ("scope", "a"), ("scope", "b")];
        let answers = assert_refused(
            &idp.token_url(),
            &[
                (
                    Some(&auth),
                    &[("grant_type", device_code)],
                    400,
                    "unsupported_grant_type",
                ),
                (Some(&auth), &[("scope", "a")], 400, "invalid_request"),
                (Some(&auth), &grant_twice, 400, "invalid_request"),
                (Some(&auth), &scope_twice, 400, "invalid_request"),
            ],
        )
        .await;
        assert_eq!(idp.grant_requests(device_code), 1);
        let repeated = &answers[2].1["error_description"];
        assert!(repeated.as_str().unwrap().contains("grant_type"));
        assert_eq!(idp.token_requests(), 4);
        assert!(idp.issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn non_form_body_is_invalid_request() {
        let idp: OAuth2StandIn = started().await;
        let json_body = json!({"grant_type": "client_credentials",
                          "client_id": "demo-client", "client_secret": "demo-secret"});
        let reply = crate::testing::send(
            reqwest::Client::new()
                .post(idp.token_url())
                .json(&json_body),
        )
        .await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"], "invalid_request");
        assert_eq!(idp.token_requests(), 1);
        let last = idp.last_request().unwrap();
        assert_eq!(last.content_type.as_deref(), Some("application/json"));
        assert!(last.form.is_empty());

        // A charset parameter is fine.
        let reply = reqwest::Client::new()
            .post(idp.token_url())
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body("grant_type=client_credentials&client_id=demo-client&client_secret=demo-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }

    #[tokio::test]
    async fn scope_and_audience() {
        let idp: OAuth2StandIn = started().await;
        let form = [
            CC[0],
            ("scope", "reports.read reports.write"),
            ("audience", "https://api.example"),
        ];
        let auth = basic("demo-client", "demo-secret");
        let (status, _, body) = post_form(&idp.token_url(), Some(&auth), &form).await;
        assert_eq!(status, 200);
        assert_eq!(body["scope"], "reports.read reports.write");
        let claims = jwt::verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(
            claims.aud.as_ref().and_then(jwt::Audience::as_one),
            Some("https://api.example")
        );
        let last = idp.last_request().unwrap();
        assert_eq!(last.param("audience"), Some("https://api.example"));
        assert_eq!(last.param("scope"), Some("reports.read reports.write"));
    }

    #[tokio::test]
    async fn opaque_tokens_without_expires_in() {
        let settings = OAuth2Settings {
            include_expires_in: false,
            jwt_access_tokens: false,
            ..OAuth2Settings::default()
        };
        let idp = start(settings).await;
        let (status, _, body) = post_form(&idp.token_url(), None, CC_POST).await;
        assert_eq!(status, 200);
        assert!(body.get("expires_in").is_none());
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(token.len(), 43);
        assert!(!token.contains('.'));
        assert!(idp.is_valid_token(token));
    }

    fn refresh_form(token: &str) -> [(&str, &str); 2] {
        [("grant_type", "refresh_token"), ("refresh_token", token)]
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_are_single_use() {
        let idp = start(with_refresh()).await;
        let url = idp.token_url();
        let password_grant = [
            ("grant_type", "password"),
            ("username", "demo-user"),
            ("password", "demo-password"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("scope", "read write"),
        ];
        let (status, _, first) = post_form(&url, None, &password_grant).await;
        assert_eq!(status, 200);
        let access1 = first["access_token"].as_str().unwrap().to_owned();
        let refresh1 = first["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(refresh1.len(), 43);
        assert!(
            !idp.is_valid_token(&refresh1),
            "a refresh token is no access token"
        );

        let auth = basic("demo-client", "demo-secret");
        let (status, _, second) = post_form(&url, Some(&auth), &refresh_form(&refresh1)).await;
        assert_eq!(status, 200, "{second}");
        let access2 = second["access_token"].as_str().unwrap().to_owned();
        let refresh2 = second["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(refresh1, refresh2);
        assert_ne!(access1, access2);
        assert_eq!(second["scope"], "read write");
        assert_eq!(jwt::verify(&access2).unwrap().sub, "demo-user");
        assert!(idp.is_valid_token(&access1));
        assert!(idp.is_valid_token(&access2));

        let [grant_type, refresh2_param] = refresh_form(&refresh2);
        let wider = [grant_type, refresh2_param, ("scope", "read admin")];
        assert_refused(
            &url,
            &[
                // The old refresh token is spent.
                (Some(&auth), &refresh_form(&refresh1), 400, "invalid_grant"),
                // Unknown refresh token, access token used as refresh token, missing one.
                (
                    Some(&auth),
                    &refresh_form("never-issued"),
                    400,
                    "invalid_grant",
                ),
                (Some(&auth), &refresh_form(&access2), 400, "invalid_grant"),
                (Some(&auth), &[grant_type], 400, "invalid_request"),
                // Scope wider than granted.
                (Some(&auth), &wider, 400, "invalid_scope"),
            ],
        )
        .await;

        // Narrower scope works and is echoed.
        let narrower = [grant_type, refresh2_param, ("scope", "read")];
        let (status, _, third) = post_form(&url, Some(&auth), &narrower).await;
        assert_eq!(status, 200);
        assert_eq!(third["scope"], "read");

        assert_eq!(idp.grant_requests("refresh_token"), 7);
        assert_eq!(idp.grant_requests("password"), 1);
        let issued = idp.issued_tokens();
        assert_eq!(issued.len(), 6);
        assert!(issued.contains(&refresh1) && issued.contains(&refresh2));
    }

    #[tokio::test]
    async fn refresh_token_of_another_client_is_rejected() {
        let settings = OAuth2Settings {
            clients: vec![("a".into(), "sa".to_owned()), ("b".into(), "sb".to_owned())],
            ..with_refresh()
        };
        let idp = start(settings).await;
        let url = idp.token_url();
        let (_, _, body) = post_form(&url, Some(&basic("a", "sa")), CC).await;
        let refresh = body["refresh_token"].as_str().unwrap();
        let auth = basic("b", "sb");
        assert_refused(
            &url,
            &[(Some(&auth), &refresh_form(refresh), 400, "invalid_grant")],
        )
        .await;
    }

    #[tokio::test]
    async fn revoke_all_invalidates_access_and_refresh_tokens() {
        let idp = start(with_refresh()).await;
        let url = idp.token_url();
        let (_, _, body) = post_form(&url, None, CC_POST).await;
        let access = body["access_token"].as_str().unwrap().to_owned();
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        assert!(idp.is_valid_token(&access));
        idp.revoke_all();
        assert!(!idp.is_valid_token(&access));
        let auth = basic("demo-client", "demo-secret");
        assert_refused(
            &url,
            &[(Some(&auth), &refresh_form(&refresh), 400, "invalid_grant")],
        )
        .await;
        // New tokens after the revocation are valid.
        let (_, _, body) = post_form(&url, None, CC_POST).await;
        assert!(idp.is_valid_token(body["access_token"].as_str().unwrap()));
    }

    #[tokio::test]
    async fn expired_refresh_token_is_invalid_grant() {
        let idp = start(with_refresh()).await;
        idp.set_refresh_token_ttl(Duration::from_millis(200));
        let (_, _, body) = post_form(&idp.token_url(), None, CC_POST).await;
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let auth = basic("demo-client", "demo-secret");
        let expired = (
            Some(auth.as_str()),
            &refresh_form(&refresh)[..],
            400,
            "invalid_grant",
        );
        assert_refused(&idp.token_url(), &[expired]).await;
    }

    #[tokio::test]
    async fn unavailable_answers_503_and_still_counts() {
        let idp: OAuth2StandIn = started().await;
        idp.set_available(false);
        let answers = assert_refused(
            &idp.token_url(),
            &[(None, CC_POST, 503, "temporarily_unavailable")],
        )
        .await;
        assert_eq!(answers[0].0["content-type"], "application/json");
        assert_eq!(idp.token_requests(), 1);
        assert_eq!(idp.grant_requests("client_credentials"), 1);
        assert!(idp.issued_tokens().is_empty());
        idp.set_available(true);
        let (status, _, _) = post_form(&idp.token_url(), None, CC_POST).await;
        assert_eq!(status, 200);
        assert_eq!(idp.token_requests(), 2);
    }

    #[tokio::test]
    async fn token_ttl_can_change_and_tokens_expire() {
        let idp: OAuth2StandIn = started().await;
        assert_ttl_expiry_and_revocation(&idp, || async {
            let (_, _, body) = post_form(&idp.token_url(), None, CC_POST).await;
            let token = body["access_token"].as_str().unwrap().to_owned();
            let claims = jwt::verify(&token).unwrap();
            assert_eq!(body["expires_in"], claims.exp - claims.iat);
            (token, claims.exp - claims.iat)
        })
        .await;
    }

    #[tokio::test]
    async fn delay_slows_the_answer_but_counts_on_arrival() {
        let idp: OAuth2StandIn = started().await;
        idp.set_delay(Duration::from_millis(300));
        let url = idp.token_url();
        let pending = tokio::spawn(async move { post_form(&url, None, CC_POST).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(idp.token_requests(), 1, "counted before the answer");
        let (status, _, body) = pending.await.unwrap();
        assert_eq!(status, 200);
        assert!(idp.is_valid_token(body["access_token"].as_str().unwrap()));
        let url = idp.token_url();
        assert_delay_applies(&idp, || async { post_form(&url, None, CC_POST).await.0 }).await;
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let idp: OAuth2StandIn = started().await;
        assert_only_post(&[idp.token_url()], || idp.token_requests()).await;
    }

    /// A token exchange form for `subject_token`, with more parameters.
    fn exchange_form<'a>(
        subject_token: &'a str,
        more: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        form.extend_from_slice(more);
        form
    }

    #[tokio::test]
    async fn token_exchange_mints_a_token_for_the_subject() {
        let idp: OAuth2StandIn = started().await;
        let auth = basic("demo-client", "demo-secret");
        let alice = jwt::mint("alice", "https://idp.example", Duration::from_secs(60));
        let form = exchange_form(
            &alice,
            &[
                ("audience", "reports"),
                ("audience", "audit"),
                ("resource", "https://reports.example/api"),
                ("scope", "reports.read"),
            ],
        );
        let (status, headers, body) = post_form(&idp.token_url(), Some(&auth), &form).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["scope"], "reports.read");
        let minted = body["access_token"].as_str().unwrap();
        assert_ne!(minted, alice);
        let claims = jwt::verify(minted).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.iss, idp.url());
        let aud = claims.aud.unwrap();
        for audience in ["https://reports.example/api", "reports", "audit"] {
            assert!(aud.contains(audience), "{aud:?}");
        }
        assert_eq!(claims.act, None);
        assert!(idp.is_valid_token(minted));
        assert_eq!(idp.grant_requests(TOKEN_EXCHANGE_GRANT), 1);
        let last = idp.last_request().unwrap();
        assert_eq!(last.param("subject_token"), Some(alice.as_str()));

        // Another subject, another token; a JWT asked for, with an actor.
        let bob = jwt::mint("bob", "https://idp.example", Duration::from_secs(60));
        let gateway = jwt::mint("gateway", "https://idp.example", Duration::from_secs(60));
        let form = exchange_form(
            &bob,
            &[
                ("requested_token_type", JWT_TOKEN_TYPE),
                ("actor_token", &gateway),
                ("actor_token_type", JWT_TOKEN_TYPE),
            ],
        );
        let (status, _, body) =
            post_form(&idp.token_url(), None, &[&form[..], &CC_POST[1..]].concat()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issued_token_type"], JWT_TOKEN_TYPE);
        let claims = jwt::verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.sub, "bob");
        assert_eq!(claims.act.map(|act| act.sub).as_deref(), Some("gateway"));
    }

    #[tokio::test]
    async fn token_exchange_errors_follow_rfc_8693() {
        let idp = start(OAuth2Settings {
            audiences: vec!["reports".into()],
            resources: vec!["https://reports.example/api".into()],
            refused_subjects: vec!["mallory".into()],
            failing_subjects: vec!["trouble".into()],
            ..OAuth2Settings::default()
        })
        .await;
        let auth = basic("demo-client", "demo-secret");
        let iss = "https://idp.example";
        let alice = jwt::mint("alice", iss, Duration::from_secs(60));
        let mallory = jwt::mint("mallory", iss, Duration::from_secs(60));
        let trouble = jwt::mint("trouble", iss, Duration::from_secs(60));
        let expired = jwt::mint("alice", iss, Duration::ZERO);
        let untyped = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", alice.as_str()),
        ];
        let untokened = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        let saml = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", alice.as_str()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
        ];
        let forged = exchange_form("not.a.jwt", &[]);
        let late = exchange_form(&expired, &[]);
        let refused = exchange_form(&mallory, &[]);
        let actor_alone = exchange_form(&alice, &[("actor_token", alice.as_str())]);
        let type_alone = exchange_form(&alice, &[("actor_token_type", JWT_TOKEN_TYPE)]);
        let bad_actor = exchange_form(
            &alice,
            &[
                ("actor_token", "forged"),
                ("actor_token_type", JWT_TOKEN_TYPE),
            ],
        );
        let unissuable = exchange_form(
            &alice,
            &[(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            )],
        );
        let elsewhere = exchange_form(&alice, &[("audience", "payroll")]);
        let unknown_resource = exchange_form(&alice, &[("resource", "https://payroll.example/")]);
        let twice = [
            &exchange_form(&alice, &[])[..],
            &[("subject_token", mallory.as_str())],
        ]
        .concat();
        // Sleep past the expired token's second; jwt::verify has no leeway.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let a = Some(auth.as_str());
        assert_refused(
            &idp.token_url(),
            &[
                (a, &untyped, 400, "invalid_request"),
                (a, &untokened, 400, "invalid_request"),
                (a, &saml, 400, "invalid_request"),
                (a, &forged, 400, "invalid_request"),
                (a, &late, 400, "invalid_request"),
                (a, &refused, 400, "invalid_request"),
                (a, &actor_alone, 400, "invalid_request"),
                (a, &type_alone, 400, "invalid_request"),
                (a, &bad_actor, 400, "invalid_request"),
                (a, &unissuable, 400, "invalid_request"),
                (a, &elsewhere, 400, "invalid_target"),
                (a, &unknown_resource, 400, "invalid_target"),
                (a, &twice, 400, "invalid_request"),
                (None, &exchange_form(&alice, &[]), 401, "invalid_client"),
                (a, &exchange_form(&trouble, &[]), 500, "server_error"),
            ],
        )
        .await;
        assert!(idp.issued_tokens().is_empty());
        let good = exchange_form(&alice, &[("audience", "reports")]);
        let (status, _, body) = post_form(&idp.token_url(), a, &good).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(idp.grant_requests(TOKEN_EXCHANGE_GRANT), 16);
    }

    #[test]
    fn form_decode_handles_plus_and_percent() {
        for (encoded, decoded) in [
            ("a+b%3Ac%25", Some("a b:c%")),
            ("100%", Some("100%")),
            ("%zz", Some("%zz")),
            ("%C3%A9", Some("é")),
            ("%FF", None),
        ] {
            assert_eq!(form_decode(encoded).as_deref(), decoded, "{encoded}");
        }
    }
}
