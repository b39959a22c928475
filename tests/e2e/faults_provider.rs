//! End to end: providers that misbehave. Each fault gives its own error in the 503 detail,
//! `/status` and the logs; failed logins back off (with jitter, bounded by `max_backoff`)
//! instead of following the request rate; a refused refresh token costs one login; a
//! flapping provider or a token expiring under load never fails a request; TLS
//! certificates are checked unless a provider says otherwise (and then it is logged).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::tls::*;
use crate::common::*;
use serde_json::{json, Value};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::jwt;
use tollgate_standins::oauth2::OAuth2Settings;
use tollgate_standins::scripted::{Reply, ScriptedProvider};

/// A JWT whose `exp` was an hour ago.
fn expired_jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "svc", "iss": "scripted", "iat": now - 7200, "exp": now - 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(jwt::DEMO_KEY),
    )
    .unwrap()
}

struct Fault {
    name: &'static str,
    reply: Reply,
    /// Provider keys besides the long backoff.
    extra: &'static str,
    /// What the error must say (case-insensitive).
    expect: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_provider_fault_has_its_own_error_in_503_status_and_logs() {
    let expired = expired_jwt();
    let faults = vec![
        Fault {
            name: "slow",
            reply: Reply::token(Duration::from_secs(60)).after(Duration::from_secs(2)),
            extra: "timeout: 500ms",
            expect: &["did not answer within 500ms"],
        },
        Fault {
            name: "http500",
            reply: Reply::raw(500, "text/html", "<html>internal error</html>"),
            extra: "",
            expect: &["HTTP 500"],
        },
        Fault {
            name: "http503",
            reply: Reply::json(503, &json!({"error": "temporarily_unavailable"})),
            extra: "",
            expect: &["HTTP 503", "temporarily_unavailable"],
        },
        Fault {
            name: "garbage",
            reply: Reply::raw(200, "text/html", "<html><body>Welcome</body></html>"),
            extra: "",
            expect: &["not JSON"],
        },
        Fault {
            name: "truncated",
            reply: Reply::raw(
                200,
                "application/json",
                "{\"access_token\":\"eyJhbGciOiJIUzI1NiJ9.eyJzdWIi",
            ),
            extra: "",
            expect: &["truncated JSON"],
        },
        Fault {
            name: "notoken",
            reply: Reply::json(200, &json!({})),
            extra: "",
            expect: &["access_token"],
        },
        Fault {
            name: "expired",
            reply: Reply::json(
                200,
                &json!({"access_token": expired, "token_type": "Bearer"}),
            ),
            extra: "",
            expect: &["already expired"],
        },
        Fault {
            name: "cutoff",
            reply: Reply::cut_off(200, "application/json", "{\"access_token\":\"ab", 400),
            extra: "",
            expect: &["cut off"],
        },
        Fault {
            name: "hangup",
            reply: Reply::close(),
            extra: "",
            expect: &["unreachable"],
        },
    ];
    let echo = start_echo().await;
    let mut servers = Vec::new();
    let mut providers = Vec::new();
    let mut routes = Vec::new();
    for fault in &faults {
        let server = ScriptedProvider::start(fault.reply.clone()).await.unwrap();
        // A long backoff: one attempt each, so the error seen is the first one's.
        let extra = format!(
            "{}\nrefresh: {{ min_backoff: 30s, max_backoff: 30s }}",
            fault.extra
        );
        providers.push(oauth2(fault.name, &server.token_url(), &extra));
        routes.push(route(
            fault.name,
            &format!("/{}/", fault.name),
            &echo.url(),
            fault.name,
            "",
        ));
        servers.push(server);
    }
    let gateway = Gateway::start(&config(&providers, &routes)).await;

    for (fault, server) in faults.iter().zip(&servers) {
        let started = Instant::now();
        let refused = gateway
            .credential_unavailable(&format!("/{}/x", fault.name), fault.name)
            .await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(1500),
            "{}: the 503 took {elapsed:?}",
            fault.name
        );
        let detail = refused.detail;
        eprintln!("{}: {detail}", fault.name);
        let status = gateway.provider_status(fault.name).await;
        let last_error = status["last_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: /status has no last_error: {status}", fault.name));
        assert_eq!(status["state"], "unavailable", "{status}");
        let lines: Vec<Value> = gateway
            .log_lines()
            .into_iter()
            .filter(|line| line["provider"] == fault.name && line["error"].is_string())
            .collect();
        assert!(
            !lines.is_empty(),
            "{}: no log line with the provider's error:\n{}",
            fault.name,
            gateway.stdout()
        );
        for expected in fault.expect {
            let wanted = expected.to_ascii_lowercase();
            assert!(
                detail.to_ascii_lowercase().contains(&wanted),
                "{}: 503 detail lacks {expected:?}: {detail}",
                fault.name
            );
            assert!(
                last_error.to_ascii_lowercase().contains(&wanted),
                "{}: /status last_error lacks {expected:?}: {last_error}",
                fault.name
            );
            assert!(
                lines.iter().any(|line| line["error"]
                    .as_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains(&wanted)),
                "{}: no log line says {expected:?}: {lines:?}",
                fault.name
            );
        }
        assert_eq!(server.calls(), 1, "{}: one attempt only", fault.name);
    }
    // Nothing went upstream without a credential, and the expired token was not used.
    assert_eq!(echo.request_count(), 0);
    assert!(!gateway.logs().contains(&expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_logins_back_off_with_jitter_under_a_request_flood() {
    let provider = ScriptedProvider::start(Reply::json(
        503,
        &json!({"error": "temporarily_unavailable"}),
    ))
    .await
    .unwrap();
    let echo = start_echo().await;
    let yaml = reports_config(&provider.token_url(), FAST_REFRESH, &echo.url());
    let gateway = Arc::new(Gateway::start(&yaml).await);
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..4 {
        let gateway = Arc::clone(&gateway);
        loops.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while started.elapsed() < window {
                let sent = Instant::now();
                let refused = gateway.credential_unavailable("/reports/x", "idp").await;
                seen.push((sent.elapsed(), refused.retry_after));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }
    let mut answers = Vec::new();
    for task in loops {
        answers.extend(task.await.unwrap());
    }
    let end = Instant::now();
    assert!(answers.len() >= 100, "only {} requests", answers.len());
    for (latency, retry) in &answers {
        assert!(
            *latency < Duration::from_secs(1),
            "a request waited {latency:?} instead of failing fast"
        );
        // Derived from the backoff: at least a second, at most max_backoff (1 s).
        assert_eq!(*retry, 1, "Retry-After {retry} with max_backoff 1s");
    }

    let times = provider.call_times();
    let first = times[0];
    let span = end.duration_since(first);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "{} provider calls in {span:?} for {} requests; gaps {gaps:?}",
        times.len(),
        answers.len()
    );
    // The backoff floor per step: 200ms, then [200,400], [400,800], then [500ms,1s].
    let floors = |step: usize| match step {
        0 | 1 => 0.2,
        2 => 0.4,
        _ => 0.5,
    };
    let ceilings = |step: usize| match step {
        0 => 0.2,
        1 => 0.4,
        2 => 0.8,
        _ => 1.0,
    };
    for (step, gap) in gaps.iter().enumerate() {
        let gap = gap.as_secs_f64();
        assert!(
            gap >= floors(step) * 0.95,
            "gap {step} is {gap:.3}s, under the backoff floor {}: {gaps:?}",
            floors(step)
        );
        assert!(
            gap <= ceilings(step) + 0.3,
            "gap {step} is {gap:.3}s, over the backoff ceiling {} (max_backoff 1s): {gaps:?}",
            ceilings(step)
        );
    }
    // Most attempts the floors allow in the span, and fewest the ceilings allow.
    let count_within = |delay: &dyn Fn(usize) -> f64, slack: f64| {
        let (mut at, mut count, mut step) = (0.0, 1, 0);
        loop {
            at += delay(step) + slack;
            if at > span.as_secs_f64() {
                return count;
            }
            count += 1;
            step += 1;
        }
    };
    let most = count_within(&|s| floors(s) * 0.95, 0.0);
    let fewest = count_within(&ceilings, 0.3);
    assert!(
        (fewest..=most).contains(&times.len()),
        "{} provider calls in {span:?}; the backoff allows {fewest}..={most}",
        times.len()
    );
    assert!(
        most <= 9,
        "the bound itself is loose: {most} calls in {span:?}"
    );
    // The delays grow: the late ones are well above the first.
    let late: f64 =
        gaps[3..].iter().map(Duration::as_secs_f64).sum::<f64>() / (gaps.len() - 3) as f64;
    assert!(
        late >= 2.0 * gaps[0].as_secs_f64(),
        "the backoff does not grow: {gaps:?}"
    );
    assert_eq!(echo.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_refresh_token_costs_exactly_one_new_login() {
    let (idp, _echo, gateway) = short_lived_reports(oauth2_with_refresh_tokens()).await;
    assert_eq!(idp.grant_requests("client_credentials"), 1);
    // The stand-in forgets every token it issued: the held refresh token is now refused.
    idp.revoke_all();

    // The refresh is due 1 s after the login; by 2.6 s the new session has refreshed too.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2600) {
        let (status, _, body) = gateway.get_json("/reports/x").await;
        assert_eq!(status, 200, "at {:?}: {body}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logins = idp.grant_requests("client_credentials");
    let refreshes = idp.grant_requests("refresh_token");
    assert_eq!(
        logins, 2,
        "a refused refresh token must cost one login, no more (refresh grants: {refreshes})"
    );
    assert!(
        (2..=3).contains(&refreshes),
        "the refused refresh, then the new session's refreshes: {refreshes}"
    );
    let failed_refreshes = gateway.token_requests("idp", "refresh", "failure").await;
    assert_eq!(failed_refreshes, 1.0);
    let status = gateway.provider_status("idp").await;
    assert_eq!(status["state"], "valid", "{status}");
    // The new session's refresh token works: the last refresh succeeded.
    assert!(gateway.token_requests("idp", "refresh", "success").await >= 1.0);
}

/// A scripted provider issuing tokens that live `ttl`, an echo upstream that keeps no record
/// (these tests send thousands of requests), and a ready gateway on [`reports_config`]
/// with the `refresh` keys.
async fn scripted_under_load(
    ttl: Duration,
    refresh: &str,
) -> (ScriptedProvider, EchoUpstream, Gateway) {
    let provider = ScriptedProvider::start(Reply::token(ttl)).await.unwrap();
    let echo = start_echo().await;
    echo.set_recording(false);
    let yaml = reports_config(&provider.token_url(), refresh, &echo.url());
    (provider, echo, Gateway::start_ready(&yaml).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_provider_never_fails_a_request_while_a_token_is_valid() {
    let ttl = Duration::from_secs(2);
    let (provider, _echo, gateway) = scripted_under_load(ttl, FAST_REFRESH).await;
    let login = provider.call_times()[0];

    // Down and up for 400 ms each; the first down phase starts just before the refresh
    // (due 1 s after the login, half the lifetime) so the refresh meets it.
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let stop = Arc::clone(&stop);
        let down = Reply::json(503, &json!({"error": "temporarily_unavailable"}));
        let up = Reply::token(ttl);
        let provider = &provider;
        async move {
            let mut phase_start = login + Duration::from_millis(900);
            let mut is_down = true;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep_until(phase_start.into()).await;
                provider.set_default(if is_down { down.clone() } else { up.clone() });
                is_down = !is_down;
                phase_start += Duration::from_millis(400);
            }
            provider.set_default(up);
        }
    };
    let requests = async {
        let started = Instant::now();
        let mut statuses = BTreeMap::new();
        let mut failures = Vec::new();
        while started.elapsed() < Duration::from_secs(6) {
            let reply = gateway.get("/reports/x").await;
            let status = reply.status().as_u16();
            *statuses.entry(status).or_insert(0) += 1;
            if status != 200 {
                failures.push((started.elapsed(), reply.text().await.unwrap_or_default()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::SeqCst);
        (statuses, failures)
    };
    let ((statuses, failures), ()) = tokio::join!(requests, flapper);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(statuses[&200] >= 100, "{statuses:?}");
    let failed = gateway.token_requests("idp", "login", "failure").await;
    let succeeded = gateway.token_requests("idp", "login", "success").await;
    eprintln!("flapping: {failed} failed and {succeeded} good logins; {statuses:?}");
    assert!(
        failed >= 1.0,
        "the provider never failed a login: the test did not flap it"
    );
    assert!(
        succeeded >= 3.0,
        "only {succeeded} good logins in 6 s of 2 s tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_expiring_under_200_concurrent_clients_fail_nothing() {
    let ttl = Duration::from_secs(2);
    // Renewed 200 ms before expiry, which is also when the token stops being used: the
    // renewal and the expiry meet under load.
    let refresh = "refresh: { before_expiry: 200ms, min_backoff: 200ms, max_backoff: 1s }";
    let (provider, echo, gateway) = scripted_under_load(ttl, refresh).await;
    echo.set_reflect(false);

    let window = Duration::from_secs(6); // three lifetimes
    let client = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        let url = gateway.proxy_url(&format!("/reports/client/{i}"));
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            while started.elapsed() < window {
                let outcome = match client.get(&url).send().await {
                    Ok(reply) => reply.status().as_u16().to_string(),
                    Err(error) => format!("error: {error}"),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
            outcomes
        }));
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        for (outcome, count) in task.await.unwrap() {
            *outcomes.entry(outcome).or_insert(0) += count;
        }
    }
    let end = Instant::now();
    let total: usize = outcomes.values().sum();
    eprintln!("{total} requests from 200 clients in {window:?}: {outcomes:?}");
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        ["200"],
        "failed requests: {outcomes:?}"
    );
    assert!(total >= 1000, "only {total} requests: no load");

    // One login per renewal period (lifetime − 200 ms = 1.8 s) since the first.
    let calls = provider.calls();
    let since_login = end.duration_since(provider.call_times()[0]).as_secs_f64();
    let expected = 1 + (since_login / 1.8).floor() as usize;
    assert!(
        (expected - 1..=expected + 1).contains(&calls),
        "{calls} provider calls in {since_login:.1}s of 2 s tokens; expected about {expected}"
    );
    assert_eq!(gateway.token_requests("idp", "login", "failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_tls_is_verified_unless_explicitly_turned_off_which_is_logged() {
    let pki = Pki::new("tollgate test CA");
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let relay = TlsRelay::start(&pki.server("relay", 2040), idp.addr()).await;
    let token_url = format!("{}/oauth/token", relay.url());
    let echo = start_echo().await;
    let ca = yaml_path(&pki.ca_file());
    let long = "refresh: { min_backoff: 30s, max_backoff: 30s }";
    let yaml = config(
        &[
            oauth2("by-default", &token_url, long),
            oauth2(
                "with-ca",
                &token_url,
                &format!("{long}\ntls: {{ ca_file: {ca} }}"),
            ),
            oauth2(
                "unverified",
                &token_url,
                &format!("{long}\ntls: {{ insecure_skip_verify: true }}"),
            ),
        ],
        &[
            route("by-default", "/by-default/", &echo.url(), "by-default", ""),
            route("with-ca", "/with-ca/", &echo.url(), "with-ca", ""),
            route("unverified", "/unverified/", &echo.url(), "unverified", ""),
        ],
    );
    let gateway = Gateway::start(&yaml).await;

    let (status, _, body) = gateway.get_json("/by-default/x").await;
    assert_eq!(status, 503, "an unknown CA was accepted: {body}");
    let detail = body["detail"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        detail.contains("certificate"),
        "the detail does not say the certificate was refused: {detail}"
    );
    assert_ca_file_trusted_and_skip_verify_skips(&gateway).await;
    // Two logins through TLS, none from the default provider (its handshake failed).
    assert_eq!(idp.token_requests(), 2);
    assert_one_verification_off_warning(&gateway, "provider");
}
