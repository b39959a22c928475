//! End to end, fleet mode: several gateway processes share one real `redis-server`
//! (installed by `.ci/deps`, started here on a free loopback port). The fleet logs in once,
//! renews once per lifetime, recovers a revoked token with one login, lets a late replica
//! take the stored token, keeps a replica with other credentials apart, stores nothing in
//! clear, and keeps serving (each replica on its own) while the store is frozen or stopped.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};
use tollgate_standins::redis::RedisServer;
use tollgate_standins::resource::ResourceServer;

const RESOURCE: &str = "https://reports.internal/";
/// 32 bytes, base64: the store's encryption key in these tests.
const STORE_KEY: &str = "bm90LWEtcmVhbC1rZXktanVzdC1mb3ItdGhlLXRlc3Q=";
const CLIENT_SECRET: &str = "fleet-client-secret-8c2f";

/// Every key and value in the store.
fn dump(redis: &RedisServer) -> Vec<(String, String)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    keys.into_iter()
        .map(|key| {
            let value: String = redis::cmd("GET").arg(&key).query(&mut connection).unwrap();
            (key, value)
        })
        .collect()
}

/// The identity server (knows two secrets of one client, as during a rotation) and the API.
async fn servers(ttl: Duration) -> (OAuth2StandIn, ResourceServer) {
    let idp = OAuth2StandIn::start(OAuth2Settings {
        clients: vec![
            ("gateway".into(), CLIENT_SECRET.into()),
            ("gateway".into(), "fleet-rotated-secret-1d7e".into()),
        ],
        resources: vec![RESOURCE.to_owned()],
        token_ttl: ttl,
        issue_refresh_tokens: true,
        ..OAuth2Settings::default()
    })
    .await
    .unwrap();
    let api = ResourceServer::start(&idp, RESOURCE).await.unwrap();
    (idp, api)
}

/// A replica's config: provider `idp` (with `secret`), route `/api/`, and the store.
fn replica_config(
    idp: &OAuth2StandIn,
    api: &ResourceServer,
    redis: &RedisServer,
    secret: &str,
    refresh: &str,
) -> String {
    let keys =
        format!("client_id: gateway\nclient_secret: {secret}\nresource: {RESOURCE}\n{refresh}");
    with_store(
        &single_route(oauth2("idp", &idp.token_url(), &keys), "/api/", &api.url()),
        &format!(
            "{{ url: \"{}\", encryption_key: \"{STORE_KEY}\", lease: 5s, timeout: 300ms }}",
            redis.url()
        ),
    )
}

/// `yaml` with `server.store: store`.
fn with_store(yaml: &str, store: &str) -> String {
    with_server(yaml, &format!("store: {store}"))
}

/// A store, the identity server (`ttl` tokens) and the API, and the replicas' config with
/// `refresh`.
struct Stack {
    redis: RedisServer,
    idp: OAuth2StandIn,
    api: ResourceServer,
    yaml: String,
}

impl Stack {
    async fn start(ttl: Duration, refresh: &str) -> Stack {
        let redis = RedisServer::start_on(free_port()).await;
        let (idp, api) = servers(ttl).await;
        let yaml = replica_config(&idp, &api, &redis, CLIENT_SECRET, refresh);
        Stack {
            redis,
            idp,
            api,
            yaml,
        }
    }
}

async fn replicas(yaml: &str, count: usize) -> Vec<Gateway> {
    let started = futures_join(yaml, count).await;
    for gateway in &started {
        gateway.wait_ready().await;
    }
    started
}

async fn futures_join(yaml: &str, count: usize) -> Vec<Gateway> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let yaml = yaml.to_owned();
        tasks.push(tokio::spawn(async move { Gateway::start(&yaml).await }));
    }
    let mut gateways = Vec::new();
    for task in tasks {
        gateways.push(task.await.unwrap());
    }
    gateways
}

/// `count` requests to each replica at once; every answer must be 200.
async fn load(replicas: &[Gateway], count: usize) {
    let mut tasks = Vec::new();
    for (r, gateway) in replicas.iter().enumerate() {
        for n in 0..count {
            let client = gateway.client().clone();
            let url = gateway.proxy_url(&format!("/api/{r}/{n}"));
            tasks.push(tokio::spawn(async move {
                let reply = client.get(&url).send().await.unwrap();
                (
                    reply.status().as_u16(),
                    reply.text().await.unwrap_or_default(),
                )
            }));
        }
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

fn logins(idp: &OAuth2StandIn) -> usize {
    idp.token_requests()
}

/// Waits until every replica's `/status` says `store: state` (`up`, `down`), and checks
/// that `tollgate_store_up` says so too.
async fn wait_store(fleet: &[Gateway], state: &str, within: Duration, how: &str) {
    let up = if state == "up" { 1.0 } else { 0.0 };
    for gateway in fleet {
        let seen = eventually(within, || async {
            gateway.status().await["store"] == state
        })
        .await;
        assert!(seen, "{how}: /status never said store: {state}");
        assert_eq!(gateway.metric("tollgate_store_up").await, up);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_log_in_once_and_a_revoked_token_costs_one_login() {
    let stack = Stack::start(Duration::from_secs(300), "").await;
    let fleet = replicas(&stack.yaml, 3).await;
    load(&fleet, 10).await;
    assert_eq!(
        logins(&stack.idp),
        1,
        "three replicas started at once made one login"
    );

    stack.idp.revoke_all();
    load(&fleet, 10).await;
    assert_eq!(
        logins(&stack.idp),
        2,
        "one new login for the fleet after a revocation"
    );
    for gateway in &fleet {
        let status = gateway.status().await;
        assert_eq!(status["store"], "up", "{status}");
    }
    let leases = sample_sum(
        &fleet[0].metrics().await,
        "tollgate_store_leases_total",
        &[],
    );
    assert!(leases >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_replica_takes_the_stored_token_and_other_credentials_do_not() {
    let stack = Stack::start(Duration::from_secs(300), "").await;
    let (idp, yaml) = (&stack.idp, &stack.yaml);
    let first = replicas(yaml, 1).await;
    load(&first, 1).await;
    assert_eq!(logins(idp), 1);

    let late = replicas(yaml, 1).await;
    load(&late, 3).await;
    assert_eq!(
        logins(idp),
        1,
        "the late replica logged in instead of taking the stored token"
    );
    assert!(late[0].logs().contains("token taken from the store"));

    // The rotated secret names another store key: that replica logs in for itself.
    let rotated = replica_config(
        idp,
        &stack.api,
        &stack.redis,
        "fleet-rotated-secret-1d7e",
        "",
    );
    let other = replicas(&rotated, 1).await;
    load(&other, 1).await;
    assert_eq!(logins(idp), 2);

    // Nothing in the store in clear: no token, refresh token or secret, in keys or values.
    let mut needles: Vec<String> = idp.issued_tokens();
    needles.push(CLIENT_SECRET.to_owned());
    needles.push("fleet-rotated-secret-1d7e".to_owned());
    let stored = dump(&stack.redis);
    assert!(!stored.is_empty());
    for (key, value) in &stored {
        for needle in &needles {
            assert!(
                !key.contains(needle.as_str()) && !value.contains(needle.as_str()),
                "{key} = {value}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_steady_load_the_fleet_renews_once_per_lifetime() {
    // 2 s tokens renewed 1 s ahead: one renewal a second for the whole fleet.
    let stack = Stack::start(SHORT_TTL, SHORT_REFRESH).await;
    let fleet = replicas(&stack.yaml, 3).await;
    let started = Instant::now();
    let before = logins(&stack.idp);
    while started.elapsed() < Duration::from_secs(5) {
        load(&fleet, 3).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = logins(&stack.idp) - before;
    eprintln!("3 replicas, 2 s tokens renewed 1 s ahead: {calls} provider calls in {elapsed:.1} s");
    // One per second for the fleet (three replicas alone would make three).
    assert!(
        (calls as f64) <= elapsed + 2.0,
        "{calls} provider calls in {elapsed:.1} s: the replicas renewed on their own"
    );
    assert!(calls >= 3, "{calls} calls: tokens were not renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_or_stopped_store_leaves_every_replica_serving_and_it_rejoins() {
    let mut stack = Stack::start(SHORT_TTL, SHORT_REFRESH).await;
    let port = stack.redis.port();
    let fleet = replicas(&stack.yaml, 2).await;
    load(&fleet, 2).await;

    for (how, signal) in [("frozen", Some("-STOP")), ("stopped", None)] {
        match signal {
            Some(signal) => stack.redis.signal(signal),
            None => stack.redis.stop(),
        }
        // Renewals (every second) go on without the store: each replica logs in alone.
        let before = logins(&stack.idp);
        wait_store(&fleet, "down", Duration::from_secs(10), how).await;
        for gateway in &fleet {
            assert_eq!(
                gateway.readyz().await.0,
                200,
                "{how}: not ready without the store"
            );
        }
        let renewed = eventually(Duration::from_secs(10), || async {
            logins(&stack.idp) >= before + 2
        })
        .await;
        assert!(renewed, "{how}: the replicas did not renew alone");
        load(&fleet, 5).await;
        for gateway in &fleet {
            let logs = gateway.logs();
            assert!(
                logs.contains("the token store is unreachable"),
                "{how}: {logs}"
            );
        }

        match signal {
            Some(_) => stack.redis.signal("-CONT"),
            None => stack.redis = RedisServer::start_on(port).await,
        }
        wait_store(&fleet, "up", Duration::from_secs(15), how).await;
        load(&fleet, 5).await;
    }
    // Down is logged once per outage, not per request.
    for gateway in &fleet {
        let lines = gateway
            .log_lines()
            .iter()
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("the token store is unreachable"))
            })
            .count();
        assert_eq!(lines, 2, "one line per outage:\n{}", gateway.logs());
        let status: Value = gateway.status().await;
        assert_eq!(status["store"], "up");
    }
}

#[test]
fn check_validates_the_store_without_connecting() {
    let base = single_route(
        oauth2("idp", "http://127.0.0.1:9/token", ""),
        "/api/",
        "http://127.0.0.1:9",
    );
    let with = |store: &str| with_store(&base, store);
    // Nothing listens on port 1: check never connects.
    check_accepts(&with(&format!(
        "{{ url: \"redis://127.0.0.1:1/0\", encryption_key: \"{STORE_KEY}\" }}"
    )));
    for (store, path) in [
        (
            format!("{{ url: \"http://x\", encryption_key: \"{STORE_KEY}\" }}"),
            "server.store.url",
        ),
        (
            "{ url: \"redis://x\", encryption_key: \"short\" }".to_owned(),
            "server.store.encryption_key",
        ),
        (
            format!("{{ url: \"redis://x\", encryption_key: \"{STORE_KEY}\", lease: 0s }}"),
            "server.store.lease",
        ),
        (
            format!("{{ url: \"redis+sentinel://s1:x/m\", encryption_key: \"{STORE_KEY}\" }}"),
            "server.store.url",
        ),
    ] {
        check_refuses(&with(&store), &[path]);
    }
    let stderr = check_refuses(
        &with("{ url: \"redis://:hunter2secret@x:6379\", encryption_key: \"short\" }"),
        &[],
    );
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

/// The figures of the README and the closing note: provider calls per token lifetime for
/// 1, 3 and 5 replicas, with and without the store, under steady load (2 s tokens renewed
/// 1 s ahead, 5 s of load). About 30 s: run it with
/// `cargo test --test e2e calls_per_lifetime -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement (about 30 s); the behaviour is covered by the tests above"]
async fn calls_per_lifetime_for_1_3_and_5_replicas() {
    let redis = RedisServer::start_on(free_port()).await;
    let window = Duration::from_secs(5);
    let mut rows = Vec::new();
    for count in [1, 3, 5] {
        for with_store in [false, true] {
            let (idp, api) = servers(SHORT_TTL).await;
            let mut yaml = replica_config(&idp, &api, &redis, CLIENT_SECRET, SHORT_REFRESH);
            if !with_store {
                let start = yaml.find("  store:").unwrap();
                let end = start + yaml[start..].find('\n').unwrap() + 1;
                yaml.replace_range(start..end, "");
            } else {
                // Each row its own keys.
                yaml = yaml.replace(
                    "lease: 5s",
                    &format!("lease: 5s, key_prefix: \"r{count}/\""),
                );
            }
            let fleet = replicas(&yaml, count).await;
            let before = logins(&idp);
            let started = Instant::now();
            while started.elapsed() < window {
                load(&fleet, 2).await;
            }
            let calls = logins(&idp) - before;
            // Renewed every second: the lifetimes that passed.
            let lifetimes = started.elapsed().as_secs_f64() / 1.0;
            rows.push((count, with_store, calls, calls as f64 / lifetimes));
            if with_store {
                assert!(
                    (calls as f64) <= lifetimes + 2.0,
                    "{count} replicas with the store: {calls} calls in {lifetimes:.1} renewal periods"
                );
            }
        }
    }
    eprintln!("replicas  store  provider calls  per renewal period");
    for (count, with_store, calls, per) in rows {
        eprintln!(
            "{count:>8}  {:>5}  {calls:>14}  {per:>18.2}",
            if with_store { "yes" } else { "no" }
        );
    }
}
