//! End to end: with every new provider type at work at once (`fortanix`, `bigbucks`,
//! `bagid`, `static`, `http`), through logins, refreshes and rejections, nothing the gateway
//! emits itself (logs, `/metrics`, `/status`, `/readyz`, its error bodies) holds a password,
//! secret, app key or issued token.

use std::time::Duration;

use crate::common::*;
use tollgate_standins::bagid::{host_token, AttestorStandIn, BagIdSettings, BagIdStandIn};
use tollgate_standins::bigbucks::{BigBucksSettings, BigBucksStandIn};
use tollgate_standins::bigid::{BigIdSettings, BigIdStandIn};
use tollgate_standins::fortanix::{
    FortanixApp, FortanixSettings, FortanixStandIn, FortanixUser, DEMO_ACCT_ID, DEMO_APP_ID,
};
use tollgate_standins::oauth2::OAuth2Settings;

const DSM_SECRET: &str = "leak-dsm-secret-4Fw9p";
const DSM_WRONG: &str = "leak-dsm-wrong-8Zt1b";
const DSM_MFA_PASSWORD: &str = "leak-dsm-mfa-pw-3Kq7d";
const ENGINE_PASSWORD: &str = "leak-engine-pw-6Rm2s";
const ENGINE_WRONG: &str = "leak-engine-wrong-1Vx5h";
const ENGINE_RECAPTCHA: &str = "leak-recaptcha-9Gd3n";
const BAGID_APP_KEY: &str = "leak-bagid-app-key-2Hs8c";
const BAGID_B2B_SECRET: &str = "leak-b2b-secret-7Lp4w";
const BAGID_PASSWORD: &str = "leak-bagid-pw-5Nj6y";
const BAGID_WRONG_SECRET: &str = "leak-b2b-wrong-0Qe2r";
const STATIC_KEY: &str = "leak-static-key-8Bv3m";
const STATIC_PASSWORD: &str = "leak-static-pw-4Yc9k";
const CLIENT_SECRET: &str = "leak-client-secret-1Tz6f";
const BIGID_PASSWORD: &str = "leak-bigid-pw-7Wn2a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_provider_types_never_leak_secrets_or_tokens() {
    never_leak(&[], true).await;
}

/// The same at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_provider_types_never_leak_at_debug_level() {
    // The echo stops reflecting requests: a debug log of upstream bodies would otherwise
    // show the credential the echo sends back, which a real upstream does not.
    never_leak(&[("RUST_LOG", "debug")], false).await;
}

async fn never_leak(env: &[(&str, &str)], reflect: bool) {
    let short = Duration::from_secs(2);
    let dsm: FortanixStandIn = start_standin(FortanixSettings {
        users: vec![FortanixUser {
            email: "mfa@example.com".into(),
            password: DSM_MFA_PASSWORD.to_owned(),
            mfa: true,
        }],
        apps: vec![FortanixApp {
            app_id: DEMO_APP_ID.into(),
            name: "leak-app".into(),
            acct_id: DEMO_ACCT_ID.into(),
            secret: DSM_SECRET.to_owned(),
        }],
        ldap_users: Vec::new(),
        token_ttl: short,
    })
    .await;
    let engine: BigBucksStandIn = start_standin(BigBucksSettings {
        users: vec![("svc-leak".into(), ENGINE_PASSWORD.to_owned())],
        required_recaptcha: Some(ENGINE_RECAPTCHA.into()),
        token_ttl: short,
        ..BigBucksSettings::default()
    })
    .await;
    let bagid: BagIdStandIn = start_standin(BagIdSettings {
        app_keys: vec![BAGID_APP_KEY.to_owned()],
        b2b_secret: BAGID_B2B_SECRET.to_owned(),
        b2b_users: vec![("svc".into(), BAGID_PASSWORD.to_owned())],
        token_ttl: short,
        ..BagIdSettings::default()
    })
    .await;
    let attestor = AttestorStandIn::start().await.unwrap();
    let idp = start_oauth2(OAuth2Settings {
        clients: vec![("leak-client".into(), CLIENT_SECRET.to_owned())],
        token_ttl: short,
        issue_refresh_tokens: true,
        ..OAuth2Settings::default()
    })
    .await;
    let bigid: BigIdStandIn = start_standin(BigIdSettings {
        users: vec![("leak-admin".into(), BIGID_PASSWORD.to_owned())],
        ..BigIdSettings::default()
    })
    .await;
    let echo = start_echo().await;
    echo.set_reflect(reflect);

    let dir = tempfile::tempdir().unwrap();
    let host = host_token("leak-host-user", Duration::from_secs(600));
    let host_file = dir.path().join("host-token");
    std::fs::write(&host_file, format!("{host}\n")).unwrap();
    let client_basic = basic_pair("leak-client", CLIENT_SECRET);
    let oauth_login = |name: &str| {
        provider(
            name,
            "http",
            &format!(
                "login:\n  url: {url}\n  headers: {{ Authorization: \"Basic {client_basic}\" }}\n  form: {{ grant_type: client_credentials }}\ntoken_pointer: /access_token\nexpiry: {{ pointer: /expires_in, format: seconds }}\nrefresh_request:\n  url: {url}\n  headers: {{ Authorization: \"Basic {client_basic}\" }}\n  form: {{ grant_type: refresh_token, refresh_token: \"{{refresh_token}}\" }}\nrefresh_token_pointer: /refresh_token\n{SHORT_REFRESH}",
                url = idp.token_url()
            ),
        )
    };
    let b2b = |name: &str, secret: &str| {
        provider(
            name,
            "bagid",
            &format!(
                "base_url: {}\nflow: b2b_secret\napp_key: ${{env:LEAK_BAGID_APP_KEY}}\nb2b_secret: {secret}\nusername: svc\npassword: {BAGID_PASSWORD}\n{SHORT_REFRESH}",
                bagid.url()
            ),
        )
    };
    let providers = vec![
        provider(
            "dsm",
            "fortanix",
            &format!(
                "base_url: {}\nbasic: {{ username: \"{DEMO_APP_ID}\", password: \"${{env:LEAK_DSM_SECRET}}\" }}\nterminate_on_shutdown: true\n{SHORT_REFRESH}",
                dsm.url()
            ),
        ),
        provider(
            "dsm-wrong",
            "fortanix",
            &format!(
                "base_url: {}\nbasic: {{ username: \"{DEMO_APP_ID}\", password: \"{DSM_WRONG}\" }}",
                dsm.url()
            ),
        ),
        provider(
            "dsm-mfa",
            "fortanix",
            &format!(
                "base_url: {}\nbody:\n  method: password\n  email: mfa@example.com\n  password: {DSM_MFA_PASSWORD}",
                dsm.url()
            ),
        ),
        provider(
            "engine",
            "bigbucks",
            &format!(
                "base_url: {}\nusername: svc-leak\npassword: {ENGINE_PASSWORD}\nrecaptcha: {ENGINE_RECAPTCHA}\n{SHORT_REFRESH}",
                engine.base_url()
            ),
        ),
        provider(
            "engine-wrong",
            "bigbucks",
            &format!(
                "base_url: {}\nusername: svc-leak\npassword: {ENGINE_WRONG}\nrecaptcha: {ENGINE_RECAPTCHA}",
                engine.base_url()
            ),
        ),
        b2b("bagid", BAGID_B2B_SECRET),
        b2b("bagid-wrong", BAGID_WRONG_SECRET),
        provider(
            "bagid-federated",
            "bagid",
            &format!(
                "base_url: {}\nflow: federated\napp_key: {BAGID_APP_KEY}\nfederated_token_file: {}",
                bagid.url(),
                host_file.display()
            ),
        ),
        provider(
            "bagid-guest",
            "bagid",
            &format!(
                "base_url: {}\nflow: guest\nattestor: {{ url: {} }}",
                bagid.url(),
                attestor.attest_url()
            ),
        ),
        provider("static-key", "static", &format!("value: {STATIC_KEY}")),
        provider(
            "static-basic",
            "static",
            &format!("basic: {{ username: reporting, password: \"{STATIC_PASSWORD}\" }}"),
        ),
        oauth_login("vendor"),
        provider(
            "vendor-wrong-pointer",
            "http",
            &format!(
                "login:\n  url: {}/api/v1/sessions\n  json: {{ username: leak-admin, password: {BIGID_PASSWORD} }}\ntoken_pointer: /nope",
                bigid.url()
            ),
        ),
    ];
    let names: Vec<String> = providers
        .iter()
        .map(|block| block.trim_start().split(':').next().unwrap().to_owned())
        .collect();
    let routes: Vec<String> = names
        .iter()
        .map(|name| {
            route_injecting(
                name,
                &format!("/{name}/"),
                &echo.url(),
                name,
                "Authorization",
                "{token_type} {token}",
            )
        })
        .collect();
    let yaml = config(&providers, &routes);
    let mut all_env = vec![
        ("LEAK_DSM_SECRET", DSM_SECRET),
        ("LEAK_BAGID_APP_KEY", BAGID_APP_KEY),
    ];
    all_env.extend_from_slice(env);
    let gateway = Gateway::start_with_env(&yaml, &all_env).await;

    let failing = [
        "dsm-wrong",
        "dsm-mfa",
        "engine-wrong",
        "bagid-wrong",
        "vendor-wrong-pointer",
    ];
    let working: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !failing.contains(n))
        .collect();
    for name in failing {
        gateway.wait_failed(name).await;
    }
    let valid = eventually(Duration::from_secs(5), || async {
        let status = gateway.status().await;
        working.iter().all(|name| {
            status["providers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["provider"] == *name))
                .is_some_and(|p| p["state"] == "valid")
        })
    })
    .await;
    assert!(valid, "{}", gateway.status().await);

    let mut emitted = Vec::new();
    emitted.extend(round(&gateway, &names, &failing).await);
    // Past the 2 s lifetimes: logins, refreshes (with refresh tokens) and re-logins.
    let renewals = [
        ("dsm", "login"),
        ("engine", "login"),
        ("bagid", "refresh"),
        ("bagid-federated", "refresh"),
        ("bagid-guest", "refresh"),
        ("vendor", "refresh"),
    ];
    let renewed = eventually(Duration::from_secs(3), || async {
        let metrics = gateway.metrics().await;
        renewals.iter().all(|(name, kind)| {
            let done = sample(
                &metrics,
                &format!(
                    "tollgate_token_requests_total{{provider=\"{name}\",kind=\"{kind}\",outcome=\"success\"}}"
                ),
            )
            .unwrap_or(0.0);
            done >= if *kind == "login" { 2.0 } else { 1.0 }
        })
    })
    .await;
    assert!(renewed, "{}", gateway.metrics().await);
    emitted.extend(round(&gateway, &names, &failing).await);

    // A graceful stop ends the DSM session (with the token in its request).
    gateway.signal("TERM");
    let ended = eventually(Duration::from_secs(4), || async {
        dsm.terminate_requests() >= 1
    })
    .await;
    assert!(ended, "no terminate call");
    // The last line the gateway writes, after the session was ended.
    emitted.push(gateway.logs_once_written("drained; exiting").await);

    let mut needles: Vec<String> = [
        DSM_SECRET,
        DSM_WRONG,
        DSM_MFA_PASSWORD,
        ENGINE_PASSWORD,
        ENGINE_WRONG,
        ENGINE_RECAPTCHA,
        BAGID_APP_KEY,
        BAGID_B2B_SECRET,
        BAGID_PASSWORD,
        BAGID_WRONG_SECRET,
        STATIC_KEY,
        STATIC_PASSWORD,
        CLIENT_SECRET,
        BIGID_PASSWORD,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    needles.push(basic_pair(DEMO_APP_ID, DSM_SECRET));
    needles.push(basic_pair(DEMO_APP_ID, DSM_WRONG));
    needles.push(basic_pair("reporting", STATIC_PASSWORD));
    needles.push(client_basic.clone());
    needles.push(host.clone());
    for tokens in [
        dsm.issued_tokens(),
        engine.issued_tokens(),
        bagid.issued_tokens(),
        idp.issued_tokens(),
        bigid.issued_tokens(),
    ] {
        assert!(!tokens.is_empty());
        needles.extend(tokens);
    }
    if env.contains(&("RUST_LOG", "debug")) {
        let logs = gateway.logs();
        assert!(
            logs.contains("\"level\":\"DEBUG\""),
            "no debug lines: {logs}"
        );
    }
    let text = emitted.join("\n");
    assert!(text.contains("tollgate_token_requests_total"), "no metrics");
    assert_absent("what the gateway emitted", &text, &needles);
}

/// One request on every route (the failing providers' must be 503, the others 200), then
/// the admin answers: the gateway's own texts of this round.
async fn round(gateway: &Gateway, names: &[String], failing: &[&str]) -> Vec<String> {
    let mut texts = Vec::new();
    for name in names {
        let (status, _, body) = gateway.get_json(&format!("/{name}/x")).await;
        if failing.contains(&name.as_str()) {
            assert_eq!(status, 503, "{name}: {body}");
            texts.push(body.to_string());
        } else {
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
    texts.push(gateway.metrics().await);
    texts.push(gateway.status().await.to_string());
    texts.push(gateway.readyz().await.1);
    texts
}
