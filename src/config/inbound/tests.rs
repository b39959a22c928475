//! The whole `inbound:` section; each check's own tests sit in its file. The helpers here
//! serve them all.

use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;

use super::*;

pub(super) fn key_file(name: &str) -> String {
    format!("{}/src/inbound/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The errors as `path: message` lines.
pub(super) fn errors_of(yaml: &str) -> Vec<String> {
    match from_yaml(yaml) {
        Ok(settings) => panic!("accepted: {settings:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

pub(super) fn assert_error(yaml: &str, expected: &str) {
    let errors = errors_of(yaml);
    assert!(
        errors.iter().any(|e| e.starts_with(expected)),
        "no error starting with `{expected}` in {errors:#?}"
    );
}

pub(super) const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

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
        ["routes[0].inbound: no check configured: give at least one of client_cert, jwt, authorize, api_keys"]
    );
    assert_error(
        "identity_headers: { X-User: sub }",
        "routes[0].inbound: no check configured",
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
