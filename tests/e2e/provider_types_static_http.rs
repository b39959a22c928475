//! End to end: the provider types `static` (a fixed value) and `http` (a declarative
//! login) inject what they should, checked at the echo upstream.

use std::time::Duration;

use crate::common::*;
use tollgate_standins::bigid::{BigIdSettings, BigIdStandIn};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

// ----- static --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_value_and_basic_replace_the_client_copy() {
    const API_KEY: &str = "static-api-key-Vb71x";
    const LEGACY_PASSWORD: &str = "legacy-pw-Tn42c";
    let echo = start_echo().await;
    let yaml = config(
        &[
            provider("weather-key", "static", &format!("value: {API_KEY}")),
            provider(
                "legacy-basic",
                "static",
                &format!("basic: {{ username: reporting, password: \"{LEGACY_PASSWORD}\" }}"),
            ),
        ],
        &[
            route_injecting(
                "weather",
                "/weather/",
                &echo.url(),
                "weather-key",
                "X-Api-Key",
                "{token}",
            ),
            route_injecting(
                "legacy",
                "/legacy/",
                &echo.url(),
                "legacy-basic",
                "Authorization",
                "Basic {token}",
            ),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    // No provider to call: ready as soon as the process serves.
    let ready = eventually(Duration::from_millis(100), || async {
        gateway.readyz().await.0 == 200
    })
    .await;
    assert!(ready, "/readyz: {:?}", gateway.readyz().await);

    let key = gateway
        .upstream_header_sending(
            "/weather/today",
            "X-Api-Key",
            &[("X-Api-Key", "client-supplied-key")],
        )
        .await;
    assert_eq!(key, API_KEY);
    let authorization = gateway
        .upstream_header_sending(
            "/legacy/report",
            "Authorization",
            &[("Authorization", "Basic Y2xpZW50OmNsaWVudA==")],
        )
        .await;
    assert_eq!(
        authorization,
        format!("Basic {}", basic_pair("reporting", LEGACY_PASSWORD))
    );
    // Repeated requests reuse the one value.
    for _ in 0..3 {
        assert_eq!(
            gateway.upstream_header("/weather/x", "X-Api-Key").await,
            API_KEY
        );
    }
    let metrics = gateway.metrics().await;
    for name in ["weather-key", "legacy-basic"] {
        let fetches = sample_sum(
            &metrics,
            "tollgate_token_requests_total",
            &[("provider", name)],
        );
        assert!(
            fetches <= 1.0,
            "{name}: the fixed value is fetched once, not per request\n{metrics}"
        );
        assert_eq!(token_request_failures(&metrics, name), 0.0);
    }
    let status = gateway.provider_status("weather-key").await;
    assert_eq!(status["state"], "valid", "{status}");
}

// ----- http (declarative) --------------------------------------------------------------

/// The BigID stand-in, the echo upstream, and a config whose `http` provider
/// `bigid-declared` has the keys `keys` (where `{bigid}` is the stand-in's URL), on the
/// route `/bigid/`.
async fn declared_bigid(keys: &str) -> (BigIdStandIn, EchoUpstream, String) {
    let bigid: BigIdStandIn = start_standin(BigIdSettings::default()).await;
    let echo = start_echo().await;
    let keys = keys.replace("{bigid}", &bigid.url());
    let yaml = single_route(
        provider("bigid-declared", "http", &keys),
        "/bigid/",
        &echo.url(),
    );
    (bigid, echo, yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_declared_bigid_password_login() {
    let (bigid, _echo, yaml) = declared_bigid(
        "login:\n  method: POST\n  url: {bigid}/api/v1/sessions\n  headers: { Accept: application/json }\n  json: { username: bigid-admin, password: bigid-password }\ntoken_pointer: /auth_token",
    )
    .await;
    assert!(!yaml.contains("type: bigid\n"), "no bigid provider");
    let gateway = Gateway::start_ready(&yaml).await;
    let token = gateway.bearer_upstream("/bigid/x").await;
    assert!(bigid.is_valid_token(&token), "{token}");
    assert_eq!(subject(&token), "bigid-admin");
    assert_eq!(bigid.session_requests(), 1);
    assert_eq!(bigid.refresh_requests(), 0);
    // No lifetime pointer: the JWT exp (300 s) gives the lifetime.
    let left = gateway.seconds_to_expiry("bigid-declared").await;
    assert!((290..=300).contains(&left), "{left} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_expiry_pointer_drives_the_refresh() {
    // Opaque tokens: only the `expiry` pointer can tell the gateway they live 2 s.
    let idp: OAuth2StandIn = start_short_lived(OAuth2Settings {
        jwt_access_tokens: false,
        ..OAuth2Settings::default()
    })
    .await;
    let echo = start_echo().await;
    let keys = format!(
        "login:\n  url: {}\n  headers: {{ Authorization: \"{}\" }}\n  form: {{ grant_type: client_credentials }}\ntoken_pointer: /access_token\nexpiry: {{ pointer: /expires_in, format: seconds }}\nrefresh: {{ before_expiry: 1s, default_ttl: 300s, min_backoff: 200ms, max_backoff: 1s }}",
        idp.token_url(),
        oauth2_basic_header()
    );
    let yaml = single_route(provider("vendor", "http", &keys), "/vendor/", &echo.url());
    let gateway = Gateway::start_ready(&yaml).await;
    let first = gateway.bearer_upstream("/vendor/x").await;
    assert!(idp.is_valid_token(&first));
    let last = idp.last_request().unwrap();
    assert_eq!(last.authorization, Some(oauth2_basic_header()));
    assert_eq!(last.param("grant_type"), Some("client_credentials"));
    let left = gateway.seconds_to_expiry("vendor").await;
    assert!(left <= 2, "the expiry pointer, not default_ttl: {left} s");
    // The gateway has the new token once it counted the second login as a success (the
    // stand-in counts the call before the gateway has read the reply).
    let renewed = eventually(Duration::from_millis(2500), || async {
        gateway.token_requests("vendor", "login", "success").await >= 2.0
    })
    .await;
    assert!(
        renewed,
        "{} logins",
        idp.grant_requests("client_credentials")
    );
    let token = gateway.bearer_upstream("/vendor/x").await;
    assert_ne!(token, first);
    assert!(idp.is_valid_token(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_refresh_request_uses_the_refresh_value() {
    let idp: OAuth2StandIn = start_short_lived(oauth2_with_refresh_tokens()).await;
    let echo = start_echo().await;
    let basic = oauth2_basic_header();
    let keys = format!(
        "login:\n  url: {url}\n  headers: {{ Authorization: \"{basic}\" }}\n  form: {{ grant_type: client_credentials }}\ntoken_pointer: /access_token\nexpiry: {{ pointer: /expires_in, format: seconds }}\nrefresh_request:\n  url: {url}\n  headers: {{ Authorization: \"{basic}\" }}\n  form: {{ grant_type: refresh_token, refresh_token: \"{{refresh_token}}\" }}\nrefresh_token_pointer: /refresh_token\n{SHORT_REFRESH}",
        url = idp.token_url(),
    );
    let yaml = single_route(provider("vendor", "http", &keys), "/vendor/", &echo.url());
    let gateway = Gateway::start_ready(&yaml).await;
    let first = gateway.bearer_upstream("/vendor/x").await;
    let refreshed = eventually(Duration::from_millis(2500), || async {
        idp.grant_requests("refresh_token") >= 1
    })
    .await;
    assert!(refreshed, "no refresh_token grant");
    assert_eq!(idp.grant_requests("client_credentials"), 1, "no new login");
    let last = idp.last_request().unwrap();
    assert_eq!(last.param("grant_type"), Some("refresh_token"));
    assert!(
        last.param("refresh_token").is_some_and(|t| t.len() > 10),
        "{last:?}"
    );
    assert_eq!(last.authorization, Some(basic));
    // The refreshed token is what goes upstream.
    let renewed = eventually(Duration::from_secs(2), || async {
        let token = gateway.bearer_upstream("/vendor/x").await;
        token != first && idp.is_valid_token(&token)
    })
    .await;
    assert!(renewed, "the first token is still sent");
    let metrics = gateway.metrics().await;
    assert!(
        sample(
            &metrics,
            "tollgate_token_requests_total{provider=\"vendor\",kind=\"refresh\",outcome=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_wrong_token_pointer_names_the_pointer() {
    let (bigid, echo, yaml) = declared_bigid(
        "login:\n  url: {bigid}/api/v1/sessions\n  json: { username: bigid-admin, password: bigid-password }\ntoken_pointer: /data/session_token",
    )
    .await;
    let gateway = Gateway::start(&yaml).await;
    let status = gateway.wait_failed("bigid-declared").await;
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/data/session_token")),
        "{status}"
    );
    let Unavailable { body, detail, .. } = gateway
        .credential_unavailable("/bigid/x", "bigid-declared")
        .await;
    assert!(detail.contains("/data/session_token"), "{body}");
    // The login itself worked; the token it returned must not show.
    assert!(bigid.session_requests() >= 1);
    let issued = bigid.issued_tokens();
    assert!(!issued.is_empty());
    assert_absent("the 503 body", &body.to_string(), &issued);
    assert_absent("the logs", &gateway.logs(), &issued);
    assert_eq!(echo.request_count(), 0);
}
