//! End to end: the admin listener (`/healthz`, `/readyz`, `/status`, `/metrics`).

use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

/// The stand-in idp, the echo upstream, and [`reports_config`] on them.
async fn setup() -> (OAuth2StandIn, EchoUpstream, String) {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let echo = start_echo().await;
    let yaml = reports_config(&idp.token_url(), "", &echo.url());
    (idp, echo, yaml)
}

fn is_hex12(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_is_503_before_the_first_token_and_200_after() {
    let (idp, _echo, yaml) = setup().await;
    idp.set_delay(Duration::from_millis(1500));
    let gateway = Gateway::start(&yaml).await;
    let (code, body) = gateway.readyz().await;
    assert_eq!(code, 503, "{body}");
    let reason: Value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("/readyz 503 body is not JSON: {body}"));
    assert!(reason.is_object(), "{reason}");
    assert!(
        body.contains("idp"),
        "the reason should name the provider: {body}"
    );

    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "pending", "{status}");
    assert!(status["token_fingerprint"].is_null());
    assert!(status["seconds_to_expiry"].is_null());

    let healthz = gateway.admin_get("/healthz").await;
    assert_eq!(
        healthz.status(),
        200,
        "healthz is about the process, not tokens"
    );

    gateway.wait_ready().await;
    assert_eq!(gateway.readyz().await.0, 200);
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_state_expiry_and_a_fingerprint_never_the_token() {
    let (idp, _echo, yaml) = setup().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gateway = Gateway::start_ready(&yaml).await;
    let whole = gateway.status().await;
    let providers = whole["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{whole}");
    let status = &providers[0];
    assert_eq!(status["provider"], "idp");
    assert_eq!(status["state"], "valid");
    let to_expiry = status["seconds_to_expiry"].as_u64().unwrap();
    assert!((290..=300).contains(&to_expiry), "{status}");
    let last_refresh = status["last_refresh_unix"].as_u64().unwrap();
    assert!(
        last_refresh >= before && last_refresh <= before + 30,
        "{status}"
    );
    assert_eq!(status["consecutive_failures"], 0);
    assert!(status["last_error"].is_null(), "{status}");
    assert!(is_hex12(&status["token_fingerprint"]), "{status}");
    for key in [
        "provider",
        "state",
        "seconds_to_expiry",
        "last_refresh_unix",
        "consecutive_failures",
        "last_error",
        "retry_in_seconds",
        "token_fingerprint",
    ] {
        assert!(status.get(key).is_some(), "/status lacks {key}: {status}");
    }
    let text = whole.to_string();
    for token in idp.issued_tokens() {
        assert!(!text.contains(&token), "/status shows a token");
    }
    let fingerprint = status["token_fingerprint"].as_str().unwrap();
    assert!(!idp.issued_tokens()[0].contains(fingerprint));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_after_failures_shows_the_error_and_retry() {
    let (idp, _echo, yaml) = setup().await;
    idp.set_available(false);
    let gateway = Gateway::start(&yaml).await;
    let status = gateway.wait_failed("idp").await;
    assert_eq!(status["state"], "unavailable", "{status}");
    assert!(
        status["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert!(status["token_fingerprint"].is_null());
    assert!(status["last_refresh_unix"].is_null(), "{status}");
    let (code, _) = gateway.readyz().await;
    assert_eq!(code, 503);
    assert!(gateway.token_requests("idp", "login", "failure").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_happened() {
    let (idp, echo, yaml) = setup().await;
    let gateway = Gateway::start_ready(&yaml).await;
    for _ in 0..5 {
        assert_eq!(gateway.status_of("/reports/x").await, 200);
    }
    assert_eq!(gateway.status_of("/nope").await, 404);
    echo.respond_next_with(401, 1);
    assert_eq!(gateway.status_of("/reports/x").await, 200);
    assert_eq!(idp.token_requests(), 2);

    let text = gateway.metrics_after(7.0).await;
    let value = |query: &str| {
        sample(&text, query).unwrap_or_else(|| panic!("no sample {query} in:\n{text}"))
    };
    assert_eq!(
        value("tollgate_token_requests_total{kind=\"login\",outcome=\"success\",provider=\"idp\"}"),
        2.0
    );
    assert_eq!(
        value("tollgate_requests_total{route=\"reports\",code=\"200\"}"),
        6.0
    );
    let lookups = sample_sum(
        &text,
        "tollgate_token_cache_lookups_total",
        &[("provider", "idp")],
    );
    assert!(
        (6.0..=7.0).contains(&lookups),
        "one lookup per proxied request (and maybe one for the retry): {lookups}"
    );
    assert!(value("tollgate_token_cache_lookups_total{provider=\"idp\",result=\"hit\"}") >= 5.0);
    assert!(
        sample_sum(
            &text,
            "tollgate_upstream_retries_total",
            &[("route", "reports")]
        ) == 1.0,
        "one upstream retry:\n{text}"
    );
    assert!(sample_sum(&text, "tollgate_requests_total", &[("code", "404")]) == 1.0);
    assert!(
        value("tollgate_request_duration_seconds_count{route=\"reports\"}") >= 6.0,
        "request duration histogram"
    );
    assert!(value("tollgate_token_request_duration_seconds_count{provider=\"idp\"}") >= 2.0);
    let expiry = value("tollgate_token_expiry_timestamp_seconds{provider=\"idp\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 250.0 && expiry < now + 301.0,
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        sample_sum(&text, "tollgate_build_info", &[]),
        1.0,
        "build_info:\n{text}"
    );
    // No label carries a path.
    assert!(!text.contains("/reports/"), "a path in a label:\n{text}");
    assert!(!text.contains("/nope"), "a path in a label:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_and_proxy_listeners_are_separate() {
    let (_idp, echo, yaml) = setup().await;
    let gateway = Gateway::start_ready(&yaml).await;
    // The admin paths are not served on the proxy listener.
    gateway.refused("/metrics", 404, "no_route").await;
    // And proxy routes are not on the admin listener.
    let reply = gateway.admin_get("/reports/x").await;
    assert_ne!(reply.status(), 200);
    assert_eq!(echo.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_are_json_lines_by_default() {
    let (_idp, _echo, yaml) = setup().await;
    let gateway = Gateway::start_ready(&yaml).await;
    assert_eq!(gateway.status_of("/reports/x").await, 200);
    let logged = eventually(Duration::from_secs(2), || async {
        !gateway.stdout().trim().is_empty()
    })
    .await;
    assert!(logged, "nothing logged on stdout");
    let stdout = gateway.stdout();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_format_text_is_not_json() {
    let (_idp, _echo, yaml) = setup().await;
    let gateway = Gateway::start_with_args(&yaml, &["--log-format", "text"]).await;
    gateway.wait_ready().await;
    let stdout = gateway.stdout();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged on stdout");
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text format printed JSON:\n{stdout}"
    );
}
