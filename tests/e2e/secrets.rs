//! End to end: no secret and no token ever shows in what the gateway itself emits (its
//! logs, `/metrics`, `/status`, `/readyz`, its own error bodies, `check`'s output), through
//! logins, refreshes, rejections, provider outages and upstream retries.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use tollgate_standins::bigid::{BigIdSettings, BigIdStandIn};
use tollgate_standins::oauth2::OAuth2Settings;

const CLIENT_SECRET: &str = "e2e-client-secret-7Hq2v";
const USER_PASSWORD: &str = "e2e-user-pw-9Kd4s";
const WRONG_CLIENT_SECRET: &str = "e2e-wrong-secret-3Jt8n";
const BIGID_USER_TOKEN: &str = "e2e-user-token-4Rv6p";
const BIGID_PASSWORD: &str = "e2e-bigid-pw-2Lm5w";
const BIGID_WRONG_PASSWORD: &str = "e2e-wrong-pw-8Xc1z";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_and_tokens_never_leak() {
    never_leak(&[], true).await;
}

/// The same at debug level: an operator chasing a problem must not get secrets either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_and_tokens_never_leak_at_debug_level() {
    // The echo stops reflecting requests: pingora's debug log of upstream bodies would
    // otherwise show the credential the echo sends back, which a real upstream does not.
    never_leak(&[("RUST_LOG", "debug")], false).await;
}

async fn never_leak(extra_env: &[(&str, &str)], reflect: bool) {
    let idp = start_oauth2(OAuth2Settings {
        clients: vec![("e2e-client".into(), CLIENT_SECRET.to_owned())],
        users: vec![("e2e-user".into(), USER_PASSWORD.to_owned())],
        token_ttl: Duration::from_secs(2),
        issue_refresh_tokens: true,
        ..OAuth2Settings::default()
    })
    .await;
    let bigid: BigIdStandIn = start_standin(BigIdSettings {
        users: vec![("e2e-admin".into(), BIGID_PASSWORD.to_owned())],
        user_tokens: vec![BIGID_USER_TOKEN.to_owned()],
        token_ttl: Duration::from_secs(300),
    })
    .await;
    let echo = start_echo().await;
    echo.set_reflect(reflect);

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("bigid-password");
    std::fs::write(&secret_file, BIGID_PASSWORD).unwrap();

    let fast = "refresh: { before_expiry: 1s, min_backoff: 200ms, max_backoff: 400ms }";
    let yaml = config(
        &[
            oauth2(
                "idp",
                &idp.token_url(),
                &format!(
                    "client_id: e2e-client\nclient_secret: ${{env:E2E_CLIENT_SECRET}}\ngrant: password\nusername: e2e-user\npassword: {USER_PASSWORD}\nclient_auth: basic\n{fast}"
                ),
            ),
            oauth2(
                "idp-post",
                &idp.token_url(),
                &format!("client_id: e2e-client\nclient_secret: {CLIENT_SECRET}\nclient_auth: post"),
            ),
            oauth2(
                "idp-wrong",
                &idp.token_url(),
                &format!("client_id: e2e-client\nclient_secret: {WRONG_CLIENT_SECRET}\nclient_auth: post"),
            ),
            bigid_user_token("bigid-token", &bigid.url(), BIGID_USER_TOKEN, ""),
            bigid_password(
                "bigid-password",
                &bigid.url(),
                "e2e-admin",
                &format!("${{file:{}}}", secret_file.display()),
                "",
            ),
            bigid_password("bigid-wrong", &bigid.url(), "e2e-admin", BIGID_WRONG_PASSWORD, ""),
        ],
        &[
            route("idp", "/idp/", &echo.url(), "idp", ""),
            route("idp-post", "/idp-post/", &echo.url(), "idp-post", ""),
            route("idp-wrong", "/idp-wrong/", &echo.url(), "idp-wrong", ""),
            route("bigid-token", "/bigid-token/", &echo.url(), "bigid-token", ""),
            route("bigid-password", "/bigid-password/", &echo.url(), "bigid-password", ""),
            route("bigid-wrong", "/bigid-wrong/", &echo.url(), "bigid-wrong", ""),
            route("dead", "/dead/", &closed_port_url(), "idp-post", ""),
        ],
    );
    let mut env = vec![("E2E_CLIENT_SECRET", CLIENT_SECRET)];
    env.extend_from_slice(extra_env);
    let check = run_to_exit("check", &yaml, &env);
    assert_eq!(check.code, Some(0), "{check:?}");

    let gateway = Gateway::start_with_env(&yaml, &env).await;
    let mut emitted = vec![check.output()];

    let settled = eventually(Duration::from_secs(5), || async {
        let status = gateway.status().await;
        let state = |name: &str| {
            status["providers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["provider"] == name))
                .map(|p| {
                    (
                        p["state"].as_str().unwrap_or("").to_owned(),
                        p["consecutive_failures"].as_u64().unwrap_or(0),
                    )
                })
                .unwrap_or_default()
        };
        ["idp", "idp-post", "bigid-token", "bigid-password"]
            .iter()
            .all(|p| state(p).0 == "valid")
            && ["idp-wrong", "bigid-wrong"].iter().all(|p| state(p).1 >= 1)
    })
    .await;
    assert!(
        settled,
        "providers did not settle: {}",
        gateway.status().await
    );

    // Requests: good routes, rejected logins, no route, dead upstream, an upstream 401.
    for path in [
        "/idp/a",
        "/idp-post/a",
        "/bigid-token/a",
        "/bigid-password/a",
    ] {
        let (status, _, body) = gateway.get_json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in ["/idp-wrong/a", "/bigid-wrong/a"] {
        let reply = gateway.get(path).await;
        assert_eq!(reply.status(), 503, "{path}");
        emitted.push(format!("{:?}", reply.headers()));
        emitted.push(reply.text().await.unwrap());
    }
    for path in ["/nowhere", "/dead/a"] {
        // A connection of its own: after a 502 the gateway may drop it (see
        // `keep_alive_connection_survives_gateway_errors`), which is not what this test is about.
        let reply = client().get(gateway.proxy_url(path)).send().await.unwrap();
        assert!(reply.status() == 404 || reply.status() == 502, "{path}");
        emitted.push(format!("{:?}", reply.headers()));
        emitted.push(reply.text().await.unwrap());
    }
    echo.respond_next_with(401, 1);
    assert_eq!(gateway.status_of("/bigid-token/retry").await, 200);

    // Refreshes (with refresh tokens) happen every second on `idp`: once one went through,
    // it goes down, its refreshes fail and its token runs out.
    let refreshed = eventually(Duration::from_secs(5), || async {
        idp.grant_requests("refresh_token") >= 1
    })
    .await;
    assert!(refreshed, "no refresh with the refresh token");
    idp.set_available(false);
    gateway
        .wait_for_state("idp", "unavailable", Duration::from_secs(5))
        .await;
    let reply = gateway.get("/idp/a").await;
    assert_eq!(reply.status(), 503);
    emitted.push(format!("{:?}", reply.headers()));
    emitted.push(reply.text().await.unwrap());
    assert!(
        idp.grant_requests("refresh_token") >= 1,
        "the refresh-token path was not exercised"
    );

    emitted.push(gateway.status().await.to_string());
    emitted.push(gateway.metrics().await);
    emitted.push(gateway.readyz().await.1);
    emitted.push(gateway.logs());
    let emitted = emitted.join("\n");
    assert!(
        emitted.contains("idp-wrong") && emitted.contains("bigid-wrong"),
        "the collection is missing the failures"
    );

    let mut secrets: Vec<String> = [
        CLIENT_SECRET,
        USER_PASSWORD,
        WRONG_CLIENT_SECRET,
        BIGID_USER_TOKEN,
        BIGID_PASSWORD,
        BIGID_WRONG_PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    secrets.push(b64.encode(format!("e2e-client:{CLIENT_SECRET}")));
    secrets.push(b64.encode(format!("e2e-client:{WRONG_CLIENT_SECRET}")));
    let tokens: Vec<String> = idp
        .issued_tokens()
        .into_iter()
        .chain(bigid.issued_tokens())
        .collect();
    assert!(tokens.len() >= 5, "too few tokens issued: {}", tokens.len());
    for token in &tokens {
        secrets.push(token.clone());
        // A truncated token is still a leak: its tail is its signature / entropy.
        secrets.push(token[token.len() - 16..].to_owned());
    }
    // For each leaked value, the first line that shows it (shortened).
    let leaks: Vec<String> = secrets
        .iter()
        .filter_map(|secret| {
            let line = emitted
                .lines()
                .find(|line| line.contains(secret.as_str()))?;
            let shown: String = line.chars().take(300).collect();
            let head: String = secret.chars().take(12).collect();
            Some(format!("{head}... in: {shown}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "the gateway emitted {} secrets or tokens:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
