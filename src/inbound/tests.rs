//! The checks together, built from YAML through config validation.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::runtime::Handle;

use super::testkit::*;
use super::*;
use crate::config::inbound::from_yaml;
use tollgate_standins::bigbucks::{BigBucksSettings, BigBucksStandIn};

const KEY_A: &str = "key-a-0123456789abcdef";

fn build(yaml: &str) -> Inbound {
    let settings = from_yaml(yaml).unwrap_or_else(|errors| panic!("{errors}"));
    Inbound::build(&settings, Handle::current()).unwrap()
}

fn hmac_yaml(extra: &str) -> String {
    format!(
        "jwt:\n  algorithms: [HS256]\n  secret: \"{HMAC_SECRET}\"\n  issuer: \"{ISSUER}\"\n  audience: {AUDIENCE}\n{extra}"
    )
}

fn names(list: &[HeaderName]) -> Vec<&str> {
    list.iter().map(HeaderName::as_str).collect()
}

/// The identity headers as (name, value) pairs, in order.
fn header_pairs(identity: &Identity) -> Vec<(&str, &str)> {
    identity
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn identity_headers_come_from_the_claims_and_spoofed_copies_are_stripped() {
    let inbound = build(&hmac_yaml(
        "identity_headers:\n  X-Auth-Subject: sub\n  X-Auth-Email: email\n  X-Auth-Team: /profile/team\n  X-Auth-Groups: groups\n  X-Auth-Missing: nothing\n  X-Auth-Object: profile\n  X-Auth-Evil: evil\n",
    ));
    let mut claims = claims();
    claims["groups"] = json!(["admins", "ops"]);
    claims["evil"] = json!("line\r\nX-Injected: yes");
    let token = mint(Algorithm::HS256, HMAC_SECRET.as_bytes(), None, &claims);
    let mut headers = bearer(&token);
    headers.insert("x-auth-subject", HeaderValue::from_static("root"));
    let identity = inbound.check(&Method::GET, &headers, None).await.unwrap();
    let got = header_pairs(&identity);
    assert_eq!(
        got,
        [
            ("x-auth-email", "alice@example.test"),
            ("x-auth-groups", "admins,ops"),
            ("x-auth-subject", "alice"),
            ("x-auth-team", "blue"),
        ]
    );
    let strip = names(inbound.headers_to_strip());
    for header in [
        "x-auth-subject",
        "x-auth-email",
        "x-auth-team",
        "x-auth-missing",
        "authorization",
    ] {
        assert!(strip.contains(&header), "{header} not in {strip:?}");
    }
}

#[tokio::test]
async fn the_credential_header_is_kept_only_when_asked() {
    let inbound = build(&hmac_yaml("forward_caller_credential: true\n"));
    assert!(names(inbound.headers_to_strip()).is_empty());
    let inbound = build(
        "jwt:\n  from: { cookie: session }\n  algorithms: [RS256]\n  public_key_file: PEM\n  issuer: x\napi_keys:\n  header: X-Api-Key\n  keys: [KEY]\n"
            .replace("PEM", &key_path("rsa1_public.pem").to_string_lossy())
            .replace("KEY", KEY_A)
            .as_str(),
    );
    assert_eq!(names(inbound.headers_to_strip()), ["x-api-key", "cookie"]);
}

#[tokio::test]
async fn several_checks_must_all_pass() {
    let inbound = build(&hmac_yaml(&format!(
        "api_keys:\n  keys: [\"{KEY_A}\"]\nidentity_headers:\n  X-Auth-Subject: sub\n"
    )));
    let token = mint(Algorithm::HS256, HMAC_SECRET.as_bytes(), None, &claims());

    let only_token = bearer(&token);
    let result = inbound.check(&Method::GET, &only_token, None).await;
    assert_eq!(outcome_label(&result), "unauthenticated");
    let Err(Refusal::Unauthenticated {
        www_authenticate, ..
    }) = result
    else {
        panic!("{result:?}");
    };
    assert!(
        www_authenticate.starts_with("ApiKey "),
        "{www_authenticate}"
    );

    let mut only_key = HeaderMap::new();
    only_key.insert("x-api-key", HeaderValue::from_static(KEY_A));
    let result = inbound.check(&Method::GET, &only_key, None).await;
    let Err(Refusal::Unauthenticated {
        www_authenticate, ..
    }) = &result
    else {
        panic!("{result:?}");
    };
    assert_eq!(www_authenticate, "Bearer realm=\"tollgate\"");

    let mut both = bearer(&token);
    both.insert("x-api-key", HeaderValue::from_static(KEY_A));
    let result = inbound.check(&Method::GET, &both, None).await;
    assert_eq!(outcome_label(&result), "allowed");
    assert_eq!(result.unwrap().headers.len(), 1);

    let debug = format!("{inbound:?}");
    assert!(!debug.contains(KEY_A), "{debug}");
    assert!(!debug.contains(HMAC_SECRET), "{debug}");
}

#[tokio::test]
async fn the_auth_engine_decides_and_me_names_the_caller() {
    let engine = BigBucksStandIn::start(BigBucksSettings::default())
        .await
        .unwrap();
    let yaml = format!(
        "authorize:\n  url: {}\n  action_by_method: {{ GET: read, POST: write }}\n  resource: reports\n  scope: org\n  identity_from_me: true\nidentity_headers:\n  X-Auth-Subject: /username\n  X-Auth-Email: /profile/email\n",
        engine.base_url()
    );
    let inbound = build(&yaml);
    let token = signin(&engine, "svc-reporting", "engine-password").await;
    let mut headers = HeaderMap::new();
    headers.insert("x-auth", HeaderValue::from_str(&token).unwrap());
    headers.insert("x-auth-email", HeaderValue::from_static("spoof@evil.test"));
    let identity = inbound.check(&Method::GET, &headers, None).await.unwrap();
    assert_eq!(
        identity.headers,
        [
            (
                HeaderName::from_static("x-auth-email"),
                HeaderValue::from_static("svc-reporting@bigbucks.example")
            ),
            (
                HeaderName::from_static("x-auth-subject"),
                HeaderValue::from_static("svc-reporting")
            ),
        ]
    );
    assert_eq!(
        names(inbound.headers_to_strip()),
        ["x-auth-email", "x-auth-subject", "x-auth"]
    );
    let result = inbound.check(&Method::POST, &headers, None).await;
    assert_eq!(outcome_label(&result), "forbidden");
    engine.set_available(false);
    let result = inbound.check(&Method::PUT, &headers, None).await;
    assert_eq!(outcome_label(&result), "forbidden", "not in the method map");
    // A fresh route (nothing cached) while the engine is down: 503.
    let result = build(&yaml).check(&Method::GET, &headers, None).await;
    assert_eq!(outcome_label(&result), "unavailable");
    assert_eq!(result.unwrap_err().status(), 503);
}

#[tokio::test]
async fn jwt_and_authorize_together() {
    // The Auth Engine's own tokens are HS256 JWTs: verify them locally, then ask.
    let engine = BigBucksStandIn::start(BigBucksSettings::default())
        .await
        .unwrap();
    let secret = String::from_utf8(tollgate_standins::jwt::DEMO_KEY.to_vec()).unwrap();
    let yaml = format!(
        "jwt:\n  from: {{ header: X-Auth }}\n  algorithms: [HS256]\n  secret: {secret}\n  issuer: {}\nauthorize:\n  url: {}\n  action: read\n  resource: reports\n  scope: org\nidentity_headers:\n  X-Auth-Subject: sub\n",
        engine.url(),
        engine.base_url()
    );
    let inbound = build(&yaml);
    let token = signin(&engine, "svc-reporting", "engine-password").await;
    let mut headers = HeaderMap::new();
    headers.insert("x-auth", HeaderValue::from_str(&token).unwrap());
    let identity = inbound.check(&Method::GET, &headers, None).await.unwrap();
    assert_eq!(identity.headers[0].1, "svc-reporting");
    assert_eq!(engine.authorize_requests(), 1);
    // A forged token is stopped by the JWT check; the engine is not asked.
    let forged = mint(
        Algorithm::HS256,
        b"not-the-engine-key-but-32-bytes-long!!",
        None,
        &json!({"sub": "svc-reporting", "iss": engine.url(), "exp": now() + 60}),
    );
    headers.insert("x-auth", HeaderValue::from_str(&forged).unwrap());
    let result = inbound.check(&Method::GET, &headers, None).await;
    assert_eq!(outcome_label(&result), "unauthenticated");
    assert_eq!(engine.authorize_requests(), 1);
}

#[test]
fn outcome_labels_and_statuses() {
    let allowed: Result<Identity, Refusal> = Ok(Identity::default());
    assert_eq!(outcome_label(&allowed), "allowed");
    let cases = [
        (
            Refusal::Unauthenticated {
                detail: "d".into(),
                www_authenticate: "Bearer".into(),
            },
            "unauthenticated",
            401,
        ),
        (Refusal::forbidden("d"), "forbidden", 403),
        (
            Refusal::unavailable("d", std::time::Duration::ZERO),
            "unavailable",
            503,
        ),
    ];
    for (refusal, label, status) in cases {
        assert_eq!(refusal.status(), status);
        assert_eq!(refusal.detail(), "d");
        if let Refusal::Unavailable { retry_after, .. } = &refusal {
            assert_eq!(*retry_after, std::time::Duration::from_secs(1));
        }
        assert_eq!(outcome_label(&Err(refusal)), label);
    }
}

#[test]
fn challenges_never_carry_quotes_from_details() {
    let source = crate::config::inbound::TokenSource::Header {
        name: HeaderName::from_static("authorization"),
        scheme: Some("Bearer".into()),
    };
    assert_eq!(
        challenge(&source, Some(("invalid_token", "a \"quoted\"\r\n text"))),
        "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"a quoted text\""
    );
}

#[tokio::test]
async fn a_client_certificate_is_required_and_names_the_caller() {
    let inbound = build(
        "client_cert: {}\nidentity_headers:\n  X-Client-Subject: client_cert.subject\n  X-Client-Sans: client_cert.sans\n",
    );
    let refusal = inbound
        .check(&Method::GET, &HeaderMap::new(), None)
        .await
        .unwrap_err();
    assert_eq!(refusal.status(), 401);
    assert!(
        refusal.detail().contains("client certificate"),
        "{refusal:?}"
    );

    let cert = ClientCert {
        subject: "CN=reporting,O=Example".into(),
        sans: vec!["DNS:reports.example".into(), "URI:spiffe://c/ns/r".into()],
    };
    let mut spoofed = HeaderMap::new();
    spoofed.insert("x-client-subject", HeaderValue::from_static("CN=admin"));
    let identity = inbound
        .check(&Method::GET, &spoofed, Some(&cert))
        .await
        .unwrap();
    let got = header_pairs(&identity);
    assert_eq!(
        got,
        [
            ("x-client-sans", "DNS:reports.example,URI:spiffe://c/ns/r"),
            ("x-client-subject", "CN=reporting,O=Example"),
        ]
    );
    assert_eq!(
        names(inbound.headers_to_strip()),
        ["x-client-sans", "x-client-subject"]
    );
}
