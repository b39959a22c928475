//! Inbound checks (ingress mode): decide whether a caller may pass before tollgate injects
//! its own credential and forwards.
//!
//! A route's `inbound:` section ([`crate::config::inbound::InboundSettings`]) turns into one
//! [`Inbound`] at startup. Four checks exist:
//!
//! - `client_cert`: the connection came with a client certificate that an mTLS listener
//!   verified ([`crate::tls::ClientCert`]); the listener did the cryptography, so the check
//!   is only that there is one;
//! - [`api_key`]: a key in a header, compared (as SHA-256 hashes, in constant time) with the
//!   configured set;
//! - [`jwt`]: a JWT verified with jsonwebtoken against a shared secret, a PEM public key, or a
//!   JWKS ([`jwks`]: cached in moka, refetched on an unknown `kid` at most once per interval);
//! - [`authorize`]: a remote decision by the BigBucks Auth Engine (`POST /user/authorize`,
//!   optionally `GET /me` for identity), cached in moka per token and question.
//!
//! When several are configured **all** must pass, in that order (cheapest first). On
//! success the identity headers are read from the JWT claims, or from the `/me` reply when
//! `authorize.identity_from_me` is set, and `client_cert.subject` and `client_cert.sans`
//! from the client certificate.
//!
//! Every HTTP call (JWKS, authorize, /me) runs on the control runtime (`Handle::spawn`, the
//! request task awaits the `JoinHandle`), so connection pools stay on one runtime and a call
//! that started always completes and fills its cache. No refusal detail, log line or error
//! carries the caller's credential or a configured secret.

pub mod api_key;
pub mod authorize;
pub mod jwks;
pub mod jwt;
#[cfg(test)]
mod testkit;

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;

use crate::config::inbound::{IdentityHeaderSetting, IdentitySource, InboundSettings, TokenSource};
use crate::tls::ClientCert;
use crate::tokens::CallerToken;

/// The `realm` of every challenge tollgate sends.
const REALM: &str = "tollgate";
/// A credential longer than this is refused without parsing it.
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// An identity header value longer than this is not set.
const MAX_IDENTITY_VALUE_BYTES: usize = 4 * 1024;

/// A route's compiled inbound checks.
pub struct Inbound {
    client_cert: bool,
    api_keys: Option<api_key::ApiKeyCheck>,
    jwt: Option<jwt::JwtCheck>,
    authorize: Option<authorize::AuthorizeCheck>,
    identity: Vec<IdentityHeaderSetting>,
    identity_from_me: bool,
    strip: Vec<HeaderName>,
    credential_headers: Vec<HeaderName>,
    /// The route's provider mints a token per caller: a passing caller's verified token is
    /// kept in its [`Identity`], and its `exp` is checked without leeway.
    keep_caller_token: bool,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("client_cert", &self.client_cert)
            .field("api_keys", &self.api_keys)
            .field("jwt", &self.jwt)
            .field("authorize", &self.authorize)
            .field("identity", &self.identity)
            .field("identity_from_me", &self.identity_from_me)
            .field("strip", &self.strip)
            .field("keep_caller_token", &self.keep_caller_token)
            .finish()
    }
}

/// What a passing caller is: the identity headers to set on the forwarded request, and,
/// on a route whose provider mints a token per caller, the token the checks verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Never forwarded, logged or shown; only exchanged by the route's provider.
    pub caller_token: Option<CallerToken>,
}

/// Why a caller may not pass. No variant carries the caller's credential or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with `WWW-Authenticate: {www_authenticate}`: no credential, or not a valid one.
    Unauthenticated {
        detail: String,
        www_authenticate: String,
    },
    /// 403: a valid credential that is not allowed here.
    Forbidden { detail: String },
    /// 503 with `Retry-After`: the check could not be made (JWKS or authorization server
    /// down); the request is not forwarded.
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated { .. } => 401,
            Refusal::Forbidden { .. } => 403,
            Refusal::Unavailable { .. } => 503,
        }
    }

    /// The `error` field of the JSON body.
    pub fn error(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::Unavailable { .. } => "authorization_unavailable",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Refusal::Unauthenticated { detail, .. }
            | Refusal::Forbidden { detail }
            | Refusal::Unavailable { detail, .. } => detail,
        }
    }

    /// The detail and `Retry-After` of a 503; panics on another refusal.
    #[cfg(test)]
    pub(crate) fn expect_unavailable(&self) -> (&str, Duration) {
        match self {
            Refusal::Unavailable {
                detail,
                retry_after,
            } => (detail, *retry_after),
            other => panic!("not a 503: {other:?}"),
        }
    }

    fn forbidden(detail: impl Into<String>) -> Refusal {
        Refusal::Forbidden {
            detail: detail.into(),
        }
    }

    fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Refusal {
        Refusal::Unavailable {
            detail: detail.into(),
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }
}

/// `allowed`, `unauthenticated`, `forbidden` or `unavailable`: the `outcome` label of
/// `tollgate_inbound_auth_total{route,outcome}`.
pub fn outcome_label(result: &Result<Identity, Refusal>) -> &'static str {
    match result {
        Ok(_) => "allowed",
        Err(Refusal::Unauthenticated { .. }) => "unauthenticated",
        Err(Refusal::Forbidden { .. }) => "forbidden",
        Err(Refusal::Unavailable { .. }) => "unavailable",
    }
}

/// The checks could not be built (a key that does not parse, an HTTP client that cannot be
/// made). Config validation catches these first; this is the last line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inbound {check}: {reason}")]
pub struct InboundBuildError {
    pub check: &'static str,
    pub reason: String,
}

impl Inbound {
    /// Compiles the checks. `control` runs every JWKS and authorization call; when a JWKS is
    /// configured its first fetch starts at once on `control`.
    pub fn build(
        settings: &InboundSettings,
        control: tokio::runtime::Handle,
    ) -> Result<Inbound, InboundBuildError> {
        let api_keys = settings.api_keys.as_ref().map(api_key::ApiKeyCheck::new);
        let jwt = settings
            .jwt
            .as_ref()
            .map(|jwt| jwt::JwtCheck::build(jwt, control.clone()))
            .transpose()?;
        let authorize = settings
            .authorize
            .as_ref()
            .map(|authorize| authorize::AuthorizeCheck::build(authorize, control.clone()))
            .transpose()?;
        let identity_from_me = settings
            .authorize
            .as_ref()
            .is_some_and(|authorize| authorize.identity_from_me);

        let mut credential_headers: Vec<HeaderName> = Vec::new();
        let sources = [
            settings.api_keys.as_ref().map(|a| a.header.clone()),
            settings.jwt.as_ref().map(|j| j.from.header_name()),
            settings.authorize.as_ref().map(|a| a.from.header_name()),
        ];
        for name in sources.into_iter().flatten() {
            if !credential_headers.contains(&name) {
                credential_headers.push(name);
            }
        }
        let mut strip: Vec<HeaderName> = Vec::new();
        for identity in &settings.identity_headers {
            if !strip.contains(&identity.header) {
                strip.push(identity.header.clone());
            }
        }
        if !settings.forward_caller_credential {
            for name in &credential_headers {
                if !strip.contains(name) {
                    strip.push(name.clone());
                }
            }
        }
        Ok(Inbound {
            client_cert: settings.client_cert,
            api_keys,
            jwt,
            authorize,
            identity: settings.identity_headers.clone(),
            identity_from_me,
            strip,
            credential_headers,
            keep_caller_token: false,
        })
    }

    /// The route's provider mints a token per caller: keep the verified token for it, and
    /// refuse a token whose `exp` has passed, without leeway (`tollgate check` makes sure
    /// such a route has a jwt or authorize check).
    pub fn keep_caller_token(&mut self) {
        self.keep_caller_token = true;
    }

    /// An expired caller token's answer, for the credential step that finds it so.
    pub fn expired(&self) -> Refusal {
        match self.token_source() {
            Some(source) => invalid(source, "invalid_token", "the token has expired"),
            None => Refusal::forbidden("the caller's token has expired"),
        }
    }

    /// Where the token a per-caller provider exchanges is read: the JWT check's source,
    /// else the Auth Engine check's.
    fn token_source(&self) -> Option<&TokenSource> {
        match (&self.jwt, &self.authorize) {
            (Some(jwt), _) => Some(jwt.source()),
            (None, Some(authorize)) => Some(authorize.source()),
            (None, None) => None,
        }
    }

    /// The verified token of a caller who passed, with its `exp` and `sub` (from the
    /// verified claims, or read from the token the Auth Engine accepted).
    fn caller_token(
        &self,
        headers: &HeaderMap,
        claims: Option<&Value>,
    ) -> Result<CallerToken, Refusal> {
        let Some(source) = self.token_source() else {
            return Err(Refusal::forbidden(
                "this route exchanges the caller's token, and no check here reads one",
            ));
        };
        let token = credential(source, headers).map_err(|p| unauthenticated(source, p))?;
        let unverified;
        let claims = match claims {
            Some(claims) => Some(claims),
            None => {
                unverified = crate::tokens::jwt_claims(token);
                unverified.as_ref()
            }
        };
        let expires_at_unix = claims.and_then(|claims| claims.get("exp")).and_then(|exp| {
            exp.as_u64().or_else(|| {
                exp.as_f64()
                    .filter(|exp| exp.is_finite() && *exp >= 0.0)
                    .map(|exp| exp.floor() as u64)
            })
        });
        if let Some(exp) = expires_at_unix {
            if crate::clock::unix_now() >= exp {
                return Err(self.expired());
            }
        }
        let subject = claims
            .and_then(|claims| claims.get("sub"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(CallerToken {
            value: crate::secret::Secret::new(token),
            expires_at_unix,
            subject,
        })
    }

    /// Decides whether the request may pass. Never panics on any input. `client_cert` is
    /// the certificate the connection's mTLS handshake verified, if any.
    ///
    /// The client certificate is checked first, then API keys, then the JWT, then the
    /// remote decision; the first refusal is the answer.
    pub async fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        client_cert: Option<&ClientCert>,
    ) -> Result<Identity, Refusal> {
        if self.client_cert && client_cert.is_none() {
            return Err(Refusal::Unauthenticated {
                detail: "a client certificate is required: connect to a listener with client_ca_file and present one".to_owned(),
                www_authenticate: format!("Certificate realm=\"{REALM}\""),
            });
        }
        if let Some(api_keys) = &self.api_keys {
            api_keys.check(headers)?;
        }
        let claims = match &self.jwt {
            Some(jwt) => Some(jwt.check(headers).await?),
            None => None,
        };
        let me = match &self.authorize {
            Some(authorize) => authorize.check(method, headers).await?,
            None => None,
        };
        let document = if self.identity_from_me {
            me.as_deref()
        } else {
            claims.as_ref()
        };
        let caller_token = if self.keep_caller_token {
            Some(self.caller_token(headers, claims.as_ref())?)
        } else {
            None
        };
        Ok(Identity {
            headers: identity_headers(document, client_cert, &self.identity),
            caller_token,
        })
    }

    /// Header names to delete from the request before forwarding, whatever the outcome:
    /// every configured identity header (anti-spoofing) and, unless
    /// `forward_caller_credential`, the header each credential came from (`Cookie` as a
    /// whole for a cookie source).
    pub fn headers_to_strip(&self) -> &[HeaderName] {
        &self.strip
    }

    /// The headers callers present their credential in; when forwarded, their values
    /// must still never be printed.
    pub fn credential_headers(&self) -> &[HeaderName] {
        &self.credential_headers
    }
}

/// The identity headers read from `document` (JWT claims or the `/me` reply) and from the
/// client certificate. A missing field, an object, or a value a header cannot carry
/// leaves its header unset.
fn identity_headers(
    document: Option<&Value>,
    client_cert: Option<&ClientCert>,
    settings: &[IdentityHeaderSetting],
) -> Vec<(HeaderName, HeaderValue)> {
    settings
        .iter()
        .filter_map(|setting| {
            let text = match &setting.source {
                IdentitySource::Field(name) => document_text(field(document?, name)?)?,
                IdentitySource::ClientCertSubject => client_cert?.subject.clone(),
                IdentitySource::ClientCertSans => client_cert?.sans_text(),
            };
            if text.is_empty()
                || text.len() > MAX_IDENTITY_VALUE_BYTES
                || text.bytes().any(|b| b < 0x20 || b == 0x7f)
            {
                tracing::debug!(header = %setting.header, "identity value cannot be a header value; not set");
                return None;
            }
            let value = HeaderValue::from_bytes(text.as_bytes()).ok()?;
            Some((setting.header.clone(), value))
        })
        .collect()
}

/// A claim or field as header text: scalars as they print, a list of them joined by `,`.
fn document_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::String(text) if !text.contains(',') => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    Value::Bool(flag) => Some(flag.to_string()),
                    _ => None,
                })
                .collect();
            parts?.join(",")
        }
        Value::Null | Value::Object(_) => return None,
    })
}

/// `name` as a top-level member, or `/a/b` as a JSON pointer.
pub(crate) fn field<'a>(document: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        document.pointer(name)
    } else {
        document.get(name)
    }
}

/// Why no credential could be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoCredential {
    /// Nothing there (or a header with another scheme): the challenge carries no error.
    Missing,
    /// Present but unusable (several copies, bad bytes, empty, too large).
    Malformed(&'static str),
}

/// The caller's credential from `source`, without its scheme.
pub(crate) fn credential<'h>(
    source: &TokenSource,
    headers: &'h HeaderMap,
) -> Result<&'h str, NoCredential> {
    let token = match source {
        TokenSource::Header { name, scheme } => {
            let mut values = headers.get_all(name).iter();
            let Some(value) = values.next() else {
                return Err(NoCredential::Missing);
            };
            if values.next().is_some() {
                return Err(NoCredential::Malformed(
                    "the credential header appears more than once",
                ));
            }
            let Ok(text) = value.to_str() else {
                return Err(NoCredential::Malformed(
                    "the credential holds bytes that are not visible ASCII",
                ));
            };
            let text = text.trim_matches([' ', '\t']);
            match scheme {
                None => text,
                Some(scheme) => {
                    let Some((given, rest)) = text.split_once([' ', '\t']) else {
                        return if text.eq_ignore_ascii_case(scheme) {
                            Err(NoCredential::Malformed(
                                "the scheme is not followed by a credential",
                            ))
                        } else {
                            Err(NoCredential::Missing)
                        };
                    };
                    if !given.eq_ignore_ascii_case(scheme) {
                        return Err(NoCredential::Missing);
                    }
                    rest.trim_start_matches([' ', '\t'])
                }
            }
        }
        TokenSource::Cookie { name } => {
            let mut found: Option<&str> = None;
            for value in headers.get_all(http::header::COOKIE) {
                let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                    continue;
                };
                for pair in text.split(';') {
                    let Some((key, value)) = pair.split_once('=') else {
                        continue;
                    };
                    if key.trim_matches([' ', '\t']) != name {
                        continue;
                    }
                    if found.is_some() {
                        return Err(NoCredential::Malformed(
                            "the credential cookie appears more than once",
                        ));
                    }
                    let value = value.trim_matches([' ', '\t']);
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    found = Some(value);
                }
            }
            found.ok_or(NoCredential::Missing)?
        }
    };
    if token.is_empty() {
        return Err(NoCredential::Malformed("the credential is empty"));
    }
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(NoCredential::Malformed("the credential is too large"));
    }
    if token.bytes().any(|b| b < 0x21 || b == 0x7f) {
        return Err(NoCredential::Malformed(
            "the credential holds spaces or control characters",
        ));
    }
    Ok(token)
}

/// The `WWW-Authenticate` challenge for a credential read from `source`; `error` is
/// `(code, description)` from RFC 6750 §3.1 (descriptions are fixed texts of ours, never
/// caller input).
pub(crate) fn challenge(source: &TokenSource, error: Option<(&str, &str)>) -> String {
    let mut text = match source {
        TokenSource::Header {
            scheme: Some(scheme),
            ..
        } => format!("{scheme} realm=\"{REALM}\""),
        TokenSource::Header { name, scheme: None } => {
            format!("Token realm=\"{REALM}\", header=\"{name}\"")
        }
        TokenSource::Cookie { name } => format!("Cookie realm=\"{REALM}\", cookie=\"{name}\""),
    };
    if let Some((code, description)) = error {
        let description: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        text.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    text
}

/// A 401 for a credential from `source` that is missing or not valid.
pub(crate) fn unauthenticated(source: &TokenSource, problem: NoCredential) -> Refusal {
    match problem {
        NoCredential::Missing => Refusal::Unauthenticated {
            detail: "no credential was sent".to_owned(),
            www_authenticate: challenge(source, None),
        },
        NoCredential::Malformed(detail) => invalid(source, "invalid_request", detail),
    }
}

/// A 401 with an RFC 6750 error code and our fixed description.
pub(crate) fn invalid(source: &TokenSource, code: &str, detail: &str) -> Refusal {
    Refusal::Unauthenticated {
        detail: detail.to_owned(),
        www_authenticate: challenge(source, Some((code, detail))),
    }
}

#[cfg(test)]
mod tests;
