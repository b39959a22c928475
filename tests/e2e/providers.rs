//! End to end: each provider type and variant logs in the way the stand-in expects, and
//! its token is what the upstream receives.

use std::time::Duration;

use crate::common::*;
use tollgate_standins::bigid::{BigIdSettings, BigIdStandIn};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn, RecordedTokenRequest};

/// A ready gateway with `provider` (one block) and the route `/api/` to a new echo
/// upstream, one request through it, and the bearer token the upstream received.
async fn token_through(provider: String) -> (Gateway, EchoUpstream, String) {
    let echo = start_echo().await;
    let gateway = Gateway::start_ready(&single_route(provider, "/api/", &echo.url())).await;
    let token = upstream_token(&gateway, &echo).await;
    (gateway, echo, token)
}

/// The default OAuth2 stand-in and, through its provider `idp` with `extra` keys, the
/// token the upstream received ([`token_through`]); the gateway and echo run on until the
/// last value is dropped.
async fn oauth2_token(extra: &str) -> (OAuth2StandIn, String, (Gateway, EchoUpstream)) {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let (gateway, echo, token) = token_through(oauth2("idp", &idp.token_url(), extra)).await;
    (idp, token, (gateway, echo))
}

/// The token request's form holds each `(name, value)` of `params`.
fn assert_params(request: &RecordedTokenRequest, params: &[(&str, &str)]) {
    for (name, value) in params {
        assert_eq!(request.param(name), Some(*value), "{name}");
    }
}

/// One request through `/api/`, which reaches the upstream once; the bearer token it got.
async fn upstream_token(gateway: &Gateway, echo: &EchoUpstream) -> String {
    let before = echo.request_count();
    let token = gateway.bearer_upstream("/api/x").await;
    assert_eq!(echo.request_count(), before + 1);
    token
}

// ----- BigID ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigid_user_token_login_injects_the_system_token() {
    let bigid: BigIdStandIn = start_standin(BigIdSettings::default()).await;
    let provider = bigid_user_token("bigid", &bigid.url(), "demo-bigid-user-token", "");
    let (_gateway, echo, token) = token_through(provider).await;
    assert!(bigid.is_valid_token(&token));
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert_eq!(bigid.issued_tokens(), vec![token.clone()]);
    assert_eq!(bigid.refresh_requests(), 1);
    assert_eq!(bigid.session_requests(), 0);
    // The user token itself never goes upstream.
    assert!(!echo
        .requests()
        .iter()
        .flat_map(|r| r.headers.iter())
        .any(|(_, v)| v.contains("demo-bigid-user-token")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigid_password_login_injects_the_auth_token() {
    let bigid: BigIdStandIn = start_standin(BigIdSettings::default()).await;
    let provider = bigid_password("bigid", &bigid.url(), "bigid-admin", "bigid-password", "");
    let (_gateway, _echo, token) = token_through(provider).await;
    assert!(bigid.is_valid_token(&token));
    assert_eq!(subject(&token), "bigid-admin");
    assert_eq!(bigid.session_requests(), 1);
    assert_eq!(bigid.refresh_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigid_lifetime_comes_from_the_jwt() {
    let bigid: BigIdStandIn = start_short_lived(BigIdSettings::default()).await;
    let echo = start_echo().await;
    let refresh =
        "refresh: { before_expiry: 1s, default_ttl: 300s, min_backoff: 200ms, max_backoff: 1s }";
    let provider = bigid_user_token("bigid", &bigid.url(), "demo-bigid-user-token", refresh);
    let gateway = Gateway::start_ready(&single_route(provider, "/api/", &echo.url())).await;
    let left = gateway.seconds_to_expiry("bigid").await;
    assert!(left <= 2, "the JWT exp, not default_ttl: {left} s");
    // Within about 2.5 s the short-lived token was renewed at least once.
    let renewed = eventually(Duration::from_millis(2500), || async {
        bigid.refresh_requests() >= 2
    })
    .await;
    assert!(renewed, "{} refresh calls", bigid.refresh_requests());
    let token = upstream_token(&gateway, &echo).await;
    assert!(bigid.is_valid_token(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigid_wrong_password_is_503_without_the_password() {
    const WRONG: &str = "wrong-Pa55-Zq81x";
    let bigid: BigIdStandIn = start_standin(BigIdSettings::default()).await;
    let echo = start_echo().await;
    let provider = bigid_password("bigid", &bigid.url(), "bigid-admin", WRONG, "");
    let gateway = Gateway::start(&single_route(provider, "/api/", &echo.url())).await;
    let rejected = eventually(Duration::from_secs(5), || async {
        bigid.session_requests() >= 1
    })
    .await;
    assert!(rejected, "no login attempt");
    let refused = gateway.credential_unavailable("/api/x", "bigid").await;
    let detail = refused.detail.to_ascii_lowercase();
    assert!(
        ["reject", "401", "invalid credentials", "unauthorized"]
            .iter()
            .any(|word| detail.contains(word)),
        "the detail should say the credentials were rejected: {detail}"
    );
    let raw = refused.body.to_string();
    assert!(!raw.contains(WRONG), "the password leaked: {raw}");
    assert!(
        !gateway.logs().contains(WRONG),
        "the password is in the logs"
    );
    assert_eq!(echo.request_count(), 0);
    assert!(bigid.issued_tokens().is_empty());
}

// ----- OAuth2 --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_client_auth_basic() {
    let (idp, token, _running) =
        oauth2_token("grant: client_credentials\nclient_auth: basic").await;
    assert!(idp.is_valid_token(&token));
    let last = idp.last_request().unwrap();
    // The client id and secret, in Basic form (canonical base64 of `id:secret`).
    assert_eq!(last.authorization, Some(oauth2_basic_header()));
    assert_eq!(last.param("client_secret"), None);
    assert_eq!(last.param("grant_type"), Some("client_credentials"));
    assert!(last
        .content_type
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_client_auth_basic_encodes_special_characters() {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding, so a
    // secret holding `:`, `+`, `%` or spaces survives the trip.
    const SECRET: &str = "s3c:r+t %2F/é";
    let idp = start_oauth2(OAuth2Settings {
        clients: vec![("client:one".into(), SECRET.to_owned())],
        ..OAuth2Settings::default()
    })
    .await;
    let extra =
        format!("client_id: \"client:one\"\nclient_secret: \"{SECRET}\"\nclient_auth: basic");
    let (_gateway, _echo, token) = token_through(oauth2("idp", &idp.token_url(), &extra)).await;
    assert!(idp.is_valid_token(&token));
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_client_auth_post() {
    let (idp, token, _running) = oauth2_token("grant: client_credentials\nclient_auth: post").await;
    assert!(idp.is_valid_token(&token));
    let last = idp.last_request().unwrap();
    assert_eq!(last.authorization, None);
    assert_params(
        &last,
        &[
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("grant_type", "client_credentials"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_password_grant() {
    let (idp, token, _running) =
        oauth2_token("grant: password\nusername: demo-user\npassword: demo-password").await;
    assert!(idp.is_valid_token(&token));
    assert_eq!(subject(&token), "demo-user");
    assert_eq!(idp.grant_requests("password"), 1);
    let last = idp.last_request().unwrap();
    assert_params(
        &last,
        &[("username", "demo-user"), ("password", "demo-password")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_scopes_and_audience_are_sent() {
    let (idp, token, _running) =
        oauth2_token("scopes: [reports.read, reports.write]\naudience: https://api.example").await;
    let last = idp.last_request().unwrap();
    let sent = [
        ("scope", "reports.read reports.write"),
        ("audience", "https://api.example"),
    ];
    assert_params(&last, &sent);
    let claims = tollgate_standins::jwt::verify(&token).unwrap();
    assert_eq!(
        claims.aud.as_ref().and_then(|a| a.as_one()),
        Some("https://api.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_refresh_token_grant_rotates_its_refresh_token() {
    let idp: OAuth2StandIn = start_short_lived(oauth2_with_refresh_tokens()).await;
    // A refresh token obtained out of band, as an operator would configure it.
    let reply: serde_json::Value = client()
        .post(idp.token_url())
        .basic_auth("demo-client", Some("demo-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "demo-user"),
            ("password", "demo-password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh_token = reply["refresh_token"].as_str().unwrap().to_owned();
    let extra = format!("grant: refresh_token\nrefresh_token: {refresh_token}\n{SHORT_REFRESH}");
    let (gateway, echo, token) = token_through(oauth2("idp", &idp.token_url(), &extra)).await;
    assert!(idp.is_valid_token(&token));
    assert_eq!(idp.grant_requests("refresh_token"), 1);
    // Refresh tokens are single use: the next renewals must use the rotated ones.
    let renewed = eventually(Duration::from_secs(3), || async {
        idp.grant_requests("refresh_token") >= 3
    })
    .await;
    assert!(
        renewed,
        "{} refresh_token grants",
        idp.grant_requests("refresh_token")
    );
    let token = upstream_token(&gateway, &echo).await;
    assert!(idp.is_valid_token(&token));
    assert_eq!(idp.grant_requests("client_credentials"), 0);
    assert_eq!(
        idp.grant_requests("password"),
        1,
        "only the out-of-band one"
    );
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["consecutive_failures"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_from_env_and_file_references() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let echo = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "demo-secret\n").unwrap();
    let yaml = config(
        &[
            oauth2(
                "from-file",
                &idp.token_url(),
                &format!("client_secret: ${{file:{}}}", secret_file.display()),
            ),
            oauth2(
                "from-env",
                &idp.token_url(),
                "grant: password\nusername: demo-user\npassword: ${env:TOLLGATE_E2E_PASSWORD}",
            ),
        ],
        &[
            route("file", "/file/", &echo.url(), "from-file", ""),
            route("env", "/env/", &echo.url(), "from-env", ""),
        ],
    );
    let gateway =
        Gateway::start_with_env(&yaml, &[("TOLLGATE_E2E_PASSWORD", "demo-password")]).await;
    gateway.wait_ready().await;
    for path in ["/file/x", "/env/x"] {
        let token = gateway.bearer_upstream(path).await;
        assert!(idp.is_valid_token(&token), "{path}");
    }
    assert_eq!(idp.token_requests(), 2);
    assert_eq!(idp.grant_requests("password"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_are_independent() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let bigid: BigIdStandIn = start_standin(BigIdSettings::default()).await;
    bigid.set_available(false);
    let echo = start_echo().await;
    let yaml = config(
        &[
            oauth2("idp", &idp.token_url(), ""),
            bigid_user_token("bigid", &bigid.url(), "demo-bigid-user-token", ""),
        ],
        &[
            route("reports", "/reports/", &echo.url(), "idp", ""),
            route("bigid", "/bigid/", &echo.url(), "bigid", ""),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    gateway
        .wait_for_state("idp", "valid", Duration::from_secs(5))
        .await;
    assert_eq!(gateway.status_of("/reports/x").await, 200);
    let (status, _, body) = gateway.get_json("/bigid/x").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["provider"], "bigid");
    assert_eq!(body["route"], "bigid");
    assert_eq!(echo.request_count(), 1);
    // Not ready until every provider holds a token.
    let (code, body) = gateway.readyz().await;
    assert_eq!(code, 503);
    assert!(
        body.contains("bigid"),
        "/readyz should name the provider: {body}"
    );
    bigid.set_available(true);
    gateway.wait_ready().await;
    assert_eq!(gateway.status_of("/bigid/x").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_timeout_is_honoured() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    idp.set_delay(Duration::from_secs(5));
    let echo = start_echo().await;
    let provider = oauth2(
        "idp",
        &idp.token_url(),
        &format!("timeout: 500ms\n{FAST_REFRESH}"),
    );
    let gateway = Gateway::start(&single_route(provider, "/api/", &echo.url())).await;
    let started = std::time::Instant::now();
    gateway.credential_unavailable("/api/x", "idp").await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "the request waited {waited:?} for a provider with a 500ms timeout"
    );
    assert_eq!(echo.request_count(), 0);
    let status = gateway.provider_status("idp").await;
    let error = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        error.contains("time") || error.contains("500ms"),
        "the error should say the provider timed out: {status}"
    );
}
