//! End to end: the `bagid` provider type's four login flows, its nonce handling and its
//! refresh, against the BagID and attestor stand-ins, checked at the echo upstream.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tollgate_standins::bagid::{
    attestation_for, host_token, AttestorStandIn, BagIdSettings, BagIdStandIn, ATTESTATION_PATH,
    ATTESTATION_SUBJECT, B2B_SECRET_PATH, FEDERATED_PATH, GUEST_PATH, GUEST_SUBJECT, REFRESH_PATH,
};
use tollgate_standins::echo::EchoUpstream;

/// The keys of the `b2b_secret` flow with the stand-in's demo app key, secret and user.
fn b2b(base_url: &str, extra: &str) -> String {
    format!(
        "base_url: {base_url}\nflow: b2b_secret\napp_key: demo-app-key\nb2b_secret: demo-b2b-secret\nusername: svc\npassword: bagid-password\n{extra}"
    )
}

/// A config with the bagid provider `bagid` of these `keys` and [`bagid_route`] to `echo`.
fn bagid_config(keys: &str, echo: &EchoUpstream) -> String {
    config(
        &[provider("bagid", "bagid", keys)],
        &[bagid_route(echo, "bagid")],
    )
}

/// A route `/bagid/` injecting `Authorization: {token_type} {token}`.
fn bagid_route(echo: &EchoUpstream, provider: &str) -> String {
    route_injecting(
        "bagid",
        "/bagid/",
        &echo.url(),
        provider,
        "Authorization",
        "{token_type} {token}",
    )
}

/// A BagID stand-in issuing 2 s tokens, the echo upstream, and a ready gateway logging in
/// with the `b2b_secret` flow and renewing 1 s ahead ([`SHORT_REFRESH`]).
async fn short_lived_b2b() -> (BagIdStandIn, EchoUpstream, Gateway) {
    let bagid: BagIdStandIn = start_short_lived(BagIdSettings::default()).await;
    let echo = start_echo().await;
    let gateway =
        Gateway::start_ready(&bagid_config(&b2b(&bagid.url(), SHORT_REFRESH), &echo)).await;
    (bagid, echo, gateway)
}

/// A ready gateway with the bagid provider of `keys` and [`bagid_route`] to `echo`, whose
/// first request upstream carries a token `bagid` issued for `subject_of_token`.
async fn logged_in(
    bagid: &BagIdStandIn,
    keys: &str,
    echo: &EchoUpstream,
    subject_of_token: &str,
) -> Gateway {
    let gateway = Gateway::start_ready(&bagid_config(keys, echo)).await;
    let token = bagid_token(&gateway).await;
    assert!(bagid.is_valid_token(&token), "{token}");
    assert_eq!(subject(&token), subject_of_token);
    gateway
}

/// The last request BagID received is the login at `path`, presenting `nonce` and the
/// attestation object the attestor made for it.
fn assert_attested_login(bagid: &BagIdStandIn, path: &str, nonce: &str) {
    let login = bagid.last_request().unwrap();
    assert_eq!(login.path, path);
    assert_eq!(
        login.body_json(),
        Some(json!({"nonce": nonce, "attestationObject": attestation_for(nonce)}))
    );
}

/// The token of `Authorization: Bearer <token>` sent upstream through `/bagid/`.
async fn bagid_token(gateway: &Gateway) -> String {
    let value = gateway.upstream_header("/bagid/x", "Authorization").await;
    value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not `Bearer <token>` from tokenType: {value}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_b2b_secret_login_and_token_type_format() {
    let bagid: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let echo = start_echo().await;
    let gateway = logged_in(&bagid, &b2b(&bagid.url(), ""), &echo, "svc").await;
    assert_eq!(bagid.login_requests("b2b_secret"), 1);
    assert_eq!(bagid.nonce_requests(), 0);
    let login = bagid.last_request().unwrap();
    assert_eq!(login.path, B2B_SECRET_PATH);
    assert_eq!(login.header("x-source-app-key"), Some("demo-app-key"));
    assert_eq!(login.header("x-b2b-secret"), Some("demo-b2b-secret"));
    assert_eq!(
        login.body_json(),
        Some(json!({"username": "svc", "password": "bagid-password"}))
    );
    // expiresIn (300 s) gives the lifetime.
    let left = gateway.seconds_to_expiry("bagid").await;
    assert!((290..=300).contains(&left), "{left} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_federated_token_value() {
    let bagid: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let echo = start_echo().await;
    let host = host_token("host-user-1", Duration::from_secs(600));
    let keys = format!(
        "base_url: {}\nflow: federated\napp_key: demo-app-key\nfederated_token: {host}",
        bagid.url()
    );
    let _gateway = logged_in(&bagid, &keys, &echo, "host-user-1").await;
    assert_eq!(bagid.login_requests("federated"), 1);
    let login = bagid.last_request().unwrap();
    assert_eq!(login.path, FEDERATED_PATH);
    assert_eq!(login.header("x-source-app-key"), Some("demo-app-key"));
    assert_eq!(login.header("x-b2b-secret"), None);
    assert_eq!(login.body_json(), Some(json!({"token": host})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_federated_token_file_is_read_at_every_login() {
    // No refresh tokens and a 2 s lifetime: every renewal is a new federated login.
    let bagid: BagIdStandIn = start_short_lived(BagIdSettings {
        issue_refresh_tokens: false,
        ..BagIdSettings::default()
    })
    .await;
    let echo = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bagid-host-token");
    let first_host = host_token("host-user-a", Duration::from_secs(600));
    std::fs::write(&file, &first_host).unwrap();
    let keys = format!(
        "base_url: {}\nflow: federated\napp_key: demo-app-key\nfederated_token_file: {}\n{SHORT_REFRESH}",
        bagid.url(),
        file.display()
    );
    let yaml = bagid_config(&keys, &echo);
    let gateway = Gateway::start_ready(&yaml).await;
    let token = bagid_token(&gateway).await;
    assert_eq!(subject(&token), "host-user-a");
    assert_eq!(
        bagid.last_request().unwrap().body_json(),
        Some(json!({"token": first_host}))
    );

    // The mounted token is rotated (with the trailing newline of a Secret mount).
    let second_host = host_token("host-user-b", Duration::from_secs(600));
    std::fs::write(&file, format!("{second_host}\n")).unwrap();
    let switched = eventually(Duration::from_secs(3), || async {
        subject(&bagid_token(&gateway).await) == "host-user-b"
    })
    .await;
    assert!(
        switched,
        "the rotated host token was not used ({} logins)",
        bagid.login_requests("federated")
    );
    assert!(bagid.login_requests("federated") >= 2);
    assert_eq!(bagid.refresh_requests(), 0);
    let login = bagid.last_request().unwrap();
    assert_eq!(login.path, FEDERATED_PATH);
    assert_eq!(login.body_json(), Some(json!({"token": second_host})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_guest_with_an_http_attestor() {
    let bagid: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let attestor = AttestorStandIn::start().await.unwrap();
    let echo = start_echo().await;
    let keys = format!(
        "base_url: {}\nflow: guest\nattestor: {{ url: {}, timeout: 2s }}",
        bagid.url(),
        attestor.attest_url()
    );
    let _gateway = logged_in(&bagid, &keys, &echo, GUEST_SUBJECT).await;
    // Nonce first, then the attestor with that nonce, then the login with both.
    let nonces = bagid.issued_nonces();
    assert_eq!(nonces.len(), 1);
    assert_eq!(bagid.nonce_requests(), 1);
    assert_eq!(attestor.requests(), 1);
    assert_eq!(attestor.last_nonce().as_deref(), Some(nonces[0].as_str()));
    assert_eq!(bagid.login_requests("guest"), 1);
    assert_eq!(bagid.login_requests("attestation"), 0);
    assert_attested_login(&bagid, GUEST_PATH, &nonces[0]);
}

/// Whether `curl` can be run (the command attestor's script uses it).
fn have_curl() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_attestation_with_a_command_attestor() {
    if !have_curl() {
        eprintln!("SKIPPED: no curl for the command attestor script");
        return;
    }
    let bagid: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let attestor = AttestorStandIn::start().await.unwrap();
    let echo = start_echo().await;
    // The command: a script that records its arguments and asks the attestor stand-in for
    // the object of its last argument, the nonce.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("attest.sh");
    let args_file = dir.path().join("args");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s ' \"$@\" > '{args}'\nfor nonce; do :; done\n\
             curl -sS --noproxy '*' -X POST -H 'Content-Type: application/json' \
             -d \"{{\\\"nonce\\\":\\\"$nonce\\\"}}\" '{url}' \
             | sed -n 's/.*\"attestationObject\":\"\\([^\"]*\\)\".*/\\1/p'\n",
            args = args_file.display(),
            url = attestor.attest_url()
        ),
    )
    .unwrap();
    let keys = format!(
        "base_url: {}\nflow: attestation\nattestor:\n  command: [/bin/sh, \"{}\", --format, base64]\n  timeout: 5s",
        bagid.url(),
        script.display()
    );
    let _gateway = logged_in(&bagid, &keys, &echo, ATTESTATION_SUBJECT).await;
    let nonces = bagid.issued_nonces();
    assert_eq!(nonces.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        format!("--format base64 {} ", nonces[0]),
        "the nonce is the last argument"
    );
    assert_eq!(attestor.last_nonce().as_deref(), Some(nonces[0].as_str()));
    assert_eq!(bagid.login_requests("attestation"), 1);
    assert_eq!(bagid.login_requests("guest"), 0);
    assert_attested_login(&bagid, ATTESTATION_PATH, &nonces[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_nonce_that_expires_before_the_attestor_answers_is_not_used() {
    let bagid: BagIdStandIn = start_standin(BagIdSettings {
        nonce_ttl: Duration::from_secs(1),
        ..BagIdSettings::default()
    })
    .await;
    let attestor = AttestorStandIn::start().await.unwrap();
    attestor.set_delay(Duration::from_millis(1500));
    let echo = start_echo().await;
    let keys = format!(
        "base_url: {}\nflow: guest\nattestor: {{ url: {}, timeout: 3s }}\nrefresh: {{ min_backoff: 10s, max_backoff: 20s }}",
        bagid.url(),
        attestor.attest_url()
    );
    let yaml = bagid_config(&keys, &echo);
    let gateway = Gateway::start(&yaml).await;
    let status = gateway.wait_failed("bagid").await;
    let says_expired = |text: &str| {
        let lower = text.to_ascii_lowercase();
        lower.contains("nonce") && lower.contains("expired")
    };
    assert!(
        says_expired(status["last_error"].as_str().unwrap_or_default()),
        "{status}"
    );
    let Unavailable { body, detail, .. } =
        gateway.credential_unavailable("/bagid/x", "bagid").await;
    assert!(says_expired(&detail), "{body}");
    // The attestor did answer (late) for the one nonce, which was never presented.
    assert_eq!(bagid.nonce_requests(), 1);
    assert_eq!(attestor.requests(), 1);
    assert_eq!(
        attestor.last_nonce(),
        bagid.issued_nonces().first().cloned()
    );
    assert_eq!(bagid.login_requests("guest"), 0);
    assert!(bagid.issued_tokens().is_empty());
    assert_eq!(echo.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_short_access_token_is_refreshed_without_a_new_login() {
    let (bagid, _echo, gateway) = short_lived_b2b().await;
    let first = bagid_token(&gateway).await;
    let first_refresh = bagid.issued_tokens()[1].clone();
    let refreshed = eventually(Duration::from_millis(2500), || async {
        bagid.refresh_requests() >= 1
            && bagid.last_request().is_some_and(|r| r.path == REFRESH_PATH)
    })
    .await;
    assert!(refreshed, "no refresh call");
    // It presented the refresh token of the login.
    assert_eq!(
        bagid.last_request().unwrap().body_json(),
        Some(json!({"refreshToken": first_refresh}))
    );
    assert_eq!(
        bagid.login_requests("b2b_secret"),
        1,
        "a login, not a refresh"
    );
    let renewed = eventually(Duration::from_secs(1), || async {
        bagid_token(&gateway).await != first
    })
    .await;
    assert!(renewed, "the first token is still sent");
    let token = bagid_token(&gateway).await;
    assert!(bagid.is_valid_token(&token));
    let metrics = gateway.metrics().await;
    assert_eq!(token_request_failures(&metrics, "bagid"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_revoked_refresh_token_means_exactly_one_new_login() {
    let (bagid, _echo, gateway) = short_lived_b2b().await;
    assert_eq!(bagid.login_requests("b2b_secret"), 1);
    bagid.revoke_refresh_tokens();
    let relogged = eventually(Duration::from_millis(2500), || async {
        bagid.login_requests("b2b_secret") >= 2
    })
    .await;
    assert!(relogged, "no login after the refused refresh");
    assert!(bagid.refresh_requests() >= 1);
    // The new login's refresh token is used next; no more logins.
    let refreshed_again = eventually(Duration::from_millis(2500), || async {
        bagid.refresh_requests() >= 2
    })
    .await;
    assert!(refreshed_again, "{} refreshes", bagid.refresh_requests());
    assert_eq!(bagid.login_requests("b2b_secret"), 2, "a login loop");
    let token = bagid_token(&gateway).await;
    assert!(bagid.is_valid_token(&token));
    let metrics = gateway.metrics().await;
    let count = |kind: &str, outcome: &str| {
        sample(
            &metrics,
            &format!(
                "tollgate_token_requests_total{{provider=\"bagid\",kind=\"{kind}\",outcome=\"{outcome}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("refresh", "failure"), 1.0, "{metrics}");
    assert_eq!(count("login", "failure"), 0.0, "{metrics}");
    assert!(count("refresh", "success") >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_attestor_and_token_file_failures_are_clear() {
    let bagid: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let tampered = AttestorStandIn::start().await.unwrap();
    tampered.set_tampered(true);
    let down = AttestorStandIn::start().await.unwrap();
    down.set_available(false);
    let bagid_of_down: BagIdStandIn = start_standin(BagIdSettings::default()).await;
    let echo = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let guest = |name: &str, bagid: &BagIdStandIn, attestor: &AttestorStandIn| {
        provider(
            name,
            "bagid",
            &format!(
                "base_url: {}\nflow: guest\nattestor: {{ url: {} }}",
                bagid.url(),
                attestor.attest_url()
            ),
        )
    };
    let yaml = config(
        &[
            guest("tampered", &bagid, &tampered),
            guest("down", &bagid_of_down, &down),
            provider(
                "no-file",
                "bagid",
                &format!(
                    "base_url: {}\nflow: federated\napp_key: demo-app-key\nfederated_token_file: {}",
                    bagid.url(),
                    missing.display()
                ),
            ),
        ],
        &[
            route_injecting("tampered", "/tampered/", &echo.url(), "tampered", "Authorization", "{token_type} {token}"),
            route_injecting("down", "/down/", &echo.url(), "down", "Authorization", "{token_type} {token}"),
            route_injecting("no-file", "/no-file/", &echo.url(), "no-file", "Authorization", "{token_type} {token}"),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    for name in ["tampered", "down", "no-file"] {
        gateway.wait_failed(name).await;
    }
    // BagID refused the attestation object: a rejection, and the object does not show.
    let Unavailable { body, detail, .. } = gateway
        .credential_unavailable("/tampered/x", "tampered")
        .await;
    assert!(
        detail.contains("rejected") && detail.contains("401"),
        "{body}"
    );
    assert!(bagid.login_requests("guest") >= 1);
    // The attestor is down: said so, and BagID's login was never tried with nothing.
    let Unavailable { body, detail, .. } = gateway.credential_unavailable("/down/x", "down").await;
    let lower = detail.to_ascii_lowercase();
    assert!(
        lower.contains("attestor") && detail.contains("503"),
        "{body}"
    );
    assert!(down.requests() >= 1);
    assert!(bagid_of_down.nonce_requests() >= 1);
    assert_eq!(bagid_of_down.login_requests("guest"), 0);
    // The federated token file is missing: the detail names it.
    let Unavailable { body, detail, .. } = gateway
        .credential_unavailable("/no-file/x", "no-file")
        .await;
    assert!(
        detail.contains(missing.to_str().unwrap()),
        "the detail should name the file: {body}"
    );
    assert_eq!(bagid.login_requests("federated"), 0);
    assert!(bagid.issued_tokens().is_empty());
    assert_eq!(echo.request_count(), 0);
}
