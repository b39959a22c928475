//! End to end, against a resource server that checks what real APIs behind an authorization
//! server check (issued by its server, live, and for its own audience): RFC 8707 resource
//! indicators get a token it accepts; an upstream that rejects every token cannot turn
//! caller requests into logins; a genuine revocation is still recovered with exactly one new
//! token and a retry.

use crate::common::*;
use serde_json::Value;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};
use tollgate_standins::resource::ResourceServer;

const RESOURCE: &str = "https://reports.internal/";

/// The authorization server (it knows the resource) and the resource server.
async fn servers() -> (OAuth2StandIn, ResourceServer) {
    let idp = OAuth2StandIn::start(OAuth2Settings {
        resources: vec![RESOURCE.to_owned()],
        ..OAuth2Settings::default()
    })
    .await
    .unwrap();
    let api = ResourceServer::start(&idp, RESOURCE).await.unwrap();
    (idp, api)
}

/// A gateway with route `/api/` to the resource server through provider `idp` with `extra`.
async fn gateway(idp: &OAuth2StandIn, api: &ResourceServer, extra: &str) -> Gateway {
    let yaml = api_config(&idp.token_url(), extra, &api.url());
    Gateway::start_ready(&yaml).await
}

/// Provider `idp` at `token_url` with `extra` keys, and route `/api/` to `upstream`.
fn api_config(token_url: &str, extra: &str, upstream: &str) -> String {
    single_route(oauth2("idp", token_url, extra), "/api/", upstream)
}

fn logins(idp: &OAuth2StandIn) -> usize {
    idp.token_requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resource_indicator_gets_a_token_the_resource_server_accepts() {
    let (idp, api) = servers().await;
    let gateway = gateway(&idp, &api, &format!("resource: {RESOURCE}")).await;
    let (status, _, body) = gateway.get_json("/api/reports").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.accepted(), 1);
    let sent = idp.last_request().unwrap();
    assert_eq!(sent.param("resource"), Some(RESOURCE));
    assert_eq!(
        sent.param("audience"),
        None,
        "resource is kept apart from audience"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_rejecting_every_token_cannot_turn_requests_into_logins() {
    let (idp, api) = servers().await;
    // No resource: the token has no audience, and the resource server refuses each one.
    let gateway = gateway(
        &idp,
        &api,
        "refresh: { min_backoff: 30s, max_backoff: 60s }",
    )
    .await;
    assert_eq!(logins(&idp), 1);
    let client = gateway.client().clone();
    let mut tasks = Vec::new();
    for task in 0..20 {
        let client = client.clone();
        let url = gateway.proxy_url(&format!("/api/{task}"));
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..50 {
                statuses.push(client.get(&url).send().await.unwrap().status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    let made = logins(&idp);
    eprintln!(
        "1,000 caller requests against an upstream that rejects every token: {made} token requests"
    );
    assert_eq!(statuses.len(), 1000);
    assert!(
        statuses.iter().all(|&status| status == 401),
        "callers get the upstream's own answer, not a 503: {:?}",
        statuses.iter().filter(|&&s| s != 401).collect::<Vec<_>>()
    );
    // The first login, and one renewal whose token was rejected too; then renewals on
    // rejection pause for 30 s.
    assert_eq!(made, 2, "{made} token requests for 1,000 rejected requests");
    let metrics = gateway.metrics_after(1000.0).await;
    assert!(
        sample(
            &metrics,
            "tollgate_token_rejections_total{provider=\"idp\",route=\"api\"}"
        )
        .unwrap_or(0.0)
            >= 1000.0,
        "{metrics}"
    );
    let status = gateway.provider_status("idp").await;
    assert_eq!(
        status["state"], "valid",
        "the token is valid as far as the provider knows"
    );
    assert_eq!(status["upstream_rejections"], 1, "{status}");
    assert!(
        status["rejection_pause_seconds"].as_u64() > Some(20),
        "{status}"
    );
    let logs = gateway.logs();
    assert!(logs.contains("renewals on rejection are paused"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_genuine_revocation_is_recovered_with_one_new_token_and_a_retry() {
    let (idp, api) = servers().await;
    let gateway = gateway(&idp, &api, &format!("resource: {RESOURCE}")).await;
    let (status, _, _) = gateway.get_json("/api/a").await;
    assert_eq!(status, 200);
    for round in 1..=2 {
        let before = logins(&idp);
        idp.revoke_all();
        let (status, _, body) = gateway.get_json("/api/b").await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(
            logins(&idp),
            before + 1,
            "round {round}: exactly one new token"
        );
        assert_eq!(
            api.rejected(),
            round,
            "round {round}: one rejection, then the retry"
        );
    }
    let status: Value = gateway.provider_status("idp").await;
    assert_eq!(status["upstream_rejections"], 0, "{status}");
    assert_eq!(status["rejection_pause_seconds"], Value::Null, "{status}");
}

#[test]
fn check_refuses_resources_that_are_not_absolute_uris() {
    let with = |keys: &str| api_config("http://127.0.0.1:9/token", keys, "http://127.0.0.1:9");
    for (resource, path) in [
        ("reports", "providers.idp.resource"),
        ("https://reports.internal/#x", "providers.idp.resource"),
        ("[https://a.example/, b]", "providers.idp.resource[1]"),
    ] {
        check_refuses(&with(&format!("resource: {resource}")), &[path]);
    }
    check_accepts(&with(
        "resource: [https://a.example/, https://b.example/]\naudience: https://c.example/",
    ));
}
