//! A route's `inbound:` section: who may pass before tollgate forwards (JWT verification,
//! a remote decision by the Auth Engine, API keys), and the identity headers set for the
//! upstream. Validation: the raw types (`raw/inbound.rs`) in, the validated model
//! (`model/inbound.rs`) out.
//!
//! When several checks are configured, **all** must pass (API keys first, then the JWT,
//! then the remote decision). Identity headers are read from the `/me` reply when
//! `authorize.identity_from_me` is set, else from the JWT claims; a value starting with `/`
//! is a JSON pointer, anything else a top-level name.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use sha2::{Digest, Sha256};

use super::error::{join, Errors};
use super::providers::{http_url, tls_settings};
use super::raw::{RawApiKeys, RawAuthorize, RawInbound, RawJwt, RawOneOrMany, RawTokenSource};
use crate::keys::PublicKey;

/// The validated model (`model/inbound.rs`), also named here, where the inbound checks
/// have always imported it from.
pub use super::model::{
    ApiKeySettings, AuthorizeAction, AuthorizeSettings, IdentityHeaderSetting, InboundSettings,
    JwksSettings, JwtKeySettings, JwtSettings, TokenSource,
};

/// JWKS cached this long unless `jwks_refresh` says otherwise.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the JWKS at most this often unless `jwks_min_refetch` says
/// otherwise.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp` and `nbf` unless `leeway` says otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Whole-request deadline of a JWKS, `/user/authorize` or `/me` call.
pub const DEFAULT_INBOUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Authorization decisions are cached this long unless `cache_ttl` says otherwise.
pub const DEFAULT_DECISION_TTL: Duration = Duration::from_secs(30);
const MAX_LEEWAY: Duration = Duration::from_secs(3600);
const MAX_DECISION_TTL: Duration = Duration::from_secs(3600);
/// RFC 7518 §3.2: an HMAC key at least as long as the hash output (256 bits for HS256).
const MIN_HMAC_SECRET_BYTES: usize = 32;
const MIN_API_KEY_CHARS: usize = 16;
const ALGORITHM_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";
/// Headers that frame the message or the connection; an identity header must not be one.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "cookie",
];

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

/// Validates a route's `inbound:` section found at `path` (`routes[0].inbound`).
pub(crate) fn validate(
    raw: RawInbound,
    path: &str,
    errors: &mut Errors,
) -> Option<InboundSettings> {
    if raw.jwt.is_none() && raw.authorize.is_none() && raw.api_keys.is_none() {
        errors.push(
            path,
            "no check configured: give at least one of jwt, authorize, api_keys",
        );
        return None;
    }
    let jwt_given = raw.jwt.is_some();
    let me_given = raw
        .authorize
        .as_ref()
        .is_some_and(|authorize| authorize.identity_from_me == Some(true));
    let mut ok = true;
    let jwt = raw.jwt.and_then(|raw| {
        let jwt = validate_jwt(raw, &join(path, "jwt"), errors);
        ok &= jwt.is_some();
        jwt
    });
    let authorize = raw.authorize.and_then(|raw| {
        let authorize = validate_authorize(raw, &join(path, "authorize"), errors);
        ok &= authorize.is_some();
        authorize
    });
    let api_keys = raw.api_keys.and_then(|raw| {
        let api_keys = validate_api_keys(raw, &join(path, "api_keys"), errors);
        ok &= api_keys.is_some();
        api_keys
    });
    let identity_path = join(path, "identity_headers");
    let identity_headers = validate_identity(
        raw.identity_headers.unwrap_or_default(),
        &identity_path,
        errors,
    );
    if let Some(identity_headers) = &identity_headers {
        if !identity_headers.is_empty() && !jwt_given && !me_given {
            errors.push(
                &identity_path,
                "identity headers are read from JWT claims or from /me: configure jwt, or authorize with identity_from_me: true",
            );
            ok = false;
        }
        let mut sources: Vec<HeaderName> = Vec::new();
        sources.extend(jwt.as_ref().map(|jwt| jwt.from.header_name()));
        sources.extend(authorize.as_ref().map(|a| a.from.header_name()));
        sources.extend(api_keys.as_ref().map(|keys| keys.header.clone()));
        for identity in identity_headers {
            if sources.contains(&identity.header) {
                errors.push(
                    join(&identity_path, identity.header.as_str()),
                    "is also where the caller's credential is read; pick another header",
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    Some(InboundSettings {
        jwt,
        authorize,
        api_keys,
        identity_headers: identity_headers?,
        forward_caller_credential: raw.forward_caller_credential.unwrap_or(false),
    })
}

fn validate_source(
    raw: Option<RawTokenSource>,
    default: TokenSource,
    path: &str,
    errors: &mut Errors,
) -> Option<TokenSource> {
    let Some(raw) = raw else {
        return Some(default);
    };
    match (raw.header, raw.cookie) {
        (Some(header), None) => {
            let name = header_name(&header, &join(path, "header"), errors);
            let scheme = match raw.scheme {
                Some(scheme) if !is_token(&scheme) => {
                    errors.push(
                        join(path, "scheme"),
                        format!("`{scheme}` is not an auth scheme like Bearer"),
                    );
                    return None;
                }
                other => other,
            };
            Some(TokenSource::Header {
                name: name?,
                scheme,
            })
        }
        (None, Some(cookie)) => {
            if raw.scheme.is_some() {
                errors.push(join(path, "scheme"), "only a header has a scheme");
                return None;
            }
            if !is_token(&cookie) {
                errors.push(
                    join(path, "cookie"),
                    format!("`{cookie}` is not a valid cookie name"),
                );
                return None;
            }
            Some(TokenSource::Cookie { name: cookie })
        }
        (Some(_), Some(_)) => {
            errors.push(path, "give header or cookie, not both");
            None
        }
        (None, None) => {
            errors.push(path, "give header (with an optional scheme) or cookie");
            None
        }
    }
}

fn validate_jwt(mut raw: RawJwt, path: &str, errors: &mut Errors) -> Option<JwtSettings> {
    let mut ok = true;
    let from = validate_source(
        raw.from.take(),
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            scheme: Some("Bearer".to_owned()),
        },
        &join(path, "from"),
        errors,
    );
    let algorithms = match raw.algorithms.take() {
        None => {
            errors.push(
                join(path, "algorithms"),
                "missing (list the algorithms the issuer signs with, like [RS256])",
            );
            None
        }
        Some(names) if names.is_empty() => {
            errors.push(join(path, "algorithms"), "needs at least one algorithm");
            None
        }
        Some(names) => {
            let mut algorithms = Vec::new();
            for (index, name) in names.iter().enumerate() {
                let at = join(path, &format!("algorithms[{index}]"));
                match parse_algorithm(name) {
                    Ok(algorithm) if !algorithms.contains(&algorithm) => algorithms.push(algorithm),
                    Ok(_) => {
                        errors.push(at, format!("`{name}` is listed twice"));
                        ok = false;
                    }
                    Err(message) => {
                        errors.push(at, message);
                        ok = false;
                    }
                }
            }
            ok.then_some(algorithms)
        }
    };
    let key = jwt_key(&mut raw, algorithms.as_deref(), path, errors);
    let issuer = raw.issuer.map(RawOneOrMany::into_vec).unwrap_or_default();
    for (index, issuer) in issuer.iter().enumerate() {
        if issuer.is_empty() {
            errors.push(join(path, &format!("issuer[{index}]")), "is empty");
        }
    }
    let audience = raw.audience.map(RawOneOrMany::into_vec).unwrap_or_default();
    for (index, audience) in audience.iter().enumerate() {
        if audience.is_empty() {
            errors.push(join(path, &format!("audience[{index}]")), "is empty");
        }
    }
    let leeway = raw.leeway.map_or(DEFAULT_LEEWAY, |d| d.0);
    if leeway > MAX_LEEWAY {
        errors.push(
            join(path, "leeway"),
            format!("must be at most {}s", MAX_LEEWAY.as_secs()),
        );
    }
    let mut required_claims = Vec::new();
    for (name, value) in raw.required_claims.unwrap_or_default() {
        let at = join(&join(path, "required_claims"), &name);
        if let Err(message) = field_reference(&name) {
            errors.push(&at, message);
            continue;
        }
        match value {
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_) => required_claims.push((name, value)),
            _ => errors.push(at, "must be a string, a number or true/false"),
        }
    }
    let required_scopes = raw.required_scopes.unwrap_or_default();
    for (index, scope) in required_scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            errors.push(
                join(path, &format!("required_scopes[{index}]")),
                "a scope is one non-empty word without spaces",
            );
        }
    }
    Some(JwtSettings {
        from: from?,
        algorithms: algorithms?,
        key: key?,
        issuer,
        audience,
        leeway,
        required_claims,
        required_scopes,
    })
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` is never accepted: unsigned tokens prove nothing".to_owned());
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{name}` (expected one of {ALGORITHM_NAMES})"))
}

/// Exactly one key source, and one that fits every listed algorithm.
fn jwt_key(
    raw: &mut RawJwt,
    algorithms: Option<&[Algorithm]>,
    path: &str,
    errors: &mut Errors,
) -> Option<JwtKeySettings> {
    let given = [
        raw.secret.is_some(),
        raw.public_key_file.is_some(),
        raw.jwks_url.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    let hmac_listed =
        algorithms.is_some_and(|a| a.iter().any(|a| a.family() == AlgorithmFamily::Hmac));
    let public_listed =
        algorithms.is_some_and(|a| a.iter().any(|a| a.family() != AlgorithmFamily::Hmac));
    if raw.jwks_url.is_none() {
        for (key, set) in [
            ("jwks_refresh", raw.jwks_refresh.is_some()),
            ("jwks_min_refetch", raw.jwks_min_refetch.is_some()),
            ("jwks_timeout", raw.jwks_timeout.is_some()),
            ("jwks_tls", raw.jwks_tls.is_some()),
        ] {
            if set {
                errors.push(join(path, key), "only applies with jwks_url");
            }
        }
    }
    if given == 0 {
        if hmac_listed {
            errors.push(
                join(path, "secret"),
                "missing (HS algorithms verify with a shared secret)",
            );
        } else {
            errors.push(
                path,
                "no key: give public_key_file or jwks_url (or secret for HS algorithms)",
            );
        }
        return None;
    }
    if given > 1 {
        errors.push(
            path,
            "give exactly one of secret, public_key_file, jwks_url (the key decides the algorithms)",
        );
        return None;
    }
    if let Some(secret) = &raw.secret {
        let at = join(path, "secret");
        if public_listed {
            errors.push(
                join(path, "algorithms"),
                "a secret verifies HS256/HS384/HS512 only; RS, PS, ES and EdDSA need public_key_file or jwks_url",
            );
            return None;
        }
        if secret.is_empty() {
            errors.push(at, "is empty");
            return None;
        }
        if secret.expose().len() < MIN_HMAC_SECRET_BYTES {
            errors.push(
                at,
                format!("is shorter than {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 §3.2 asks for at least the hash size)"),
            );
            return None;
        }
        return Some(JwtKeySettings::Secret(secret.clone()));
    }
    if hmac_listed {
        errors.push(
            join(path, "algorithms"),
            "HS algorithms need `secret`; a public key never verifies an HMAC token",
        );
        return None;
    }
    if let Some(file) = &raw.public_key_file {
        let at = join(path, "public_key_file");
        let pem = match std::fs::read(file) {
            Ok(pem) => pem,
            Err(error) => {
                errors.push(at, format!("cannot read {file}: {error}"));
                return None;
            }
        };
        let key = match PublicKey::from_pem(&pem) {
            Ok(key) => key,
            Err(message) => {
                errors.push(at, format!("{file}: {message}"));
                return None;
            }
        };
        if let Some(algorithms) = algorithms {
            let unusable: Vec<String> = algorithms
                .iter()
                .filter(|a| !key.algorithms().contains(a))
                .map(|a| format!("{a:?}"))
                .collect();
            if !unusable.is_empty() {
                errors.push(
                    join(path, "algorithms"),
                    format!(
                        "{} cannot be verified with the {} key in {file}",
                        unusable.join(", "),
                        key.describe()
                    ),
                );
                return None;
            }
        }
        return Some(JwtKeySettings::PublicKeyPem {
            path: PathBuf::from(file),
            key,
        });
    }
    let url_text = raw.jwks_url.as_deref().unwrap_or_default();
    let url = http_url(url_text, &join(path, "jwks_url"), errors);
    let refresh = raw.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.0);
    let min_refetch = raw
        .jwks_min_refetch
        .map_or(DEFAULT_JWKS_MIN_REFETCH, |d| d.0);
    let timeout = raw.jwks_timeout.map_or(DEFAULT_INBOUND_TIMEOUT, |d| d.0);
    let mut ok = true;
    for (key, value) in [
        ("jwks_refresh", refresh),
        ("jwks_min_refetch", min_refetch),
        ("jwks_timeout", timeout),
    ] {
        if value.is_zero() {
            errors.push(join(path, key), "must be longer than 0s");
            ok = false;
        }
    }
    if min_refetch > refresh && ok {
        errors.push(
            join(path, "jwks_min_refetch"),
            "must not be longer than jwks_refresh",
        );
        ok = false;
    }
    let tls = tls_settings(
        raw.jwks_tls.take().unwrap_or_default(),
        &join(path, "jwks_tls"),
        errors,
    );
    if !ok {
        return None;
    }
    Some(JwtKeySettings::Jwks(JwksSettings {
        url: url?,
        refresh,
        min_refetch,
        timeout,
        tls,
    }))
}

fn validate_authorize(
    raw: RawAuthorize,
    path: &str,
    errors: &mut Errors,
) -> Option<AuthorizeSettings> {
    let url = http_url(&raw.url, &join(path, "url"), errors);
    if let Some(url) = &url {
        if url.query().is_some() || url.fragment().is_some() {
            errors.push(join(path, "url"), "must not have a query or fragment");
        }
    }
    let from = validate_source(
        raw.from,
        TokenSource::Header {
            name: HeaderName::from_static("x-auth"),
            scheme: None,
        },
        &join(path, "from"),
        errors,
    );
    let action = match (raw.action, raw.action_by_method) {
        (Some(action), None) => {
            if action.is_empty() {
                errors.push(join(path, "action"), "is empty");
                None
            } else {
                Some(AuthorizeAction::Fixed(action))
            }
        }
        (None, Some(map)) => {
            let map_path = join(path, "action_by_method");
            if map.is_empty() {
                errors.push(&map_path, "needs at least one method");
            }
            let mut seen = HashSet::new();
            let mut pairs = Vec::new();
            let mut ok = true;
            for (method, action) in map {
                let at = join(&map_path, &method);
                let upper = method.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(parsed) if is_token(&upper) => {
                        if !seen.insert(parsed.clone()) {
                            errors.push(&at, "method listed twice");
                            ok = false;
                        }
                        if action.is_empty() {
                            errors.push(&at, "action is empty");
                            ok = false;
                        }
                        pairs.push((parsed, action));
                    }
                    _ => {
                        errors.push(at, format!("`{method}` is not an HTTP method"));
                        ok = false;
                    }
                }
            }
            (ok && !pairs.is_empty()).then_some(AuthorizeAction::ByMethod(pairs))
        }
        (Some(_), Some(_)) => {
            errors.push(path, "give action or action_by_method, not both");
            None
        }
        (None, None) => {
            errors.push(
                join(path, "action"),
                "missing (give action, or action_by_method)",
            );
            None
        }
    };
    if raw.resource.is_empty() {
        errors.push(join(path, "resource"), "is empty");
    }
    if raw.scope.is_empty() {
        errors.push(join(path, "scope"), "is empty");
    }
    let cache_ttl = raw.cache_ttl.map_or(DEFAULT_DECISION_TTL, |d| d.0);
    if cache_ttl > MAX_DECISION_TTL {
        errors.push(
            join(path, "cache_ttl"),
            format!("must be at most {}s", MAX_DECISION_TTL.as_secs()),
        );
    }
    let timeout = raw.timeout.map_or(DEFAULT_INBOUND_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.push(join(path, "timeout"), "must be longer than 0s");
    }
    let tls = tls_settings(raw.tls.unwrap_or_default(), &join(path, "tls"), errors);
    if raw.resource.is_empty() || raw.scope.is_empty() || timeout.is_zero() {
        return None;
    }
    Some(AuthorizeSettings {
        url: url?,
        from: from?,
        action: action?,
        resource: raw.resource,
        scope: raw.scope,
        org_id: raw.org_id,
        cache_ttl,
        fail_open: raw.fail_open.unwrap_or(false),
        identity_from_me: raw.identity_from_me.unwrap_or(false),
        timeout,
        tls,
    })
}

fn validate_api_keys(raw: RawApiKeys, path: &str, errors: &mut Errors) -> Option<ApiKeySettings> {
    let header_text = raw.header.unwrap_or_else(|| "X-Api-Key".to_owned());
    let header = header_name(&header_text, &join(path, "header"), errors);
    if raw.keys.is_empty() {
        errors.push(join(path, "keys"), "needs at least one key");
        return None;
    }
    let mut key_hashes: Vec<[u8; 32]> = Vec::with_capacity(raw.keys.len());
    let mut ok = true;
    for (index, key) in raw.keys.iter().enumerate() {
        let at = join(path, &format!("keys[{index}]"));
        let value = key.expose();
        if value.chars().count() < MIN_API_KEY_CHARS {
            errors.push(
                at,
                format!("is shorter than {MIN_API_KEY_CHARS} characters (too easy to guess)"),
            );
            ok = false;
            continue;
        }
        if http::HeaderValue::from_str(value).is_err() || value.trim() != value {
            errors.push(
                at,
                "holds characters a header value cannot carry (or surrounding spaces)",
            );
            ok = false;
            continue;
        }
        let hash: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if key_hashes.contains(&hash) {
            errors.push(at, "the same key is listed twice");
            ok = false;
            continue;
        }
        key_hashes.push(hash);
    }
    if !ok {
        return None;
    }
    Some(ApiKeySettings {
        header: header?,
        key_hashes,
    })
}

fn validate_identity(
    raw: BTreeMap<String, String>,
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<IdentityHeaderSetting>> {
    let mut headers: Vec<IdentityHeaderSetting> = Vec::new();
    let mut ok = true;
    for (name, field) in raw {
        let at = join(path, &name);
        let Some(header) = header_name(&name, &at, errors) else {
            ok = false;
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            errors.push(&at, format!("`{name}` cannot be an identity header"));
            ok = false;
            continue;
        }
        if headers.iter().any(|h| h.header == header) {
            errors.push(&at, "the same header is listed twice (names ignore case)");
            ok = false;
            continue;
        }
        if let Err(message) = field_reference(&field) {
            errors.push(&at, message);
            ok = false;
            continue;
        }
        headers.push(IdentityHeaderSetting { header, field });
    }
    ok.then_some(headers)
}

/// A top-level name (`sub`) or an RFC 6901 JSON pointer (`/profile/email`).
fn field_reference(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the claim or field name is empty".to_owned());
    }
    if let Some(pointer) = text.strip_prefix('/') {
        let mut chars = pointer.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "`{text}` is not a JSON pointer (`~` must be followed by 0 or 1)"
                ));
            }
        }
    }
    Ok(())
}

fn header_name(text: &str, path: &str, errors: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.push(path, format!("`{text}` is not a valid header name"));
            None
        }
    }
}

/// An RFC 9110 token (header names, auth schemes, cookie names, methods).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Types and validates an `inbound:` section written as YAML (for tests).
#[cfg(test)]
pub(crate) fn from_yaml(text: &str) -> Result<InboundSettings, super::ConfigErrors> {
    let mut errors = Errors::default();
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|error| {
        super::ConfigErrors(vec![super::ConfigError::new("", error.to_string())])
    })?;
    let path = "routes[0].inbound";
    let settings = super::typed::<RawInbound>(value, path, &mut errors)
        .and_then(|raw| validate(raw, path, &mut errors));
    match settings {
        Some(settings) => errors.into_result(settings),
        None => Err(errors.into_errors()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str) -> String {
        format!("{}/src/inbound/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// The errors as `path: message` lines.
    fn errors_of(yaml: &str) -> Vec<String> {
        match from_yaml(yaml) {
            Ok(settings) => panic!("accepted: {settings:?}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_error(yaml: &str, expected: &str) {
        let errors = errors_of(yaml);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "no error starting with `{expected}` in {errors:#?}"
        );
    }

    const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

    #[test]
    fn the_documented_example_validates() {
        let yaml = format!(
            r#"
jwt:
  from: {{ header: Authorization, scheme: Bearer }}
  algorithms: [RS256, PS256]
  jwks_url: https://idp.example/.well-known/jwks.json
  jwks_refresh: 5m
  jwks_min_refetch: 10s
  issuer: https://idp.example/
  audience: [reports]
  leeway: 30s
  required_claims: {{ tenant: acme, /org/level: 3 }}
  required_scopes: [reports.read]
authorize:
  url: http://auth-engine:8000/api/v1
  from: {{ header: X-Auth }}
  action_by_method: {{ GET: read, post: write, DELETE: delete }}
  resource: reports
  scope: org
  org_id: 4
  cache_ttl: 30s
  fail_open: false
  identity_from_me: true
api_keys:
  header: X-Api-Key
  keys: ["{SECRET}", "another-key-0123456789"]
identity_headers:
  X-Auth-Subject: sub
  X-Auth-Email: /profile/email
"#
        );
        let settings = from_yaml(&yaml).unwrap();
        let jwt = settings.jwt.unwrap();
        assert_eq!(jwt.algorithms, [Algorithm::RS256, Algorithm::PS256]);
        assert_eq!(
            jwt.from,
            TokenSource::Header {
                name: http::header::AUTHORIZATION,
                scheme: Some("Bearer".into())
            }
        );
        let JwtKeySettings::Jwks(jwks) = &jwt.key else {
            panic!("{:?}", jwt.key);
        };
        assert_eq!(jwks.refresh, Duration::from_secs(300));
        assert_eq!(jwks.min_refetch, Duration::from_secs(10));
        assert_eq!(jwks.timeout, DEFAULT_INBOUND_TIMEOUT);
        assert_eq!(jwt.issuer, ["https://idp.example/"]);
        assert_eq!(jwt.audience, ["reports"]);
        assert_eq!(jwt.leeway, Duration::from_secs(30));
        assert_eq!(
            jwt.required_claims,
            [
                ("/org/level".to_owned(), serde_json::json!(3)),
                ("tenant".to_owned(), serde_json::json!("acme"))
            ]
        );
        let authorize = settings.authorize.unwrap();
        assert_eq!(
            authorize.action,
            AuthorizeAction::ByMethod(vec![
                (Method::DELETE, "delete".into()),
                (Method::GET, "read".into()),
                (Method::POST, "write".into()),
            ])
        );
        assert_eq!(authorize.org_id, Some(4));
        assert!(authorize.identity_from_me && !authorize.fail_open);
        let api_keys = settings.api_keys.unwrap();
        assert_eq!(api_keys.key_hashes.len(), 2);
        let debug = format!("{api_keys:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert_eq!(debug, "ApiKeySettings { header: \"x-api-key\", keys: 2 }");
        assert_eq!(settings.identity_headers.len(), 2);
        assert!(!settings.forward_caller_credential);
    }

    #[test]
    fn defaults() {
        let settings = from_yaml(&format!(
            "jwt: {{ algorithms: [HS256], secret: \"{SECRET}\" }}"
        ))
        .unwrap();
        let jwt = settings.jwt.unwrap();
        assert_eq!(
            jwt.from,
            TokenSource::Header {
                name: http::header::AUTHORIZATION,
                scheme: Some("Bearer".into())
            }
        );
        assert_eq!(jwt.leeway, DEFAULT_LEEWAY);
        assert!(jwt.issuer.is_empty() && jwt.audience.is_empty());
        let settings = from_yaml(
            "authorize: { url: 'http://engine/api/v1', action: read, resource: r, scope: s }",
        )
        .unwrap();
        let authorize = settings.authorize.unwrap();
        assert_eq!(
            authorize.from,
            TokenSource::Header {
                name: HeaderName::from_static("x-auth"),
                scheme: None
            }
        );
        assert_eq!(authorize.cache_ttl, DEFAULT_DECISION_TTL);
        assert_eq!(authorize.timeout, DEFAULT_INBOUND_TIMEOUT);
        assert!(!authorize.fail_open && !authorize.identity_from_me);
        let settings = from_yaml("api_keys: { keys: ['0123456789abcdef'] }").unwrap();
        assert_eq!(settings.api_keys.unwrap().header, "x-api-key");
        let pem = from_yaml(&format!(
            "jwt: {{ algorithms: [ES256], public_key_file: {} }}",
            key_file("ec256_public.pem")
        ))
        .unwrap();
        assert!(matches!(
            pem.jwt.unwrap().key,
            JwtKeySettings::PublicKeyPem { .. }
        ));
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        assert_error(
            "jwt: { algorithms: [HS256], secrett: x }",
            "routes[0].inbound.jwt.secrett: unknown field `secrett`",
        );
        assert_error("bogus: 1", "routes[0].inbound.bogus: unknown field `bogus`");
        assert_error(
            "authorize: { url: 'http://e', action: a, resource: r, scope: s, cache: 1s }",
            "routes[0].inbound.authorize.cache: unknown field `cache`",
        );
        assert_error(
            "jwt: { from: { header: X, shceme: Bearer }, algorithms: [HS256] }",
            "routes[0].inbound.jwt.from.shceme: unknown field `shceme`",
        );
        assert_error(
            "api_keys: { keys: ['0123456789abcdef'], hash: sha1 }",
            "routes[0].inbound.api_keys.hash: unknown field `hash`",
        );
        assert_error(
            "jwt: { algorithms: [HS256], leeway: 30 }",
            "routes[0].inbound.jwt.leeway: invalid type",
        );
    }

    #[test]
    fn at_least_one_check() {
        assert_eq!(
            errors_of("forward_caller_credential: true"),
            ["routes[0].inbound: no check configured: give at least one of jwt, authorize, api_keys"]
        );
        assert_error(
            "identity_headers: { X-User: sub }",
            "routes[0].inbound: no check configured",
        );
    }

    #[test]
    fn algorithms_and_keys_must_fit() {
        assert_eq!(
            errors_of("jwt: { algorithms: [HS256] }"),
            ["routes[0].inbound.jwt.secret: missing (HS algorithms verify with a shared secret)"]
        );
        assert_eq!(
            errors_of("jwt: { algorithms: [RS256] }"),
            ["routes[0].inbound.jwt: no key: give public_key_file or jwks_url (or secret for HS algorithms)"]
        );
        assert_error(
            "jwt: { secret: 'an-hmac-secret-of-at-least-32-bytes!!' }",
            "routes[0].inbound.jwt.algorithms: missing",
        );
        assert_error(
            "jwt: { algorithms: [], secret: x }",
            "routes[0].inbound.jwt.algorithms: needs at least one algorithm",
        );
        for none in ["none", "None", "NONE"] {
            assert_error(
                &format!("jwt: {{ algorithms: [RS256, {none}], jwks_url: 'https://idp/jwks' }}"),
                "routes[0].inbound.jwt.algorithms[1]: `none` is never accepted",
            );
        }
        assert_error(
            "jwt: { algorithms: [RS257], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.algorithms[0]: unknown algorithm `RS257`",
        );
        assert_error(
            "jwt: { algorithms: [HS256], secret: short }",
            "routes[0].inbound.jwt.secret: is shorter than 32 bytes",
        );
        assert_error(
            &format!("jwt: {{ algorithms: [RS256], secret: '{SECRET}' }}"),
            "routes[0].inbound.jwt.algorithms: a secret verifies HS256/HS384/HS512 only",
        );
        assert_error(
            "jwt: { algorithms: [HS256, RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.algorithms: HS algorithms need `secret`",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [HS256], secret: '{SECRET}', jwks_url: 'https://idp/jwks' }}"
            ),
            "routes[0].inbound.jwt: give exactly one of secret, public_key_file, jwks_url",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [ES256], public_key_file: {} }}",
                key_file("rsa1_public.pem")
            ),
            "routes[0].inbound.jwt.algorithms: ES256 cannot be verified with the RSA 2048-bit key",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [ES384], public_key_file: {} }}",
                key_file("ec256_public.pem")
            ),
            "routes[0].inbound.jwt.algorithms: ES384 cannot be verified with the EC P-256 key",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
                key_file("rsa1_private.pem")
            ),
            "routes[0].inbound.jwt.public_key_file: ",
        );
        let errors = errors_of(&format!(
            "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
            key_file("rsa1_private.pem")
        ));
        assert!(errors[0].contains("holds a private key"), "{errors:?}");
        assert_error(
            &format!(
                "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
                key_file("rsa_weak_public.pem")
            ),
            "routes[0].inbound.jwt.public_key_file: ",
        );
        assert_error(
            "jwt: { algorithms: [RS256], public_key_file: /nonexistent/key.pem }",
            "routes[0].inbound.jwt.public_key_file: cannot read /nonexistent/key.pem",
        );
        assert_error(
            &format!("jwt: {{ algorithms: [HS256], secret: '{SECRET}', jwks_refresh: 1m }}"),
            "routes[0].inbound.jwt.jwks_refresh: only applies with jwks_url",
        );
    }

    #[test]
    fn jwks_settings_are_checked() {
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'ftp://idp/jwks' }",
            "routes[0].inbound.jwt.jwks_url: `ftp://idp/jwks` is not an http:// or https:// URL",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'not a url' }",
            "routes[0].inbound.jwt.jwks_url: `not a url` is not a valid URL",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', jwks_refresh: 10s, jwks_min_refetch: 1m }",
            "routes[0].inbound.jwt.jwks_min_refetch: must not be longer than jwks_refresh",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', jwks_timeout: 0s }",
            "routes[0].inbound.jwt.jwks_timeout: must be longer than 0s",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', leeway: 2h }",
            "routes[0].inbound.jwt.leeway: must be at most 3600s",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', required_claims: { roles: [a] } }",
            "routes[0].inbound.jwt.required_claims.roles: must be a string, a number or true/false",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', required_scopes: ['a b'] }",
            "routes[0].inbound.jwt.required_scopes[0]: a scope is one non-empty word",
        );
        assert_error(
            "jwt: { from: { header: Authorization, cookie: s }, algorithms: [RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.from: give header or cookie, not both",
        );
        assert_error(
            "jwt: { from: { header: 'Bad Header' }, algorithms: [RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.from.header: `Bad Header` is not a valid header name",
        );
    }

    #[test]
    fn authorize_settings_are_checked() {
        assert_error(
            "authorize: { url: 'engine:8000', action: read, resource: r, scope: s }",
            "routes[0].inbound.authorize.url: ",
        );
        assert_error(
            "authorize: { url: 'http://user:pw@engine', action: read, resource: r, scope: s }",
            "routes[0].inbound.authorize.url: must not carry credentials",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, action_by_method: { GET: read }, resource: r, scope: s }",
            "routes[0].inbound.authorize: give action or action_by_method, not both",
        );
        assert_error(
            "authorize: { url: 'http://engine', resource: r, scope: s }",
            "routes[0].inbound.authorize.action: missing",
        );
        assert_error(
            "authorize: { url: 'http://engine', action_by_method: { 'GE T': read }, resource: r, scope: s }",
            "routes[0].inbound.authorize.action_by_method.GE T: `GE T` is not an HTTP method",
        );
        assert_error(
            "authorize: { url: 'http://engine', action_by_method: { get: read, GET: write }, resource: r, scope: s }",
            "routes[0].inbound.authorize.action_by_method.get: method listed twice",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, resource: '', scope: s }",
            "routes[0].inbound.authorize.resource: is empty",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, resource: r, scope: s, cache_ttl: 2h }",
            "routes[0].inbound.authorize.cache_ttl: must be at most 3600s",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, scope: s }",
            "routes[0].inbound.authorize: missing field `resource`",
        );
    }

    #[test]
    fn api_keys_are_checked_and_hashed() {
        assert_error(
            "api_keys: { keys: [] }",
            "routes[0].inbound.api_keys.keys: needs at least one key",
        );
        assert_error(
            "api_keys: { keys: [short] }",
            "routes[0].inbound.api_keys.keys[0]: is shorter than 16 characters",
        );
        assert_error(
            "api_keys: { keys: ['0123456789abcdef', '0123456789abcdef'] }",
            "routes[0].inbound.api_keys.keys[1]: the same key is listed twice",
        );
        assert_error(
            "api_keys: { keys: [' 0123456789abcdef'] }",
            "routes[0].inbound.api_keys.keys[0]: holds characters",
        );
        let settings = from_yaml("api_keys: { keys: ['0123456789abcdef'] }").unwrap();
        let expected: [u8; 32] = Sha256::digest(b"0123456789abcdef").into();
        assert_eq!(settings.api_keys.unwrap().key_hashes, [expected]);
    }

    #[test]
    fn identity_headers_are_checked() {
        let jwt = format!("jwt: {{ algorithms: [HS256], secret: '{SECRET}' }}\n");
        assert_error(
            "api_keys: { keys: ['0123456789abcdef'] }\nidentity_headers: { X-User: sub }",
            "routes[0].inbound.identity_headers: identity headers are read from JWT claims or from /me",
        );
        assert_error(
            "authorize: { url: 'http://e', action: a, resource: r, scope: s }\nidentity_headers: { X-User: /username }",
            "routes[0].inbound.identity_headers: identity headers are read from JWT claims or from /me",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ Host: sub }}"),
            "routes[0].inbound.identity_headers.Host: `Host` cannot be an identity header",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: sub, x-user: email }}"),
            "routes[0].inbound.identity_headers.x-user: the same header is listed twice",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: '/a~2b' }}"),
            "routes[0].inbound.identity_headers.X-User: `/a~2b` is not a JSON pointer",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: '' }}"),
            "routes[0].inbound.identity_headers.X-User: the claim or field name is empty",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ Authorization: sub }}"),
            "routes[0].inbound.identity_headers.authorization: is also where the caller's credential is read",
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let errors = errors_of(
            "jwt: { algorithms: [none] }\nauthorize: { url: 'nope', action: read, resource: r, scope: s }\napi_keys: { keys: [short] }",
        );
        assert!(errors.len() >= 3, "{errors:#?}");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("routes[0].inbound.jwt.algorithms[0]")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("routes[0].inbound.authorize.url")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("routes[0].inbound.api_keys.keys[0]")));
    }
}
