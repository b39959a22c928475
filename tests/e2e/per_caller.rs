//! End to end: per-caller credentials through the real gateway binary. A route's inbound
//! JWT check verifies the caller's token; a `token_exchange` provider (RFC 8693, against
//! the OAuth2 stand-in) or a `bagid` provider with `federated_token: from_caller` (the
//! BagID stand-in) mints a token for that caller; the echo upstream shows what it got.
//!
//! Covered: each caller gets its own token and the upstream never sees a caller's own;
//! one exchange for 100 concurrent requests of a caller; BagID sessions refreshed per
//! caller; a caller token that expires stops being served; refusals (403, for that caller
//! only) and outages (503 + `Retry-After`, with a backoff one bad caller cannot use to lock
//! out the others); an upstream 401 purging that caller's token only; the cache bound under
//! ten times more callers; `/readyz` and `/status`; `tollgate check`; and no caller token
//! or minted token in any log line (at debug level), `/status`, `/metrics` or error body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::Value;
use tokio::task::JoinHandle;
use tollgate_standins::bagid::{BagIdSettings, BagIdStandIn};
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::jwt;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn, TOKEN_EXCHANGE_GRANT};

/// The issuer of the callers' tokens, which the route's JWT check and both stand-ins
/// verify with the demo HS256 key.
const CALLER_ISSUER: &str = "https://login.example";
const CALLER_KEY: &str = "tollgate-demo-signing-key-not-a-secret";
const AUDIENCE: &str = "https://reports.example";
const STS_SECRET: &str = "per-caller-client-secret-5Hq2";
const BAGID_APP_KEY: &str = "per-caller-app-key-8Kd4";

/// A caller's token for `subject`, valid for ten minutes.
fn caller(subject: &str) -> String {
    jwt::mint(subject, CALLER_ISSUER, Duration::from_secs(600))
}

/// The route's inbound check: the caller's JWT, verified, with a leeway that a per-caller
/// route must not apply to the caller token's `exp`.
const INBOUND: &str = "inbound:
  jwt:
    from: { header: Authorization, scheme: Bearer }
    algorithms: [HS256]
    secret: tollgate-demo-signing-key-not-a-secret
    issuer: https://login.example
    leeway: 30s
  identity_headers: { X-Caller: sub }";

/// A `token_exchange` provider at `token_url` with the STS client and `extra` keys.
fn sts_provider(name: &str, token_url: &str, extra: &str) -> String {
    provider(
        name,
        "token_exchange",
        &format!(
            "token_url: {token_url}\nclient_id: demo-client\nclient_secret: {STS_SECRET}\n{extra}"
        ),
    )
}

/// A `bagid` provider logging in per caller (federated, the caller's token).
fn bagid_provider(name: &str, base_url: &str) -> String {
    provider(
        name,
        "bagid",
        &format!(
            "flow: federated\nbase_url: {base_url}\napp_key: {BAGID_APP_KEY}\nfederated_token: from_caller"
        ),
    )
}

/// A route with the inbound check and `format` for the provider's token.
fn per_caller_route(name: &str, upstream: &str, provider: &str, format: &str) -> String {
    let prefix = format!("/{name}/");
    let route = route_injecting(name, &prefix, upstream, provider, "Authorization", format);
    let inbound: String = INBOUND
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    route + &inbound
}

fn sts_settings() -> OAuth2Settings {
    OAuth2Settings {
        clients: vec![("demo-client".into(), STS_SECRET.into())],
        audiences: vec![AUDIENCE.into()],
        refused_subjects: vec!["mallory".into()],
        failing_subjects: vec!["trouble".into()],
        token_ttl: Duration::from_secs(600),
        ..OAuth2Settings::default()
    }
}

fn bagid_settings() -> BagIdSettings {
    BagIdSettings {
        app_keys: vec![BAGID_APP_KEY.into()],
        refused_subjects: vec!["mallory".into()],
        ..BagIdSettings::default()
    }
}

/// The stand-ins and a gateway with a `sts` route (token exchange, `audience` set) and a
/// `bagid` route (federated login per caller).
struct Stack {
    sts: OAuth2StandIn,
    bagid: BagIdStandIn,
    echo: EchoUpstream,
    gateway: Gateway,
}

impl Stack {
    async fn start(sts_extra: &str, bagid: BagIdSettings, env: &[(&str, &str)]) -> Stack {
        let sts = OAuth2StandIn::start(sts_settings()).await.unwrap();
        let bagid = BagIdStandIn::start(bagid).await.unwrap();
        let echo = EchoUpstream::start().await.unwrap();
        let yaml = config(
            &[
                sts_provider(
                    "sts",
                    &sts.token_url(),
                    &format!("audience: {AUDIENCE}\n{sts_extra}"),
                ),
                bagid_provider("bagid-user", &bagid.url()),
            ],
            &[
                per_caller_route("sts", &echo.url(), "sts", "Bearer {token}"),
                per_caller_route("bagid", &echo.url(), "bagid-user", "{token_type} {token}"),
            ],
        );
        let gateway = Gateway::start_with_env(&yaml, env).await;
        Stack {
            sts,
            bagid,
            echo,
            gateway,
        }
    }

    /// The usual stand-ins, with provider backoffs of `refresh`.
    async fn backing_off(refresh: &str) -> Stack {
        Stack::start(refresh, bagid_settings(), &[]).await
    }

    fn exchanges(&self) -> usize {
        self.sts.grant_requests(TOKEN_EXCHANGE_GRANT)
    }
}

/// `GET path` with `Authorization: Bearer token`: status, headers, JSON body.
async fn call(
    gateway: &Gateway,
    path: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let reply = gateway
        .get_with(path, &[("authorization", &format!("Bearer {token}"))])
        .await;
    (reply.status, reply.headers, reply.body)
}

/// [`call`] on a task of its own, for requests at once: status and JSON body.
fn spawn_call(gateway: &Gateway, path: &str, token: &str) -> JoinHandle<(u16, Value)> {
    let url = gateway.proxy_url(path);
    let (client, token) = (gateway.client().clone(), token.to_owned());
    tokio::spawn(async move {
        let reply = client.get(url).bearer_auth(token).send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json::<Value>().await.unwrap_or(Value::Null))
    })
}

/// A gateway with one `token_exchange` provider and its route, both `name`, at a new
/// STS; `extra` are the provider's keys beyond the client.
async fn sts_alone(name: &str, extra: &str) -> (OAuth2StandIn, EchoUpstream, Gateway) {
    let sts = OAuth2StandIn::start(sts_settings()).await.unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = config(
        &[sts_provider(name, &sts.token_url(), extra)],
        &[per_caller_route(name, &echo.url(), name, "Bearer {token}")],
    );
    let gateway = Gateway::start(&yaml).await;
    (sts, echo, gateway)
}

/// The token the upstream received, from the echo's reply (`Bearer <token>`).
fn minted(body: &Value) -> String {
    let value = body["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no Authorization reached the upstream: {body}"));
    value
        .split_once(' ')
        .map(|(_, token)| token.to_owned())
        .unwrap_or_else(|| panic!("not `<scheme> <token>`: {value}"))
}

/// A request that passes: the token the upstream got.
async fn minted_for(gateway: &Gateway, path: &str, token: &str) -> String {
    let (status, _, body) = call(gateway, path, token).await;
    assert_eq!(status, 200, "{path}: {body}\n{}", gateway.logs());
    minted(&body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `/status` entry of a per-caller provider, and its `per_caller` counts.
async fn per_caller_status(gateway: &Gateway, provider: &str) -> (Value, Value) {
    let status = gateway.provider_status(provider).await;
    let counts = status["per_caller"].clone();
    assert!(counts.is_object(), "no per_caller counts: {status}");
    (status, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_caller_gets_its_own_minted_token_and_the_upstream_never_sees_its_own() {
    let stack = Stack::start("", bagid_settings(), &[]).await;
    let gateway = &stack.gateway;
    // A per-caller provider holds no token of its own: ready without any.
    gateway.wait_ready().await;

    let subjects = ["alice", "bob", "carol"];
    let tokens: Vec<String> = subjects.iter().map(|s| caller(s)).collect();
    let mut minted_sts = Vec::new();
    let mut minted_bagid = Vec::new();
    for (subject, token) in subjects.iter().zip(&tokens) {
        let sts = minted_for(gateway, "/sts/reports", token).await;
        let claims = jwt::verify(&sts).expect("the STS minted a demo JWT");
        assert_eq!(claims.sub, *subject);
        assert_eq!(claims.iss, stack.sts.url());
        assert!(claims.aud.is_some_and(|aud| aud.contains(AUDIENCE)));
        assert_ne!(&sts, token);
        minted_sts.push(sts);

        let bagid = minted_for(gateway, "/bagid/me", token).await;
        let claims = jwt::verify(&bagid).expect("BagID minted a demo JWT");
        assert_eq!(claims.sub, *subject);
        assert_eq!(claims.iss, stack.bagid.url());
        minted_bagid.push(bagid);
    }
    let mut all: Vec<&String> = minted_sts.iter().chain(&minted_bagid).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        6,
        "every caller got its own token from each provider"
    );

    // Cached: the same tokens again, without another exchange or login.
    for (index, token) in tokens.iter().enumerate() {
        assert_eq!(
            minted_for(gateway, "/sts/again", token).await,
            minted_sts[index]
        );
        assert_eq!(
            minted_for(gateway, "/bagid/again", token).await,
            minted_bagid[index]
        );
    }
    assert_eq!(stack.exchanges(), 3);
    assert_eq!(stack.bagid.login_requests("federated"), 3);
    let last = stack.sts.last_request().unwrap();
    assert_eq!(last.param("subject_token"), Some(tokens[2].as_str()));
    assert_eq!(
        last.param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(last.param("audience"), Some(AUDIENCE));

    // The upstream saw the minted tokens and never a caller's own, in any header.
    let seen = stack.echo.requests();
    assert_eq!(seen.len(), 12);
    for request in &seen {
        for (name, value) in &request.headers {
            for token in &tokens {
                assert!(
                    !value.contains(token.as_str()),
                    "{name} carried a caller token"
                );
            }
        }
    }

    let (status, counts) = per_caller_status(gateway, "sts").await;
    assert_eq!(status["state"], "per_caller");
    assert_eq!(counts["cached_callers"], 3);
    assert_eq!(counts["max_entries"], 100_000);
    assert_eq!(counts["exchanges"]["minted"], 3);
    assert!(status["token_fingerprint"].is_null());
    let (_, counts) = per_caller_status(gateway, "bagid-user").await;
    assert_eq!(counts["cached_callers"], 3);
    let text = gateway.status().await.to_string();
    for secret in tokens.iter().chain(&minted_sts).chain(&minted_bagid) {
        assert!(!text.contains(secret.as_str()), "/status shows a token");
    }
    for subject in subjects {
        assert!(!text.contains(subject), "/status names a subject");
    }
    assert_eq!(gateway.readyz().await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_of_one_caller_make_one_exchange() {
    let stack = Stack::start("", bagid_settings(), &[]).await;
    // A slow endpoint, so that the requests pile up behind the first exchange.
    stack.sts.set_delay(Duration::from_secs(2));
    let token = caller("alice");
    let requests: Vec<_> = (0..100)
        .map(|_| spawn_call(&stack.gateway, "/sts/x", &token))
        .collect();
    let mut tokens = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.push(minted(&body));
    }
    assert_eq!(stack.exchanges(), 1);
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "all 100 requests got the one minted token");
    let misses = stack
        .gateway
        .metric("tollgate_token_cache_lookups_total{provider=\"sts\",result=\"miss\"}")
        .await;
    assert!(
        misses >= 2.0,
        "the requests did not overlap ({misses} misses)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bagid_sessions_are_refreshed_per_caller_with_their_refresh_tokens() {
    let settings = BagIdSettings {
        token_ttl: Duration::from_secs(2),
        ..bagid_settings()
    };
    let stack = Stack::start("", settings, &[]).await;
    let gateway = &stack.gateway;
    let alice = caller("alice");
    let bob = caller("bob");
    let first_alice = minted_for(gateway, "/bagid/x", &alice).await;
    let first_bob = minted_for(gateway, "/bagid/x", &bob).await;
    assert_eq!(stack.bagid.login_requests("federated"), 2);
    // Each caller's token is renewed (ahead of its expiry, or on it) with its own refresh
    // token: the event waited for is a new token reaching the upstream.
    for (token, first, subject) in [(&alice, &first_alice, "alice"), (&bob, &first_bob, "bob")] {
        let started = Instant::now();
        let renewed = loop {
            let now = minted_for(gateway, "/bagid/x", token).await;
            if &now != first {
                break now;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never renewed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(jwt::verify(&renewed).unwrap().sub, subject);
    }
    assert!(stack.bagid.refresh_requests() >= 2);
    assert_eq!(
        stack.bagid.login_requests("federated"),
        2,
        "a refresh, not a new federated login"
    );
    let (_, counts) = per_caller_status(gateway, "bagid-user").await;
    assert!(
        counts["exchanges"]["refreshed"].as_u64().unwrap() >= 2,
        "{counts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_token_that_expires_stops_being_served() {
    let stack = Stack::start("", bagid_settings(), &[]).await;
    let gateway = &stack.gateway;
    let exp = unix_now() + 3;
    let short = jwt::mint(
        "alice",
        CALLER_ISSUER,
        Duration::from_secs(exp - unix_now()),
    );
    let claims = jwt::verify(&short).unwrap();
    let first = minted_for(gateway, "/sts/x", &short).await;
    assert_eq!(minted_for(gateway, "/sts/x", &short).await, first);
    assert_eq!(stack.exchanges(), 1);
    let forwarded = stack.echo.request_count();

    // The caller token's `exp` is the event: wait until the clock passed it.
    let at_exp = UNIX_EPOCH + Duration::from_secs(claims.exp);
    if let Ok(left) = at_exp.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
    for path in ["/sts/x", "/bagid/x"] {
        let (status, headers, body) = call(gateway, path, &short).await;
        assert_eq!(status, 401, "{body}");
        assert_error_body(&body, "unauthenticated");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    // Although the route allows 30 s of leeway, and the minted token is still valid.
    assert_eq!(stack.echo.request_count(), forwarded);
    assert_eq!(stack.exchanges(), 1);
    // A new token of the same subject is a new caller.
    let again = minted_for(gateway, "/sts/x", &caller("alice")).await;
    assert_ne!(again, first);
    assert_eq!(stack.exchanges(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_caller_gets_403_and_only_that_caller() {
    let stack = Stack::backing_off("refresh: { min_backoff: 10s, max_backoff: 20s }").await;
    let gateway = &stack.gateway;
    let mallory = caller("mallory");
    for path in ["/sts/x", "/bagid/x"] {
        let (status, _, body) = call(gateway, path, &mallory).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_error_body(&body, "forbidden");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            !detail.contains(&mallory),
            "the detail shows the caller's token"
        );
        assert!(body["provider"].is_string(), "{body}");
    }
    let (_, _, body) = call(gateway, "/sts/x", &mallory).await;
    assert!(
        body["detail"].as_str().unwrap().contains("invalid_request"),
        "{body}"
    );
    // Everyone else passes, at once.
    assert_eq!(
        jwt::verify(&minted_for(gateway, "/sts/x", &caller("alice")).await)
            .unwrap()
            .sub,
        "alice"
    );
    minted_for(gateway, "/bagid/x", &caller("alice")).await;
    // The refused caller is held back: its second request made no exchange.
    assert_eq!(stack.exchanges(), 2, "mallory once, alice once");
    assert_eq!(stack.bagid.login_requests("federated"), 2);
    assert_eq!(stack.echo.request_count(), 2, "mallory reached nothing");
    let (status, counts) = per_caller_status(gateway, "sts").await;
    assert_eq!(status["state"], "per_caller");
    assert_eq!(counts["refused_callers"], 1);
    assert_eq!(counts["exchanges"]["refused"], 1);
    assert_eq!(gateway.readyz().await.0, 200);
    // A refused caller is no failure of the provider (no provider alert fires for it), and
    // a per-caller provider has no token expiry of its own to export.
    let metrics = gateway.metrics().await;
    let sts = |query: &str| sample(&metrics, query);
    assert_eq!(
        sts("tollgate_caller_tokens_total{provider=\"sts\",outcome=\"refused\"}"),
        Some(1.0)
    );
    assert_eq!(
        sts("tollgate_token_requests_total{provider=\"sts\",kind=\"login\",outcome=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        sts("tollgate_token_requests_total{provider=\"sts\",kind=\"login\",outcome=\"success\"}"),
        Some(1.0)
    );
    assert!(!metrics.contains("tollgate_token_expiry_timestamp_seconds{provider=\"sts\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audience_the_endpoint_refuses_is_403_invalid_target() {
    let (_sts, echo, gateway) = sts_alone("payroll", "audience: https://payroll.example").await;
    let (status, _, body) = call(&gateway, "/payroll/x", &caller("alice")).await;
    assert_eq!(status, 403, "{body}");
    assert_error_body(&body, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("invalid_target"),
        "{body}"
    );
    assert_eq!(echo.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_503_with_retry_after_and_one_bad_caller_cannot_lock_out_the_others() {
    // Backoffs long enough that a slow machine still makes its next requests within them.
    let stack = Stack::backing_off("refresh: { min_backoff: 5s, max_backoff: 10s }").await;
    let gateway = &stack.gateway;
    // The endpoint fails for one caller only.
    let trouble = caller("trouble");
    let (status, headers, body) = call(gateway, "/sts/x", &trouble).await;
    assert_eq!(status, 503, "{body}");
    assert_error_body(&body, "credential_unavailable");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    for subject in ["alice", "bob"] {
        minted_for(gateway, "/sts/x", &caller(subject)).await;
    }
    // Its second request is held back; a second token of the same subject fails once
    // more, and the others still pass: one subject never backs the provider off.
    assert_eq!(call(gateway, "/sts/x", &trouble).await.0, 503);
    assert_eq!(stack.exchanges(), 3);
    assert_eq!(call(gateway, "/sts/x", &caller("trouble")).await.0, 503);
    minted_for(gateway, "/sts/x", &caller("carol")).await;
    assert_eq!(stack.exchanges(), 5);
    assert_eq!(gateway.provider_status("sts").await["state"], "per_caller");

    // The endpoint down for everyone: after two subjects failed, the next caller is held
    // back without an exchange, and callers with a cached token are still served.
    let alice = caller("alice");
    let alices = minted_for(gateway, "/sts/x", &alice).await;
    stack.sts.set_available(false);
    for subject in ["dave", "erin"] {
        let (status, headers, body) = call(gateway, "/sts/x", &caller(subject)).await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.contains_key("retry-after"));
    }
    let before = stack.exchanges();
    let (status, headers, body) = call(gateway, "/sts/x", &caller("frank")).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(stack.exchanges(), before, "the provider backs off");
    let (state, _) = per_caller_status(gateway, "sts").await;
    assert_eq!(state["state"], "unavailable", "{state}");
    assert_eq!(minted_for(gateway, "/sts/x", &alice).await, alices);

    // Back up: the next caller after the backoff gets a token.
    stack.sts.set_available(true);
    let frank = caller("frank");
    assert!(
        eventually(Duration::from_secs(20), || async {
            call(gateway, "/sts/x", &frank).await.0 == 200
        })
        .await,
        "no token after the endpoint came back"
    );
    assert_eq!(gateway.provider_status("sts").await["state"], "per_caller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_401_renews_only_that_callers_token_and_retries_once() {
    let stack = Stack::start("", bagid_settings(), &[]).await;
    let gateway = &stack.gateway;
    let (alice, bob) = (caller("alice"), caller("bob"));
    let alice_first = minted_for(gateway, "/sts/x", &alice).await;
    let bob_first = minted_for(gateway, "/sts/x", &bob).await;
    stack.echo.respond_next_with(401, 1);
    let alice_second = minted_for(gateway, "/sts/x", &alice).await;
    assert_ne!(alice_second, alice_first, "the retry carried a new token");
    assert_eq!(jwt::verify(&alice_second).unwrap().sub, "alice");
    assert_eq!(stack.exchanges(), 3);
    assert_eq!(minted_for(gateway, "/sts/x", &bob).await, bob_first);
    assert_eq!(minted_for(gateway, "/sts/x", &alice).await, alice_second);
    assert_eq!(stack.exchanges(), 3);
    let retries = gateway
        .metric("tollgate_upstream_retries_total{route=\"sts\",reason=\"credential_rejected\"}")
        .await;
    assert_eq!(retries, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_stays_within_its_bound_under_ten_times_more_callers() {
    let extra = format!("audience: {AUDIENCE}\nper_caller: {{ max_entries: 20 }}");
    let (sts, _echo, gateway) = sts_alone("sts", &extra).await;
    let tokens: Vec<String> = (0..200).map(|n| caller(&format!("user-{n}"))).collect();
    for batch in tokens.chunks(20) {
        let requests: Vec<_> = batch
            .iter()
            .map(|token| spawn_call(&gateway, "/sts/x", token))
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().0, 200);
        }
    }
    assert_eq!(sts.grant_requests(TOKEN_EXCHANGE_GRANT), 200);
    let (_, counts) = per_caller_status(&gateway, "sts").await;
    let cached = counts["cached_callers"].as_u64().unwrap();
    assert!(cached <= 20 && cached > 0, "{counts}");
    assert_eq!(counts["max_entries"], 20);
    assert_eq!(counts["exchanges"]["minted"], 200);
}

#[test]
fn check_refuses_a_per_caller_provider_on_a_route_without_a_check_or_forwarding_the_callers_token()
{
    let yaml = format!(
        "{}  - name: open\n    match: {{ path_prefix: /open/ }}\n    upstream: {{ url: http://127.0.0.1:9 }}\n    credential: {{ provider: sts }}\n  - name: forwarding\n    match: {{ path_prefix: /fwd/ }}\n    upstream: {{ url: http://127.0.0.1:9 }}\n    credential: {{ provider: sts }}\n    inbound:\n      jwt: {{ secret: {CALLER_KEY}, algorithms: [HS256] }}\n      forward_caller_credential: true\n",
        config(
            &[sts_provider("sts", "http://127.0.0.1:9/oauth/token", "")],
            &[]
        )
    );
    check_refuses(
        &yaml,
        &[
            "2 error(s)",
            "routes[0].credential.provider: provider `sts` mints a token per caller",
            "routes[1].inbound.forward_caller_credential: must not be true",
        ],
    );
    let good = config(
        &[sts_provider("sts", "http://127.0.0.1:9/oauth/token", "")],
        &[per_caller_route(
            "sts",
            "http://127.0.0.1:9",
            "sts",
            "Bearer {token}",
        )],
    );
    let stdout = check_accepts(&good);
    assert!(
        stdout.contains("sts (token_exchange, a token per caller, at most 100000 cached)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caller_tokens_and_minted_tokens_never_leak_at_debug_level() {
    let settings = BagIdSettings {
        token_ttl: Duration::from_secs(2),
        ..bagid_settings()
    };
    let stack = Stack::start(
        "refresh: { min_backoff: 200ms, max_backoff: 1s }",
        settings,
        &[("RUST_LOG", "debug")],
    )
    .await;
    // An upstream that does not reflect requests: a debug log of response bodies must not
    // see the credential come back the way a real upstream would not send it.
    stack.echo.set_reflect(false);
    let gateway = &stack.gateway;
    let made = AtomicUsize::new(0);
    let send = |path: &'static str, token: String| {
        made.fetch_add(1, Ordering::SeqCst);
        async move { call(gateway, path, &token).await }
    };
    let mut callers: Vec<String> = Vec::new();
    let mut bodies = Vec::new();
    for subject in ["alice", "bob", "mallory", "trouble"] {
        let token = caller(subject);
        callers.push(token.clone());
        for path in ["/sts/x", "/bagid/x"] {
            bodies.push(send(path, token.clone()).await.2.to_string());
        }
    }
    // An upstream 401 and its retry; then BagID sessions renewed with refresh tokens.
    stack.echo.respond_next_with(401, 1);
    let alice = callers[0].clone();
    assert_eq!(send("/sts/x", alice.clone()).await.0, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            send("/bagid/x", alice.clone()).await;
            stack.bagid.refresh_requests() >= 1
        })
        .await,
        "no BagID refresh"
    );
    // An expired caller token.
    let expired = jwt::mint("old", CALLER_ISSUER, Duration::ZERO);
    callers.push(expired.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = send("/sts/x", expired).await;
    assert_eq!(status, 401);
    bodies.push(body.to_string());

    // Every token anyone issued, and every caller token.
    let mut secrets: Vec<String> = callers.clone();
    secrets.extend(stack.sts.issued_tokens());
    secrets.extend(stack.bagid.issued_tokens());
    secrets.push(STS_SECRET.to_owned());
    secrets.push(BAGID_APP_KEY.to_owned());
    assert!(stack.sts.issued_tokens().len() >= 2);
    assert!(
        stack.bagid.issued_tokens().len() >= 4,
        "access and refresh tokens"
    );

    let logs = gateway
        .logs_after_requests(made.load(Ordering::SeqCst))
        .await;
    assert!(logs.contains("\"level\":\"DEBUG\""), "not at debug level");
    let status = gateway.status().await.to_string();
    let metrics = gateway.metrics().await;
    let readyz = gateway.readyz().await.1;
    for secret in &secrets {
        for (what, text) in [
            ("logs", &logs),
            ("/status", &status),
            ("/metrics", &metrics),
            ("/readyz", &readyz),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds a token or secret"
            );
        }
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "an error body holds a token: {body}"
            );
        }
    }
}

/// The demo's per-caller routes as a user tries them from its printed lines (the demo
/// listens on fixed ports: one at a time, see `demo`).
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_two_callers_getting_two_tokens() {
    let demo = crate::demo::Demo::start().await;
    let printed = demo.printed();
    let token = |name: &str| {
        printed
            .iter()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("the demo printed no {name}=: {printed:?}"))
            .to_owned()
    };
    let (alice, bob) = (token("ALICE"), token("BOB"));
    assert!(printed
        .iter()
        .any(|line| line.contains("localhost:8080/per-caller/anything")));
    let upstream_token = |route: &'static str, caller: String| {
        let demo = &demo;
        async move {
            let reply: Value = demo
                .get(
                    &format!("/{route}/anything"),
                    &[("authorization", &format!("Bearer {caller}"))],
                )
                .await
                .json()
                .await
                .expect("echo JSON");
            let token = minted(&reply);
            assert_ne!(
                token, caller,
                "{route}: the caller's own token went upstream"
            );
            jwt::verify(&token).expect("a demo JWT").sub
        }
    };
    assert_eq!(upstream_token("per-caller", alice.clone()).await, "alice");
    assert_eq!(upstream_token("per-caller", bob.clone()).await, "bob");
    assert_eq!(upstream_token("bagid-user", alice).await, "alice");
    assert_eq!(upstream_token("bagid-user", bob).await, "bob");
    let refused = demo.get("/per-caller/anything", &[]).await;
    assert_eq!(refused.status(), 401);
}
