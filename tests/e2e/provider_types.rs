//! End to end: the provider types `fortanix` and `bigbucks` log in the way their stand-ins
//! expect, and the header the echo upstream receives carries their token. (`static` and
//! `http` are in `provider_types_static_http`, `bagid` in `provider_types_bagid`, the leak
//! check across all of them in `provider_types_leaks`.)

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tollgate_standins::bigbucks::{BigBucksSettings, BigBucksStandIn};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::fortanix::{
    FortanixSettings, FortanixStandIn, FortanixUser, DEMO_ACCT_ID, DEMO_APP_ID,
};

fn fortanix_basic(name: &str, base_url: &str, id: &str, secret: &str, extra: &str) -> String {
    provider(
        name,
        "fortanix",
        &format!(
            "base_url: {base_url}\nbasic: {{ username: \"{id}\", password: \"{secret}\" }}\n{extra}"
        ),
    )
}

/// The fortanix provider `dsm` logging in to `dsm` as `id` with `secret` (HTTP Basic) and
/// `extra` keys, and the route `/dsm/` to `echo`.
fn dsm_config(
    dsm: &FortanixStandIn,
    id: &str,
    secret: &str,
    extra: &str,
    echo: &EchoUpstream,
) -> String {
    let provider = fortanix_basic("dsm", &dsm.url(), id, secret, extra);
    single_route(provider, "/dsm/", &echo.url())
}

// ----- Fortanix DSM --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_basic_app_credentials_give_a_bearer_session_token() {
    let dsm: FortanixStandIn = start_standin(FortanixSettings::default()).await;
    let echo = start_echo().await;
    let yaml = dsm_config(&dsm, DEMO_APP_ID, "demo-app-secret", "", &echo);
    let gateway = Gateway::start_ready(&yaml).await;
    let token = gateway.bearer_upstream("/dsm/sys/v1/keys").await;
    assert!(
        dsm.is_valid_token(&token),
        "not a live DSM session: {token}"
    );
    assert_eq!(dsm.issued_tokens(), vec![token.clone()]);
    assert_eq!(dsm.auth_requests(), 1);
    let auth = dsm.last_auth_request().unwrap();
    assert_eq!(auth.method.as_deref(), Some("basic"));
    assert_eq!(
        auth.authorization,
        Some(format!(
            "Basic {}",
            basic_pair(DEMO_APP_ID, "demo-app-secret")
        ))
    );
    assert_eq!(echo.last_request().unwrap().path, "/sys/v1/keys");
    // expires_in (300 s) gives the lifetime.
    let left = gateway.seconds_to_expiry("dsm").await;
    assert!((290..=300).contains(&left), "{left} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_body_methods_send_their_json_bodies() {
    let mut settings = FortanixSettings::default();
    settings.ldap_users.push((
        "idp-1".into(),
        "ldap@example.com".into(),
        "ldap-password".to_owned(),
    ));
    // One stand-in per method, as each keeps only its last request.
    let by_password: FortanixStandIn = start_standin(settings.clone()).await;
    let by_name: FortanixStandIn = start_standin(settings.clone()).await;
    let by_ldap: FortanixStandIn = start_standin(settings).await;
    let echo = start_echo().await;
    let yaml = config(
        &[
            provider(
                "dsm-password",
                "fortanix",
                &format!(
                    "base_url: {}\nbody:\n  method: password\n  email: demo@example.com\n  password: demo-password",
                    by_password.url()
                ),
            ),
            provider(
                "dsm-name",
                "fortanix",
                &format!(
                    "base_url: {}\nbody:\n  method: auth-by-app-name\n  acct_id: {DEMO_ACCT_ID}\n  name: demo-app\n  password: demo-app-secret",
                    by_name.url()
                ),
            ),
            provider(
                "dsm-ldap",
                "fortanix",
                &format!(
                    "base_url: {}\nbody:\n  method: ldap-basic-auth\n  idp_id: idp-1\n  email: ldap@example.com\n  password: ldap-password\n  acct_id: {DEMO_ACCT_ID}",
                    by_ldap.url()
                ),
            ),
        ],
        &[
            route("password", "/password/", &echo.url(), "dsm-password", ""),
            route("name", "/name/", &echo.url(), "dsm-name", ""),
            route("ldap", "/ldap/", &echo.url(), "dsm-ldap", ""),
        ],
    );
    let gateway = Gateway::start_ready(&yaml).await;
    let cases = [
        (
            "/password/x",
            &by_password,
            "password",
            json!({"method": "password", "email": "demo@example.com", "password": "demo-password"}),
        ),
        (
            "/name/x",
            &by_name,
            "auth-by-app-name",
            json!({"method": "auth-by-app-name", "acct_id": DEMO_ACCT_ID, "name": "demo-app", "password": "demo-app-secret"}),
        ),
        (
            "/ldap/x",
            &by_ldap,
            "ldap-basic-auth",
            json!({"method": "ldap-basic-auth", "idp_id": "idp-1", "email": "ldap@example.com", "password": "ldap-password", "acct_id": DEMO_ACCT_ID}),
        ),
    ];
    for (path, dsm, method, body) in cases {
        let token = gateway.bearer_upstream(path).await;
        assert!(dsm.is_valid_token(&token), "{method}: {token}");
        assert_eq!(dsm.auth_requests(), 1, "{method}");
        let auth = dsm.last_auth_request().unwrap();
        assert_eq!(auth.method.as_deref(), Some(method));
        assert_eq!(auth.authorization, None, "{method}: no Basic with a body");
        assert!(
            auth.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{method}: {auth:?}"
        );
        assert_eq!(auth.body_json(), Some(body), "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_expires_in_drives_the_refresh() {
    let dsm: FortanixStandIn = start_short_lived(FortanixSettings::default()).await;
    let echo = start_echo().await;
    let yaml = dsm_config(&dsm, DEMO_APP_ID, "demo-app-secret", SHORT_REFRESH, &echo);
    let gateway = Gateway::start_ready(&yaml).await;
    let left = gateway.seconds_to_expiry("dsm").await;
    assert!(left <= 2, "expires_in, not default_ttl: {left} s");
    // Requests all along the first token's lifetime and past it: none fails, and a second
    // session is opened before the first one ends.
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2600) {
        let token = gateway.bearer_upstream("/dsm/x").await;
        if !seen.contains(&token) {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dsm.auth_requests() >= 2, "{} auths", dsm.auth_requests());
    assert!(seen.len() >= 2, "one token all along: {seen:?}");
    let issued = dsm.issued_tokens();
    assert!(seen.iter().all(|t| issued.contains(t)));
    let metrics = gateway.metrics().await;
    assert_eq!(token_request_failures(&metrics, "dsm"), 0.0);
    assert_eq!(
        sample_sum(
            &metrics,
            "tollgate_credential_unavailable_total",
            &[("route", "dsm")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_mfa_user_is_a_clear_error_that_is_not_retried_soon() {
    const MFA_PASSWORD: &str = "mfa-pw-Hx73q";
    let mut settings = FortanixSettings::default();
    settings.users.push(FortanixUser {
        email: "mfa@example.com".into(),
        password: MFA_PASSWORD.to_owned(),
        mfa: true,
    });
    let dsm: FortanixStandIn = start_standin(settings).await;
    let echo = start_echo().await;
    let long_backoff = "refresh: { min_backoff: 200ms, max_backoff: 30s }";
    let yaml = dsm_config(&dsm, "mfa@example.com", MFA_PASSWORD, long_backoff, &echo);
    let gateway = Gateway::start(&yaml).await;
    let status = gateway.wait_failed("dsm").await;
    let says_mfa = |text: &str| {
        let lower = text.to_ascii_lowercase();
        (lower.contains("mfa") || lower.contains("multi-factor"))
            && lower.contains("app credential")
    };
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(says_mfa(last_error), "/status last_error: {status}");
    assert_eq!(status["state"], "unavailable", "{status}");
    let Unavailable { body, detail, .. } = gateway.credential_unavailable("/dsm/x", "dsm").await;
    assert!(says_mfa(&detail), "503 detail: {body}");
    // The longest backoff: no second login within 2 s, even with requests coming in.
    for _ in 0..10 {
        let (code, _, _) = gateway.get_json("/dsm/x").await;
        assert_eq!(code, 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dsm.auth_requests(), 1);
    let status = gateway.provider_status("dsm").await;
    assert!(
        status["retry_in_seconds"].as_u64().unwrap_or(0) >= 20,
        "{status}"
    );
    assert_eq!(echo.request_count(), 0);
    // Neither the password nor the unusable session token shows.
    let mut needles = dsm.issued_tokens();
    assert_eq!(needles.len(), 1);
    needles.push(MFA_PASSWORD.to_owned());
    assert_absent("the 503 body", &body.to_string(), &needles);
    assert_absent("the logs", &gateway.logs(), &needles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_wrong_secret_is_503_without_the_secret() {
    const WRONG: &str = "wrong-dsm-secret-Q8v2m";
    let dsm: FortanixStandIn = start_standin(FortanixSettings::default()).await;
    let echo = start_echo().await;
    let yaml = dsm_config(&dsm, DEMO_APP_ID, WRONG, "", &echo);
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_failed("dsm").await;
    let Unavailable { body, detail, .. } = gateway.credential_unavailable("/dsm/x", "dsm").await;
    let lower = detail.to_ascii_lowercase();
    assert!(
        lower.contains("rejected") && lower.contains("401"),
        "the detail should say the credentials were rejected: {body}"
    );
    assert!(!lower.contains("multi-factor"), "{body}");
    let needles = [WRONG.to_owned(), basic_pair(DEMO_APP_ID, WRONG)];
    assert_absent("the 503 body", &body.to_string(), &needles);
    assert_absent("the logs", &gateway.logs(), &needles);
    assert_absent("/status", &gateway.status().await.to_string(), &needles);
    assert!(dsm.issued_tokens().is_empty());
    assert_eq!(echo.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fortanix_terminate_on_shutdown_ends_the_session_on_sigterm() {
    let dsm: FortanixStandIn = start_standin(FortanixSettings::default()).await;
    let kept: FortanixStandIn = start_standin(FortanixSettings::default()).await;
    let echo = start_echo().await;
    let yaml = config(
        &[
            fortanix_basic(
                "dsm",
                &dsm.url(),
                DEMO_APP_ID,
                "demo-app-secret",
                "terminate_on_shutdown: true",
            ),
            fortanix_basic("kept", &kept.url(), DEMO_APP_ID, "demo-app-secret", ""),
        ],
        &[
            route("dsm", "/dsm/", &echo.url(), "dsm", ""),
            route("kept", "/kept/", &echo.url(), "kept", ""),
        ],
    );
    let gateway = Gateway::start_ready(&yaml).await;
    let token = gateway.bearer_upstream("/dsm/x").await;
    let kept_token = gateway.bearer_upstream("/kept/x").await;
    assert!(dsm.is_valid_token(&token));
    assert_eq!(dsm.terminate_requests(), 0);

    gateway.signal("TERM");
    let ended = eventually(Duration::from_secs(4), || async {
        dsm.terminate_requests() >= 1
    })
    .await;
    assert!(ended, "no terminate call\n{}", gateway.logs());
    assert_eq!(dsm.terminate_requests(), 1);
    assert!(!dsm.is_valid_token(&token), "the session is still open");
    // Only the provider configured to do so ends its session.
    assert_eq!(kept.terminate_requests(), 0);
    assert!(kept.is_valid_token(&kept_token));
}

// ----- BigBucks Auth Engine ------------------------------------------------------------

/// A route `/{name}/` to `echo` injecting the token of the provider `name` as `X-Auth`.
fn x_auth_route(name: &str, echo: &EchoUpstream) -> String {
    route_injecting(
        name,
        &format!("/{name}/"),
        &echo.url(),
        name,
        "X-Auth",
        "{token}",
    )
}

fn bigbucks(name: &str, base_url: &str, username: &str, password: &str, extra: &str) -> String {
    provider(
        name,
        "bigbucks",
        &format!("base_url: {base_url}\nusername: {username}\npassword: {password}\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigbucks_signin_body_and_x_auth_injection() {
    let engine: BigBucksStandIn = start_standin(BigBucksSettings::default()).await;
    let guarded: BigBucksStandIn = start_standin(BigBucksSettings {
        required_recaptcha: Some("captcha-ok-7Tg".into()),
        ..BigBucksSettings::default()
    })
    .await;
    let echo = start_echo().await;
    let yaml = config(
        &[
            bigbucks(
                "engine",
                &engine.base_url(),
                "svc-reporting",
                "engine-password",
                "",
            ),
            bigbucks(
                "guarded",
                &guarded.base_url(),
                "svc-reporting",
                "engine-password",
                "recaptcha: captcha-ok-7Tg",
            ),
        ],
        &[
            x_auth_route("engine", &echo),
            x_auth_route("guarded", &echo),
        ],
    );
    let gateway = Gateway::start_ready(&yaml).await;

    let token = gateway.upstream_header("/engine/me", "X-Auth").await;
    assert!(engine.is_valid_token(&token), "{token}");
    assert_eq!(subject(&token), "svc-reporting");
    assert_eq!(engine.issued_tokens(), vec![token.clone()]);
    let request = echo.last_request().unwrap();
    assert_eq!(
        request.header("authorization"),
        None,
        "only X-Auth is added"
    );
    assert_eq!(request.header_values("x-auth"), vec![token.as_str()]);
    assert_eq!(engine.signin_requests(), 1);
    assert_eq!(
        engine.last_signin_request().unwrap().body_json(),
        Some(json!({"username": "svc-reporting", "password": "engine-password"}))
    );

    let token = gateway.upstream_header("/guarded/me", "X-Auth").await;
    assert!(guarded.is_valid_token(&token), "{token}");
    assert_eq!(guarded.signin_requests(), 1);
    assert_eq!(
        guarded.last_signin_request().unwrap().body_json(),
        Some(
            json!({"username": "svc-reporting", "password": "engine-password", "recaptcha": "captcha-ok-7Tg"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigbucks_lifetime_comes_from_the_jwt_exp() {
    let engine: BigBucksStandIn = start_short_lived(BigBucksSettings::default()).await;
    let echo = start_echo().await;
    let yaml = config(
        &[bigbucks(
            "engine",
            &engine.base_url(),
            "svc-reporting",
            "engine-password",
            "refresh: { before_expiry: 1s, default_ttl: 300s, min_backoff: 200ms, max_backoff: 1s }",
        )],
        &[x_auth_route("engine", &echo)],
    );
    let gateway = Gateway::start_ready(&yaml).await;
    let left = gateway.seconds_to_expiry("engine").await;
    assert!(left <= 2, "the JWT exp, not default_ttl: {left} s");
    // The gateway counts a login once its token is in the cache; the stand-in counts the
    // sign-in before the gateway has read the reply.
    let renewed = eventually(Duration::from_millis(2500), || async {
        gateway.token_requests("engine", "login", "success").await >= 2.0
    })
    .await;
    assert!(renewed, "{} sign-ins", engine.signin_requests());
    let token = gateway.upstream_header("/engine/x", "X-Auth").await;
    assert!(engine.is_valid_token(&token));
    assert_ne!(engine.issued_tokens()[0], token, "still the first JWT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigbucks_errors_are_told_apart() {
    const WRONG: &str = "wrong-engine-pw-R5d0k";
    let engine: BigBucksStandIn = start_standin(BigBucksSettings::default()).await;
    let broken: BigBucksStandIn = start_standin(BigBucksSettings::default()).await;
    broken.set_fail_with(Some(500));
    let echo = start_echo().await;
    let yaml = config(
        &[
            bigbucks(
                "unknown",
                &engine.base_url(),
                "nobody-here",
                "engine-password",
                "",
            ),
            bigbucks("wrong", &engine.base_url(), "svc-reporting", WRONG, ""),
            bigbucks(
                "broken",
                &broken.base_url(),
                "svc-reporting",
                "engine-password",
                "",
            ),
        ],
        &[
            x_auth_route("unknown", &echo),
            x_auth_route("wrong", &echo),
            x_auth_route("broken", &echo),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    for name in ["unknown", "wrong", "broken"] {
        gateway.wait_failed(name).await;
    }
    let Unavailable {
        body: unknown_body,
        detail: unknown,
        ..
    } = gateway
        .credential_unavailable("/unknown/x", "unknown")
        .await;
    let Unavailable {
        body: wrong_body,
        detail: wrong,
        ..
    } = gateway.credential_unavailable("/wrong/x", "wrong").await;
    let Unavailable {
        body: broken_body,
        detail: broken_detail,
        ..
    } = gateway.credential_unavailable("/broken/x", "broken").await;
    let lower = |s: &str| s.to_ascii_lowercase();
    assert!(
        lower(&unknown).contains("not found") && unknown.contains("404"),
        "unknown user: {unknown_body}"
    );
    assert!(
        (lower(&wrong).contains("bad request") || lower(&wrong).contains("refused"))
            && wrong.contains("400")
            && !lower(&wrong).contains("not found"),
        "wrong password: {wrong_body}"
    );
    assert!(
        lower(&broken_detail).contains("error")
            && broken_detail.contains("500")
            && !lower(&broken_detail).contains("not found")
            && !lower(&broken_detail).contains("bad request"),
        "engine failure: {broken_body}"
    );
    assert_ne!(unknown, wrong);
    assert_ne!(wrong, broken_detail);
    assert_ne!(unknown, broken_detail);
    for body in [&unknown_body, &wrong_body, &broken_body] {
        assert_absent("a 503 body", &body.to_string(), &[WRONG.to_owned()]);
    }
    assert_absent("the logs", &gateway.logs(), &[WRONG.to_owned()]);
    assert_absent(
        "/status",
        &gateway.status().await.to_string(),
        &[WRONG.to_owned()],
    );
    assert!(engine.issued_tokens().is_empty());
    assert!(broken.issued_tokens().is_empty());
    assert_eq!(echo.request_count(), 0);
}
