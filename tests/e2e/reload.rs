//! End to end: config reload. A route change under load drops no request, SIGHUP reloads
//! at once, unchanged providers keep their token while changed ones log in again and
//! removed ones go, an invalid file is refused while the old config keeps serving, and a
//! `server` section change is only logged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

/// The gateway polls its config file every 2 s; a file change is seen within this.
const POLL_SEEN: Duration = Duration::from_secs(4);

/// A config with `provider` (the block of `idp`) and, for each `(name, upstream)`, the
/// route `/{name}/` to that upstream on idp's token.
fn routes_to(provider: &str, routes: &[(&str, &EchoUpstream)]) -> String {
    let routes: Vec<String> = routes
        .iter()
        .map(|(name, upstream)| route(name, &format!("/{name}/"), &upstream.url(), "idp", ""))
        .collect();
    config(&[provider.to_owned()], &routes)
}

/// The stand-in idp, the echo upstream, and `N` configs on them: the first with the route
/// `/a/`, each next one with one route more (`/b/`, `/c/`...).
async fn growing_configs<const N: usize>() -> (OAuth2StandIn, EchoUpstream, [String; N]) {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let echo = start_echo().await;
    let provider = oauth2("idp", &idp.token_url(), "");
    let names = ["a", "b", "c", "d"];
    let configs = std::array::from_fn(|i| {
        let routes: Vec<(&str, &EchoUpstream)> = names[..=i].iter().map(|n| (*n, &echo)).collect();
        routes_to(&provider, &routes)
    });
    (idp, echo, configs)
}

/// `tollgate_config_reloads_total{outcome}`.
async fn reload_count(gateway: &Gateway, outcome: &str) -> f64 {
    gateway
        .metric(&format!(
            "tollgate_config_reloads_total{{outcome=\"{outcome}\"}}"
        ))
        .await
}

/// Waits until `tollgate_config_reloads_total{outcome}` reaches `count`.
async fn wait_reloads(gateway: &Gateway, outcome: &str, count: f64, within: Duration) {
    let reached = eventually(within, || async {
        reload_count(gateway, outcome).await >= count
    })
    .await;
    assert!(
        reached,
        "config_reloads_total{{outcome={outcome}}} did not reach {count} within {within:?} (it is {})",
        reload_count(gateway, outcome).await
    );
}

/// Writes `yaml` and waits for its reload to be refused, the `nth` refusal so far, with an
/// error (logged) that names `key`.
async fn refused_naming(gateway: &Gateway, yaml: &str, nth: usize, key: &str) {
    gateway.rewrite_config(yaml);
    wait_reloads(gateway, "failure", nth as f64, POLL_SEEN).await;
    let errors: Vec<String> = gateway
        .log_events_once(
            "config reload refused; the previous config keeps serving",
            nth,
        )
        .await
        .iter()
        .map(|e| e["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(errors.len(), nth, "{errors:?}");
    assert!(
        errors[nth - 1].contains(key),
        "the error does not name the key: {}",
        errors[nth - 1]
    );
}

/// The token fingerprint `/status` shows for `provider`.
async fn fingerprint(gateway: &Gateway, provider: &str) -> String {
    let entry = gateway.provider_status(provider).await;
    entry["token_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("{provider} has no token fingerprint: {entry}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_change_under_load_fails_no_request() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let echo1 = start_echo().await;
    let echo2 = start_echo().await;
    echo1.set_recording(false);
    echo2.set_recording(false);
    let provider = oauth2("idp", &idp.token_url(), "");
    let before = routes_to(&provider, &[("a", &echo1)]);
    let after = routes_to(&provider, &[("a", &echo2), ("b", &echo1)]);
    let gateway = Arc::new(Gateway::start(&before).await);
    gateway.wait_ready().await;
    assert_eq!(
        gateway.status_of("/b/x").await,
        404,
        "route b before the reload"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = client();
    let mut clients = Vec::new();
    for c in 0..20 {
        let (stop, sent, failures, client) =
            (stop.clone(), sent.clone(), failures.clone(), client.clone());
        let url = gateway.proxy_url(&format!("/a/client/{c}"));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send().await {
                    Ok(reply) if reply.status() == 200 => {
                        // Read the body: a reply cut short is a failure too.
                        if let Err(error) = reply.bytes().await {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("#{n}: body: {error}"));
                        }
                    }
                    Ok(reply) => {
                        let status = reply.status();
                        let body = reply.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("#{n}: {status} {body}"));
                    }
                    Err(error) => failures.lock().unwrap().push(format!("#{n}: {error:?}")),
                }
            }
        }));
    }

    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(echo1.request_count() > 0, "no load reached echo1");
    assert_eq!(echo2.request_count(), 0);
    gateway.rewrite_config(&after);
    // The poll sees the change within 2 s; let the load run on well past it.
    wait_reloads(&gateway, "success", 1.0, POLL_SEEN).await;
    let reloaded_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echo1_settled = echo1.request_count();
    let echo2_at_settle = echo2.request_count();
    let remaining = Duration::from_secs(6).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining.max(Duration::from_secs(1))).await;
    stop.store(true, Ordering::Relaxed);
    for task in clients {
        task.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    let total = sent.load(Ordering::Relaxed);
    eprintln!(
        "{total} requests in {:?}, reload seen at {reloaded_at:?}; echo1 {}, echo2 {}",
        started.elapsed(),
        echo1.request_count(),
        echo2.request_count()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed across the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total > 100, "only {total} requests: the load was too light");
    assert!(echo2_at_settle > 0, "echo2 got nothing after the reload");
    assert!(
        echo2.request_count() > echo2_at_settle,
        "echo2 stopped getting route a's requests"
    );
    assert_eq!(
        echo1.request_count(),
        echo1_settled,
        "route a still went to echo1 a second after the reload"
    );
    let (status, _, body) = gateway.get_json("/b/after").await;
    assert_eq!(status, 200, "route b after the reload: {body}");
    assert_eq!(
        echo1.request_count(),
        echo1_settled + 1,
        "route b goes to echo1"
    );
    assert_eq!(reload_count(&gateway, "success").await, 1.0);
    assert_eq!(reload_count(&gateway, "failure").await, 0.0);
    assert_eq!(
        idp.token_requests(),
        1,
        "the unchanged provider logged in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_at_once() {
    let (idp, _echo, [one, two]) = growing_configs().await;
    let gateway = Gateway::start_ready(&one).await;

    // The file is unchanged, so only the signal can cause this reload.
    gateway.signal("HUP");
    wait_reloads(&gateway, "success", 1.0, Duration::from_secs(3)).await;
    let reloads = gateway.log_events_once("config reloaded", 1).await;
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["trigger"], "SIGHUP", "{}", reloads[0]);

    // A changed file with a SIGHUP right after it is applied at once.
    assert_eq!(gateway.status_of("/b/x").await, 404);
    gateway.rewrite_config(&two);
    let signalled = Instant::now();
    gateway.signal("HUP");
    let applied = eventually(Duration::from_secs(3), || async {
        gateway.status_of("/b/x").await == 200
    })
    .await;
    assert!(applied, "route b not served within 3 s of SIGHUP");
    eprintln!("route b served {:?} after SIGHUP", signalled.elapsed());
    let reloads = gateway.log_events_once("config reloaded", 2).await;
    assert!(
        reloads.iter().filter(|e| e["trigger"] == "SIGHUP").count() >= 2,
        "{reloads:?}"
    );
    assert_eq!(reload_count(&gateway, "failure").await, 0.0);
    assert_eq!(idp.token_requests(), 1);
}

/// A SIGHUP reload records the file's digest, so the next 2 s poll does not see the file
/// as changed and reload the same content a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sighup_reload_is_not_repeated_by_the_file_poll() {
    let (_idp, _echo, [one, two, three]) = growing_configs().await;
    let gateway = Gateway::start_ready(&one).await;
    gateway.rewrite_config(&two);
    gateway.signal("HUP");
    wait_reloads(&gateway, "success", 1.0, Duration::from_secs(3)).await;
    // The barrier: a third config, picked up by the poll. The poll runs in one loop, so a
    // reload of what SIGHUP already loaded would come before this one.
    gateway.rewrite_config(&three);
    let barrier = eventually(Duration::from_secs(5), || async {
        gateway.log_events("config reloaded").iter().any(|e| {
            e["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("3 routes"))
        })
    })
    .await;
    assert!(
        barrier,
        "the third config was not reloaded:\n{}",
        gateway.logs()
    );
    let triggers: Vec<String> = gateway
        .log_events("config reloaded")
        .iter()
        .map(|e| e["trigger"].as_str().unwrap_or_default().to_owned())
        .collect();
    // The poll may have beaten the signal (then "file change" comes first); what must not
    // happen is a poll reloading the content the signal already loaded.
    let last_sighup = triggers.iter().rposition(|t| t == "SIGHUP");
    assert!(last_sighup.is_some(), "no SIGHUP reload: {triggers:?}");
    assert_eq!(
        last_sighup,
        Some(triggers.len() - 2),
        "the file poll reloaded what SIGHUP had loaded: {triggers:?}"
    );
    assert_eq!(triggers.last().map(String::as_str), Some("file change"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_providers_keep_their_token_changed_ones_log_in_removed_ones_go() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let other = start_oauth2(OAuth2Settings::default()).await;
    let echo = start_echo().await;
    let idp_v1 = oauth2("idp", &idp.token_url(), "scopes: [reports.read]");
    let idp_v2 = oauth2(
        "idp",
        &idp.token_url(),
        "scopes: [reports.read, reports.write]",
    );
    let other_block = oauth2("other", &other.token_url(), "");
    let other_route = route("o", "/o/", &echo.url(), "other", "");
    let start = config(
        &[idp_v1.clone(), other_block.clone()],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            other_route.clone(),
        ],
    );
    // Only the routes change: a new route on idp.
    let routes_only = config(
        &[idp_v1.clone(), other_block.clone()],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("a2", "/a2/", &echo.url(), "idp", ""),
            other_route.clone(),
        ],
    );
    // idp's scopes change, and `other` goes with its route.
    let provider_changed = config(
        &[idp_v2],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("a2", "/a2/", &echo.url(), "idp", ""),
        ],
    );

    let gateway = Gateway::start(&start).await;
    gateway.wait_ready().await;
    assert_eq!(idp.token_requests(), 1);
    assert_eq!(other.token_requests(), 1);
    let token1 = gateway.bearer_upstream("/a/x").await;
    let fingerprint1 = fingerprint(&gateway, "idp").await;

    gateway.rewrite_config(&routes_only);
    wait_reloads(&gateway, "success", 1.0, POLL_SEEN).await;
    assert_eq!(
        gateway.bearer_upstream("/a2/x").await,
        token1,
        "new route, kept token"
    );
    assert_eq!(gateway.bearer_upstream("/a/x").await, token1);
    assert_eq!(fingerprint(&gateway, "idp").await, fingerprint1);
    assert_eq!(
        idp.token_requests(),
        1,
        "an unchanged provider logged in again"
    );
    assert_eq!(
        other.token_requests(),
        1,
        "an unchanged provider logged in again"
    );
    let summary = gateway.log_events_once("config reloaded", 1).await[0]["summary"].clone();
    assert!(
        summary.as_str().is_some_and(|s| s.contains("2 kept")),
        "reload summary: {summary}"
    );

    gateway.rewrite_config(&provider_changed);
    wait_reloads(&gateway, "success", 2.0, POLL_SEEN).await;
    // Counted by the gateway once the new token is in its cache.
    let logged_in = eventually(Duration::from_secs(3), || async {
        gateway.token_requests("idp", "login", "success").await >= 2.0
    })
    .await;
    assert!(logged_in, "the changed provider did not log in again");
    let token2 = gateway.bearer_upstream("/a/x").await;
    assert_ne!(
        token2, token1,
        "requests still carry the old provider's token"
    );
    assert_eq!(
        idp.issued_tokens().last(),
        Some(&token2),
        "requests do not carry the newest token"
    );
    assert_eq!(
        idp.last_request()
            .and_then(|r| r.param("scope").map(str::to_owned)),
        Some("reports.read reports.write".to_owned()),
        "the new login does not use the new scopes"
    );
    assert_eq!(gateway.bearer_upstream("/a2/x").await, token2);
    assert_ne!(fingerprint(&gateway, "idp").await, fingerprint1);
    assert_eq!(
        idp.token_requests(),
        2,
        "one login for the changed provider"
    );
    let status = gateway.status().await;
    let providers = status["providers"].as_array().unwrap();
    assert!(
        providers.iter().all(|p| p["provider"] != "other"),
        "the removed provider is still in /status: {providers:?}"
    );
    assert_eq!(gateway.status_of("/o/x").await, 404, "the removed route");
    assert_eq!(
        other.token_requests(),
        1,
        "the removed provider logged in again"
    );
    assert_eq!(reload_count(&gateway, "failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let idp = start_oauth2(OAuth2Settings::default()).await;
    let echo1 = start_echo().await;
    let echo2 = start_echo().await;
    let provider = oauth2("idp", &idp.token_url(), "");
    let good = routes_to(&provider, &[("a", &echo1)]);
    // An unknown route key, and route a moved to echo2 (which must not take effect).
    let unknown_key = config(
        std::slice::from_ref(&provider),
        &[route(
            "a",
            "/a/",
            &echo2.url(),
            "idp",
            "upstrem_timeout: 5s",
        )],
    );
    // A route naming a provider that does not exist.
    let missing_provider = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo2.url(), "idp", ""),
            route("b", "/b/", &echo2.url(), "nowhere", ""),
        ],
    );
    let fixed = routes_to(&provider, &[("a", &echo2), ("b", &echo2)]);
    let gateway = Gateway::start_ready(&good).await;

    refused_naming(&gateway, &unknown_key, 1, "routes[0].upstrem_timeout").await;
    assert_eq!(gateway.status_of("/a/x").await, 200);
    assert_eq!(echo1.request_count(), 1, "the old route a serves");
    assert_eq!(echo2.request_count(), 0);

    refused_naming(
        &gateway,
        &missing_provider,
        2,
        "routes[1].credential.provider",
    )
    .await;
    assert_eq!(gateway.status_of("/a/x").await, 200);
    assert_eq!(echo1.request_count(), 2, "the old route a serves");
    assert_eq!(
        gateway.status_of("/b/x").await,
        404,
        "route b of a refused config"
    );
    assert_eq!(echo2.request_count(), 0);
    assert_eq!(reload_count(&gateway, "success").await, 0.0);

    gateway.rewrite_config(&fixed);
    wait_reloads(&gateway, "success", 1.0, POLL_SEEN).await;
    assert_eq!(gateway.status_of("/a/x").await, 200);
    assert_eq!(gateway.status_of("/b/x").await, 200);
    assert_eq!(echo2.request_count(), 2, "the fixed config serves");
    assert_eq!(echo1.request_count(), 2);
    assert_eq!(reload_count(&gateway, "failure").await, 2.0);
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_change_is_logged_for_a_restart_and_the_rest_applies() {
    let (_idp, _echo, [one, two]) = growing_configs().await;
    assert!(two.contains("threads: 1\n"));
    let two = two.replace("threads: 1\n", "threads: 2\n");
    let gateway = Gateway::start_ready(&one).await;
    assert!(
        gateway
            .logs()
            .lines()
            .all(|l| !l.contains("apply after a restart")),
        "restart warning before any reload"
    );

    gateway.rewrite_config(&two);
    wait_reloads(&gateway, "success", 1.0, POLL_SEEN).await;
    let warnings: Vec<String> = gateway
        .logs()
        .lines()
        .filter(|l| l.contains("server section changed") && l.contains("after a restart"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "no restart warning: {warnings:?}");
    let warning: Value = serde_json::from_str(&warnings[0]).expect("a JSON log line");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(
        gateway.status_of("/b/x").await,
        200,
        "the routes were not applied"
    );
    assert_eq!(reload_count(&gateway, "failure").await, 0.0);
}
