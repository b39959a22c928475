//! End to end: the token lifecycle as requests see it. Single flight on a cold cache,
//! refresh ahead of expiry, serving a valid token while the provider is down, 503 and
//! backoff when there is none, lifetimes from `expires_in`, JWT `exp` or `default_ttl`,
//! refresh tokens.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;
use tollgate_standins::oauth2::OAuth2Settings;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_on_a_cold_cache_make_one_login() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    // A slow login, so that every request arrives while the first login is in flight.
    idp.set_delay(Duration::from_millis(1500));
    let echo = start_echo().await;
    echo.set_recording(false);
    let yaml = reports_config(&idp.token_url(), "", &echo.url());
    let gateway = Gateway::start(&yaml).await;
    // Not ready: the login is still running.
    assert_eq!(gateway.readyz().await.0, 503);

    let client = client();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(1000);
    for i in 0..1000 {
        let client = client.clone();
        let url = gateway.proxy_url(&format!("/reports/item/{i}"));
        tasks.push(tokio::spawn(async move {
            match client.get(url).send().await {
                Ok(reply) => reply.status().as_u16(),
                Err(error) => panic!("request {i} failed: {error}"),
            }
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(statuses.get(&200), Some(&1000), "statuses: {statuses:?}");
    assert_eq!(
        idp.token_requests(),
        1,
        "concurrent misses must share one login"
    );
    assert_eq!(echo.request_count(), 1000);
    eprintln!("1000 requests on a cold cache took {elapsed:?}");

    let misses = gateway
        .metric("tollgate_token_cache_lookups_total{provider=\"idp\",result=\"miss\"}")
        .await;
    let hits = gateway
        .metric("tollgate_token_cache_lookups_total{provider=\"idp\",result=\"hit\"}")
        .await;
    assert_eq!(misses + hits, 1000.0, "one lookup per request");
    assert!(
        misses >= 100.0,
        "only {misses} requests met the cold cache: the test did not pile them up"
    );
    assert_eq!(gateway.token_requests("idp", "login", "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_tokens_are_refreshed_ahead_with_no_failed_request() {
    let ttl = Duration::from_secs(2);
    let before_expiry = Duration::from_millis(500);
    let window = Duration::from_secs(6); // three lifetimes
    let idp = start_oauth2(OAuth2Settings::default()).await;
    idp.set_token_ttl(ttl);
    let refresh = "refresh: { before_expiry: 500ms, min_backoff: 200ms, max_backoff: 1s }";
    let (_echo, gateway) = reports_gateway(&idp, refresh).await;
    gateway.wait_ready().await;
    assert_eq!(idp.token_requests(), 1);

    let started = Instant::now();
    let mut seen = Vec::new();
    let mut n = 0;
    while started.elapsed() < window {
        n += 1;
        let (status, _, body) = gateway.get_json(&format!("/reports/{n}")).await;
        assert_eq!(
            status,
            200,
            "request {n} at {:?}: {body}",
            started.elapsed()
        );
        let token = bearer(body["headers"]["authorization"].as_str().unwrap())
            .unwrap()
            .to_owned();
        assert!(
            idp.is_valid_token(&token),
            "request {n} at {:?} carried an expired token",
            started.elapsed()
        );
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A refresh every (ttl - before_expiry), plus the first login.
    let interval = ttl - before_expiry;
    let expected = 1 + (window.as_secs_f64() / interval.as_secs_f64()).floor() as usize;
    let logins = idp.token_requests();
    assert!(
        logins + 1 >= expected && logins <= expected + 1,
        "expected about {expected} logins in {window:?}, saw {logins}"
    );
    assert!(
        seen.len() + 1 >= expected,
        "the upstream saw only {} distinct tokens",
        seen.len()
    );
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "an old token came back");
    assert_eq!(gateway.token_requests("idp", "login", "failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_down_with_a_valid_token_keeps_serving_it() {
    // Lifetime 6 s, refresh due at half of it: the refresh fails from 3 s on, while the
    // token is good until 5.4 s. The requests wait for the failed refresh, not a clock,
    // and take a fraction of the 2.4 s left.
    let idp = start_oauth2(OAuth2Settings::default()).await;
    idp.set_token_ttl(Duration::from_secs(6));
    let refresh = "refresh: { before_expiry: 3s, min_backoff: 200ms, max_backoff: 400ms }";
    let (_echo, gateway) = reports_gateway(&idp, refresh).await;
    gateway.wait_ready().await;
    idp.set_available(false);
    let token = idp.issued_tokens()[0].clone();
    let failed = eventually(Duration::from_secs(8), || async {
        gateway.token_requests("idp", "login", "failure").await >= 1.0
    })
    .await;
    assert!(failed, "no failed refresh: {}", gateway.metrics().await);

    for n in 0..20 {
        let (status, _, body) = gateway.get_json("/reports/x").await;
        assert_eq!(status, 200, "request {n}: {body}");
        assert_eq!(body["headers"]["authorization"], format!("Bearer {token}"));
    }
    assert!(idp.token_requests() >= 2, "the refresh was not attempted");
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "valid_refresh_failing", "{status}");
    assert!(
        status["consecutive_failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(status["last_error"].is_string(), "{status}");
    assert_eq!(gateway.readyz().await.0, 200, "a valid token is still held");

    // Back up: the next attempt gets a new token and requests carry it.
    idp.set_available(true);
    gateway
        .wait_for_state("idp", "valid", Duration::from_secs(3))
        .await;
    let now = gateway.bearer_upstream("/reports/x").await;
    assert_ne!(now, token);
    assert!(idp.is_valid_token(&now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_down_and_no_token_is_503_and_never_forwarded() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    idp.set_available(false);
    let (echo, gateway) =
        reports_gateway(&idp, "refresh: { min_backoff: 1s, max_backoff: 4s }").await;
    let started = Instant::now();
    for i in 0..20 {
        let request_started = Instant::now();
        let refused = gateway
            .credential_unavailable(&format!("/reports/{i}"), "idp")
            .await;
        assert_eq!(refused.body["route"], "reports", "request {i}");
        assert!(
            request_started.elapsed() < Duration::from_secs(3),
            "a 503 should not wait out the backoff"
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(
        echo.request_count(),
        0,
        "a request went upstream without its credential"
    );
    // Startup login plus the retries the backoff allows in `elapsed` (1 s, then 1-2 s...).
    let calls = idp.token_requests();
    let allowed = 2 + elapsed.as_secs() as usize;
    assert!(
        (1..=allowed).contains(&calls),
        "{calls} provider calls for 20 requests in {elapsed:?}"
    );
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "unavailable", "{status}");
    assert!(status["token_fingerprint"].is_null(), "{status}");
    assert!(status["consecutive_failures"].as_u64().unwrap() >= 1);
    assert_eq!(gateway.readyz().await.0, 503);
    let text = gateway.metrics_after(20.0).await;
    assert_eq!(
        sample(
            &text,
            "tollgate_credential_unavailable_total{route=\"reports\"}"
        ),
        Some(20.0)
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_requests_total{route=\"reports\",code=\"503\"}"
        ),
        Some(20.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_comes_back_after_failures() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    idp.set_available(false);
    let (echo, gateway) = reports_gateway(&idp, "").await;
    assert_eq!(gateway.status_of("/reports/x").await, 503);
    idp.set_available(true);
    // max_backoff is 1 s: the background retry logs in within about a second.
    gateway.wait_ready().await;
    let (status, _, body) = gateway.get_json("/reports/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo.request_count(), 1);
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "valid");
    assert_eq!(status["consecutive_failures"], 0);
}

/// `seconds_to_expiry` right after the first login, from a stand-in with the default
/// settings as `configure` changes them and a provider with `default_ttl: 120s`.
async fn lifetime_seen(configure: impl FnOnce(&mut OAuth2Settings)) -> u64 {
    let mut settings = OAuth2Settings::default();
    configure(&mut settings);
    let idp = start_oauth2(settings).await;
    let (_echo, gateway) = reports_gateway(&idp, "refresh: { default_ttl: 120s }").await;
    gateway.wait_ready().await;
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "valid", "{status}");
    gateway.seconds_to_expiry("idp").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifetime_from_expires_in() {
    let seconds = lifetime_seen(|idp| idp.token_ttl = Duration::from_secs(900)).await;
    assert!((895..=900).contains(&seconds), "{seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifetime_from_the_jwt_exp_without_expires_in() {
    let seconds = lifetime_seen(|idp| {
        idp.token_ttl = Duration::from_secs(600);
        idp.include_expires_in = false;
    })
    .await;
    assert!((594..=600).contains(&seconds), "{seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifetime_from_default_ttl_for_opaque_tokens() {
    let seconds = lifetime_seen(|idp| {
        idp.token_ttl = Duration::from_secs(600);
        idp.include_expires_in = false;
        idp.jwt_access_tokens = false;
    })
    .await;
    assert!((115..=120).contains(&seconds), "{seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_token_is_used_when_the_provider_issues_one() {
    let (idp, _echo, gateway) = short_lived_reports(oauth2_with_refresh_tokens()).await;
    let started = Instant::now();
    let mut tokens = BTreeSet::new();
    // Refreshes are due every second: after about 2.5 s, two have happened.
    while started.elapsed() < Duration::from_millis(2500) {
        tokens.insert(gateway.upstream_header("/reports/x", "Authorization").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        idp.grant_requests("refresh_token") >= 1,
        "no refresh_token grant; grants: cc={} rt={}",
        idp.grant_requests("client_credentials"),
        idp.grant_requests("refresh_token")
    );
    assert_eq!(
        idp.grant_requests("client_credentials"),
        1,
        "the refresh token should replace further logins"
    );
    assert!(tokens.len() >= 2, "the upstream saw one token only");
    // Each refresh token is single use: a reuse would have failed and forced a login.
    assert!(gateway.token_requests("idp", "refresh", "success").await >= 1.0);
    assert_eq!(
        gateway.token_requests("idp", "refresh", "failure").await,
        0.0
    );
}
