use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::runtime::Handle;

use super::*;
use crate::config::inbound::{AuthorizeAction, AuthorizeSettings, TokenSource};
use crate::config::TlsSettings;
use tollgate_standins::bigbucks::{BigBucksSettings, BigBucksStandIn};
use tollgate_standins::inbound::signin;

fn settings(base_url: &str) -> AuthorizeSettings {
    AuthorizeSettings {
        url: base_url.parse().unwrap(),
        from: TokenSource::Header {
            name: HeaderName::from_static("x-auth"),
            scheme: None,
        },
        action: AuthorizeAction::Fixed("read".into()),
        resource: "reports".into(),
        scope: "org".into(),
        org_id: None,
        cache_ttl: Duration::from_secs(30),
        fail_open: false,
        identity_from_me: false,
        timeout: Duration::from_secs(2),
        tls: TlsSettings::default(),
    }
}

fn build(settings: &AuthorizeSettings) -> AuthorizeCheck {
    AuthorizeCheck::build(settings, Handle::current()).unwrap()
}

fn x_auth(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-auth", HeaderValue::from_str(token).unwrap());
    headers
}

/// The engine with its default user, and that user's token.
async fn engine_and_token() -> (BigBucksStandIn, String) {
    let engine = BigBucksStandIn::start(BigBucksSettings::default())
        .await
        .unwrap();
    let token = signin(&engine, "svc-reporting", "engine-password").await;
    (engine, token)
}

/// The refusal of a `method` request with `token`.
async fn refused(check: &AuthorizeCheck, method: Method, token: &str) -> Refusal {
    check.check(&method, &x_auth(token)).await.unwrap_err()
}

/// `key` of the body of the last question the engine was asked.
fn last_question(engine: &BigBucksStandIn, key: &str) -> serde_json::Value {
    let body = engine
        .last_authorize_request()
        .unwrap()
        .body_json()
        .unwrap();
    body[key].clone()
}

/// A 503 whose detail says `words`.
fn assert_unavailable(refusal: &Refusal, words: &str) {
    assert_eq!(refusal.status(), 503);
    assert!(refusal.detail().contains(words), "{}", refusal.detail());
}

async fn engine_with_auditor() -> BigBucksStandIn {
    let mut settings = BigBucksSettings::default();
    settings
        .users
        .push(("auditor".into(), "audit-pw".to_owned()));
    BigBucksStandIn::start(settings).await.unwrap()
}

#[tokio::test]
async fn the_engine_decides_and_the_question_is_the_routes() {
    let engine = engine_with_auditor().await;
    let check = build(&settings(&engine.base_url()));
    let allowed = signin(&engine, "svc-reporting", "engine-password").await;
    assert_eq!(check.check(&Method::GET, &x_auth(&allowed)).await, Ok(None));
    let request = engine.last_authorize_request().unwrap();
    assert_eq!(request.x_auth.as_deref(), Some(allowed.as_str()));
    assert_eq!(
        request.body_json(),
        Some(serde_json::json!({"action": "read", "resource": "reports", "scope": "org"}))
    );

    let denied = signin(&engine, "auditor", "audit-pw").await;
    assert_eq!(
        refused(&check, Method::GET, &denied).await,
        Refusal::Forbidden {
            detail: "the authorization server denies `read` on `reports`".into()
        }
    );

    // A token the engine does not know: 401 from the engine, 401 here.
    assert_eq!(
        refused(&check, Method::GET, "not-a-token-the-engine-issued").await,
        Refusal::Unauthenticated {
            detail: "the authorization server did not accept the credential".into(),
            www_authenticate: "Token realm=\"tollgate\", header=\"x-auth\", error=\"invalid_token\", error_description=\"the authorization server did not accept the credential\"".into(),
        }
    );
    // No token: refused without asking.
    let before = engine.authorize_requests();
    let refusal = check
        .check(&Method::GET, &HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(refusal.status(), 401);
    assert_eq!(engine.authorize_requests(), before);
    // orgID is sent when configured.
    let mut with_org = settings(&engine.base_url());
    with_org.org_id = Some(7);
    let check = build(&with_org);
    assert!(check.check(&Method::GET, &x_auth(&allowed)).await.is_ok());
    assert_eq!(last_question(&engine, "orgID"), 7);
}

#[tokio::test]
async fn decisions_are_cached_per_token_and_question() {
    let engine = engine_with_auditor().await;
    let mut by_method = settings(&engine.base_url());
    by_method.action = AuthorizeAction::ByMethod(vec![
        (Method::GET, "read".into()),
        (Method::POST, "write".into()),
    ]);
    let check = build(&by_method);
    let token = signin(&engine, "svc-reporting", "engine-password").await;
    let other = signin(&engine, "auditor", "audit-pw").await;

    assert!(check.check(&Method::GET, &x_auth(&token)).await.is_ok());
    assert_eq!(engine.authorize_requests(), 1);
    // The second identical question is answered from the cache.
    assert!(check.check(&Method::GET, &x_auth(&token)).await.is_ok());
    assert_eq!(engine.authorize_requests(), 1);
    assert_eq!(check.calls(), 1);
    // Another action is another question (and svc-reporting may not write).
    let refusal = refused(&check, Method::POST, &token).await;
    assert_eq!(refusal.status(), 403);
    assert_eq!(engine.authorize_requests(), 2);
    assert_eq!(last_question(&engine, "action"), "write");
    // Denials are cached too.
    assert!(check.check(&Method::POST, &x_auth(&token)).await.is_err());
    assert_eq!(engine.authorize_requests(), 2);
    // Another token is another question.
    assert!(check.check(&Method::GET, &x_auth(&other)).await.is_err());
    assert_eq!(engine.authorize_requests(), 3);
    // A method outside the map is refused without asking.
    assert_eq!(
        refused(&check, Method::DELETE, &token).await,
        Refusal::Forbidden {
            detail: "DELETE requests are not allowed on this route".into()
        }
    );
    assert_eq!(engine.authorize_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_questions_share_one_call() {
    let (engine, token) = engine_and_token().await;
    let check = std::sync::Arc::new(build(&settings(&engine.base_url())));
    engine.set_delay(Duration::from_millis(200));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let check = std::sync::Arc::clone(&check);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            check.check(&Method::GET, &x_auth(&token)).await.is_ok()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(engine.authorize_requests(), 1);
}

#[tokio::test]
async fn a_down_engine_fails_closed_unless_fail_open() {
    let (engine, token) = engine_and_token().await;
    let check = build(&settings(&engine.base_url()));
    engine.set_available(false);
    let refusal = refused(&check, Method::GET, &token).await;
    let (detail, retry_after) = refusal.expect_unavailable();
    assert_eq!(
        detail,
        "the authorization server is unavailable: answered 500"
    );
    assert_eq!(retry_after, HOLD_DOWN);
    assert!(!format!("{refusal:?}").contains(&token));
    assert_eq!(engine.authorize_requests(), 1);
    // Within the hold-down the engine is not asked again.
    assert!(check.check(&Method::GET, &x_auth(&token)).await.is_err());
    assert_eq!(engine.authorize_requests(), 1);
    // The failure was not cached: once the engine is back, the request passes.
    engine.set_available(true);
    tokio::time::sleep(HOLD_DOWN).await;
    assert!(check.check(&Method::GET, &x_auth(&token)).await.is_ok());
    assert_eq!(engine.authorize_requests(), 2);

    // fail_open lets the request pass (without identity) while the engine is down.
    let mut open = settings(&engine.base_url());
    open.fail_open = true;
    let open = build(&open);
    engine.set_available(false);
    assert_eq!(open.check(&Method::GET, &x_auth(&token)).await, Ok(None));
    // ...but a decision is still a decision.
    engine.set_available(true);
    tokio::time::sleep(HOLD_DOWN).await;
    assert!(open.check(&Method::GET, &x_auth("unknown")).await.is_err());

    // A stopped engine (connection refused) is unavailable too.
    let base = engine.base_url();
    engine.stop().await;
    let check = build(&settings(&base));
    let refusal = refused(&check, Method::GET, &token).await;
    assert_unavailable(&refusal, "connection failed");
    assert!(!refusal.detail().contains(&base));
}

#[tokio::test]
async fn a_slow_engine_times_out_as_unavailable() {
    let (engine, token) = engine_and_token().await;
    let mut slow = settings(&engine.base_url());
    slow.timeout = Duration::from_millis(200);
    let check = build(&slow);
    engine.set_delay(Duration::from_millis(600));
    let refusal = refused(&check, Method::GET, &token).await;
    assert_unavailable(&refusal, "did not answer within 200ms");
}

#[tokio::test]
async fn me_supplies_the_identity_document() {
    let (engine, token) = engine_and_token().await;
    let mut with_me = settings(&engine.base_url());
    with_me.identity_from_me = true;
    let check = build(&with_me);
    let document = check
        .check(&Method::GET, &x_auth(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(document["username"], "svc-reporting");
    assert_eq!(
        document.pointer("/profile/email").unwrap(),
        "svc-reporting@bigbucks.example"
    );
    assert_eq!(engine.me_requests(), 1);
    // Cached like the decision.
    assert!(check.check(&Method::GET, &x_auth(&token)).await.is_ok());
    assert_eq!(engine.me_requests(), 1);
    assert_eq!(engine.authorize_requests(), 1);
    assert_eq!(check.calls(), 2);
}

#[test]
fn question_keys_do_not_collide_across_parts() {
    assert_ne!(question_key(&[b"ab", b"c"]), question_key(&[b"a", b"bc"]));
    assert_eq!(question_key(&[b"a", b"b"]), question_key(&[b"a", b"b"]));
}
