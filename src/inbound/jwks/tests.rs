use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::runtime::Handle;

use super::*;
use crate::inbound::jwt::JwtCheck;
use crate::inbound::testkit::*;

const LONG: Duration = Duration::from_secs(300);

fn check_for(server: &JwksServer, refresh: Duration, min_refetch: Duration) -> JwtCheck {
    let settings = jwt_settings(
        &[Algorithm::RS256, Algorithm::ES256],
        jwks_key(&server.jwks_url(), refresh, min_refetch),
    );
    JwtCheck::build(&settings, Handle::current()).unwrap()
}

#[tokio::test]
async fn tokens_verify_against_the_jwks_by_kid() {
    let server = JwksServer::start(jwks(vec![
        jwk(RSA1_PUBLIC, "rsa-1", Some("RS256")),
        jwk(EC256_PUBLIC, "ec-1", None),
    ]))
    .await;
    let check = check_for(&server, LONG, LONG);
    for (algorithm, private, kid) in [
        (Algorithm::RS256, RSA1_PRIVATE, "rsa-1"),
        (Algorithm::ES256, EC256_PRIVATE, "ec-1"),
    ] {
        let token = mint(algorithm, private, Some(kid), &claims());
        let claims = check.check(&bearer(&token)).await.unwrap();
        assert_eq!(claims["sub"], "alice");
    }
    // Without a kid, the keys that fit the algorithm are tried.
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());
    assert!(check.check(&bearer(&token)).await.is_ok());
    // A known kid naming another key's signature is a bad signature, not a pass.
    let token = mint(Algorithm::RS256, RSA2_PRIVATE, Some("rsa-1"), &claims());
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(refusal.detail(), "the token's signature is not valid");
    // One fetch served all of it.
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_jwk_alg_and_key_type_decide_the_algorithm() {
    let server = JwksServer::start(jwks(vec![
        jwk(RSA1_PUBLIC, "rsa-1", Some("RS256")),
        jwk(EC256_PUBLIC, "ec-1", None),
        // A symmetric key in a JWKS is never used.
        json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET)}),
    ]))
    .await;
    let settings = jwt_settings(
        &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
        jwks_key(&server.jwks_url(), LONG, LONG),
    );
    let check = JwtCheck::build(&settings, Handle::current()).unwrap();
    // PS256 is configured and RSA could do it, but the JWK says RS256.
    let token = mint(Algorithm::PS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(
        refusal.detail(),
        "the token's algorithm does not fit the key"
    );
    // An ES256 token naming the RSA key.
    let token = mint(Algorithm::ES256, EC256_PRIVATE, Some("rsa-1"), &claims());
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(
        refusal.detail(),
        "the token's algorithm does not fit the key"
    );
    // HS256 with the symmetric key: not a configured algorithm, and the key was dropped.
    let token = mint(
        Algorithm::HS256,
        HMAC_SECRET.as_bytes(),
        Some("hmac"),
        &claims(),
    );
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(
        refusal.detail(),
        "the token's algorithm is not accepted here"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_and_rotated_keys_are_accepted() {
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    let min_refetch = Duration::from_millis(300);
    let check = check_for(&server, LONG, min_refetch);
    let old = mint(Algorithm::RS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    assert!(check.check(&bearer(&old)).await.is_ok());
    assert_eq!(server.requests(), 1);

    // The issuer rotates: rsa-2 is added.
    server.set(jwks(vec![
        jwk(RSA1_PUBLIC, "rsa-1", None),
        jwk(RSA2_PUBLIC, "rsa-2", None),
    ]));
    let new = mint(Algorithm::RS256, RSA2_PRIVATE, Some("rsa-2"), &claims());
    tokio::time::sleep(min_refetch).await;
    let claims = check.check(&bearer(&new)).await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(server.requests(), 2, "one refetch for the new kid");
    assert!(check.check(&bearer(&new)).await.is_ok());
    assert!(check.check(&bearer(&old)).await.is_ok());
    assert_eq!(server.requests(), 2);

    // rsa-1 is retired; once the set is refetched, its tokens no longer pass.
    server.set(jwks(vec![jwk(RSA2_PUBLIC, "rsa-2", None)]));
    tokio::time::sleep(min_refetch).await;
    let unknown = mint(
        Algorithm::RS256,
        RSA2_PRIVATE,
        Some("rsa-3"),
        &crate::inbound::testkit::claims(),
    );
    assert!(check.check(&bearer(&unknown)).await.is_err());
    assert_eq!(server.requests(), 3);
    let refusal = check.check(&bearer(&old)).await.unwrap_err();
    assert_eq!(refusal.detail(), "the token is signed with an unknown key");
    assert!(check.check(&bearer(&new)).await.is_ok());
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_interval() {
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    let check = check_for(&server, LONG, Duration::from_secs(60));
    server.wait_for(1).await;
    let mut refused = 0;
    for index in 0..200 {
        let token = fake_signed("RS256", &format!("made-up-{index}"));
        let refusal = check.check(&bearer(&token)).await.unwrap_err();
        assert_eq!(refusal.detail(), "the token is signed with an unknown key");
        refused += 1;
    }
    assert_eq!(refused, 200);
    // The warm-up fetch only: it was less than a minute ago.
    assert_eq!(server.requests(), 1);
    let good = mint(Algorithm::RS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    assert!(check.check(&bearer(&good)).await.is_ok());

    // With a short interval, a sustained flood refetches at most once per interval.
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    let interval = Duration::from_millis(200);
    let check = std::sync::Arc::new(check_for(&server, LONG, interval));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let check = std::sync::Arc::clone(&check);
        tasks.push(tokio::spawn(async move {
            let mut index = 0;
            while started.elapsed() < Duration::from_millis(900) {
                let token = fake_signed("RS256", &format!("flood-{worker}-{index}"));
                assert!(check.check(&bearer(&token)).await.is_err());
                index += 1;
            }
            index
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let allowed = 1 + (elapsed.as_millis() / interval.as_millis()) as usize + 1;
    assert!(total > 50, "the flood was too small to tell ({total})");
    assert!(
        server.requests() <= allowed,
        "{} fetches for {total} bad kids in {elapsed:?}",
        server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    let check = std::sync::Arc::new(check_for(&server, LONG, LONG));
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let check = std::sync::Arc::clone(&check);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            check.check(&bearer(&token)).await.is_ok()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn the_set_is_refreshed_after_its_lifetime() {
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    let refresh = Duration::from_millis(300);
    let check = check_for(&server, refresh, Duration::from_millis(100));
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    assert!(check.check(&bearer(&token)).await.is_ok());
    assert_eq!(server.requests(), 1);
    // rsa-1 is dropped by the issuer; after the refresh interval it is gone here too,
    // without any unknown kid to trigger it.
    server.set(jwks(vec![jwk(RSA2_PUBLIC, "rsa-2", None)]));
    tokio::time::sleep(refresh + Duration::from_millis(100)).await;
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(refusal.detail(), "the token is signed with an unknown key");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_down_issuer_is_503_until_it_answers_and_stale_keys_carry_on() {
    let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "rsa-1", None)])).await;
    server.set_available(false);
    let interval = Duration::from_millis(500);
    let check = check_for(&server, Duration::from_millis(1000), interval);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, Some("rsa-1"), &claims());
    server.wait_for(1).await;
    let refusal = check.check(&bearer(&token)).await.unwrap_err();
    let (detail, retry_after) = refusal.expect_unavailable();
    assert!(
        detail.starts_with("the issuer's JWKS cannot be fetched"),
        "{detail}"
    );
    assert!(!detail.contains("127.0.0.1"), "no URL in details: {detail}");
    assert!(retry_after >= Duration::from_secs(1));
    // Requests during the interval do not hit the issuer again.
    for _ in 0..20 {
        assert!(check.check(&bearer(&token)).await.is_err());
    }
    assert_eq!(server.requests(), 1);

    server.set_available(true);
    tokio::time::sleep(interval).await;
    assert!(check.check(&bearer(&token)).await.is_ok());
    assert_eq!(server.requests(), 2);

    // The issuer goes down again: after the set's lifetime the last good keys stay in use.
    server.set_available(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        check.check(&bearer(&token)).await.is_ok(),
        "stale keys are used"
    );
    assert_eq!(server.requests(), 3);
    // ...and the retry is once per interval, not per request.
    for _ in 0..5 {
        assert!(check.check(&bearer(&token)).await.is_ok());
    }
    assert_eq!(server.requests(), 3);
}

#[test]
fn jwks_documents_are_parsed_defensively() {
    let configured = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let body = jwks(vec![
        jwk(RSA1_PUBLIC, "rsa", None),
        jwk(EC256_PUBLIC, "ec256", None),
        jwk(EC384_PUBLIC, "ec384", None),
        jwk(ED25519_PUBLIC, "ed", None),
        json!({"kty": "RSA", "kid": "weak", "e": "AQAB",
               "n": URL_SAFE_NO_PAD.encode([0xc3u8; 128])}),
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}),
        json!({"kty": "EC", "kid": "curve", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "EC", "kid": "offcurve", "crv": "P-256",
               "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([1u8; 32])}),
        json!({"kty": "RSA", "kid": "alg", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "nope"}),
        json!("not an object"),
    ]);
    let keys = parse_jwks(body.as_bytes(), &configured).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["rsa", "ec256", "ec384", "ed"]);
    assert_eq!(keys[0].algorithms, [Algorithm::RS256]);
    assert_eq!(keys[1].algorithms, [Algorithm::ES256]);
    assert_eq!(keys[2].algorithms, [Algorithm::ES384]);
    // Keys no configured algorithm can use are left out.
    let keys = parse_jwks(body.as_bytes(), &[Algorithm::ES256]).unwrap();
    assert_eq!(keys.len(), 1);
    for bad in ["", "{}", "[]", "{\"keys\": 5}", "null"] {
        assert!(parse_jwks(bad.as_bytes(), &configured).is_err(), "{bad}");
    }
    // A huge set is capped.
    let many: Vec<_> = (0..100)
        .map(|i| jwk(EC256_PUBLIC, &format!("k{i}"), None))
        .collect();
    assert_eq!(
        parse_jwks(jwks(many).as_bytes(), &configured)
            .unwrap()
            .len(),
        MAX_KEYS
    );
}
