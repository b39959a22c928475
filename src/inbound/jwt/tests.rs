use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::runtime::Handle;

use super::*;
use crate::config::inbound::{JwtKeySettings, JwtSettings, TokenSource};
use crate::inbound::testkit::*;
use crate::secret::Secret;

fn build(settings: &JwtSettings) -> JwtCheck {
    JwtCheck::build(settings, Handle::current()).unwrap()
}

fn rsa_check() -> JwtCheck {
    build(&jwt_settings(&[Algorithm::RS256], pem_key(RSA1_PUBLIC)))
}

fn detail_of(refusal: &Refusal) -> (&'static str, String, String) {
    match refusal {
        Refusal::Unauthenticated {
            detail,
            www_authenticate,
        } => ("401", detail.clone(), www_authenticate.clone()),
        Refusal::Forbidden { detail } => ("403", detail.clone(), String::new()),
        Refusal::Unavailable { detail, .. } => ("503", detail.clone(), String::new()),
    }
}

/// Asserts a 401 with `detail`, an RFC 6750 challenge, and no trace of the token.
fn assert_invalid(result: Result<Value, Refusal>, detail: &str, token: &str) {
    let refusal = result.expect_err("the token must be refused");
    let (status, got, challenge) = detail_of(&refusal);
    assert_eq!(status, "401", "{refusal:?}");
    assert_eq!(got, detail);
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"{detail}\""
        )
    );
    if token.len() > 8 {
        assert!(!format!("{refusal:?}").contains(token));
    }
}

#[tokio::test]
async fn valid_tokens_of_every_key_type_pass() {
    let cases: [(Algorithm, &[u8], &[u8]); 7] = [
        (Algorithm::RS256, RSA1_PRIVATE, RSA1_PUBLIC),
        (Algorithm::RS256, RSA1_PRIVATE, RSA1_PUBLIC_PKCS1),
        (Algorithm::PS256, RSA1_PRIVATE, RSA1_PUBLIC),
        (Algorithm::RS512, RSA2_PRIVATE, RSA2_PUBLIC),
        (Algorithm::ES256, EC256_PRIVATE, EC256_PUBLIC),
        (Algorithm::ES384, EC384_PRIVATE, EC384_PUBLIC),
        (Algorithm::EdDSA, ED25519_PRIVATE, ED25519_PUBLIC),
    ];
    for (algorithm, private, public) in cases {
        let check = build(&jwt_settings(&[algorithm], pem_key(public)));
        let token = mint(algorithm, private, None, &claims());
        let verified = check.check(&bearer(&token)).await.unwrap();
        assert_eq!(verified["sub"], "alice", "{algorithm:?}");
        assert_eq!(verified["email"], "alice@example.test");
    }
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let check = build(&jwt_settings(
            &[algorithm],
            JwtKeySettings::Secret(Secret::new(HMAC_SECRET)),
        ));
        let token = mint(algorithm, HMAC_SECRET.as_bytes(), None, &claims());
        assert!(check.check(&bearer(&token)).await.is_ok(), "{algorithm:?}");
    }
}

#[tokio::test]
async fn expiry_and_not_before_honour_the_leeway() {
    let check = rsa_check();
    let mut expired = claims();
    expired["exp"] = json!(now() - 120);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &expired);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token has expired",
        &token,
    );

    let mut just_expired = claims();
    just_expired["exp"] = json!(now() - 10);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &just_expired);
    assert!(
        check.check(&bearer(&token)).await.is_ok(),
        "within the 30s leeway"
    );

    let mut early = claims();
    early["nbf"] = json!(now() + 120);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &early);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token is not valid yet (nbf)",
        &token,
    );

    let mut nearly = claims();
    nearly["nbf"] = json!(now() + 10);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &nearly);
    assert!(
        check.check(&bearer(&token)).await.is_ok(),
        "within the leeway"
    );

    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &no_exp);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token has no exp claim",
        &token,
    );

    let mut bad_exp = claims();
    bad_exp["exp"] = json!("tomorrow");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &bad_exp);
    assert!(check.check(&bearer(&token)).await.is_err());
}

#[tokio::test]
async fn issuer_and_audience_are_checked() {
    let check = rsa_check();
    let mut other_issuer = claims();
    other_issuer["iss"] = json!("https://evil.test/");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &other_issuer);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token's issuer is not accepted",
        &token,
    );

    let mut no_issuer = claims();
    no_issuer.as_object_mut().unwrap().remove("iss");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &no_issuer);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token has no iss claim",
        &token,
    );

    let mut other_audience = claims();
    other_audience["aud"] = json!("billing");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &other_audience);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token's audience is not accepted",
        &token,
    );

    let mut several = claims();
    several["aud"] = json!(["billing", AUDIENCE]);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &several);
    assert!(
        check.check(&bearer(&token)).await.is_ok(),
        "one audience matches"
    );

    let mut no_audience = claims();
    no_audience.as_object_mut().unwrap().remove("aud");
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &no_audience);
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token has no aud claim",
        &token,
    );

    // Without a configured audience, `aud` is not checked.
    let mut settings = jwt_settings(&[Algorithm::RS256], pem_key(RSA1_PUBLIC));
    settings.audience.clear();
    settings.issuer.clear();
    let lenient = build(&settings);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &other_audience);
    assert!(lenient.check(&bearer(&token)).await.is_ok());
}

#[tokio::test]
async fn bad_signatures_are_refused() {
    let check = rsa_check();
    // Signed by another key.
    let token = mint(Algorithm::RS256, RSA2_PRIVATE, None, &claims());
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token's signature is not valid",
        &token,
    );
    // Claims changed after signing.
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims();
    forged["sub"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    let forged = parts.join(".");
    assert_invalid(
        check.check(&bearer(&forged)).await,
        "the token's signature is not valid",
        &forged,
    );
    // Signature stripped.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert!(check.check(&bearer(&stripped)).await.is_err());
    // HMAC with the wrong secret.
    let hmac = build(&jwt_settings(
        &[Algorithm::HS256],
        JwtKeySettings::Secret(Secret::new(HMAC_SECRET)),
    ));
    let token = mint(
        Algorithm::HS256,
        b"another-secret-of-at-least-32-bytes!!!",
        None,
        &claims(),
    );
    assert_invalid(
        hmac.check(&bearer(&token)).await,
        "the token's signature is not valid",
        &token,
    );
}

#[tokio::test]
async fn alg_none_is_never_accepted() {
    let rsa = rsa_check();
    let hmac = build(&jwt_settings(
        &[Algorithm::HS256],
        JwtKeySettings::Secret(Secret::new(HMAC_SECRET)),
    ));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = unsigned(alg, None, &claims());
        for check in [&rsa, &hmac] {
            assert_invalid(
                check.check(&bearer(&token)).await,
                "unsigned tokens (alg none) are never accepted",
                &token,
            );
        }
    }
    // `none` with a signature part attached is still refused.
    let token = format!("{}c2ln", unsigned("none", None, &claims()));
    assert!(rsa.check(&bearer(&token)).await.is_err());
}

#[tokio::test]
async fn an_hmac_token_never_verifies_against_a_public_key() {
    // The classic confusion attack: HS256 "signed" with the public key's PEM as secret.
    let token = mint(Algorithm::HS256, RSA1_PUBLIC, None, &claims());
    let check = rsa_check();
    assert_invalid(
        check.check(&bearer(&token)).await,
        "the token's algorithm is not accepted here",
        &token,
    );
    // Even if HS256 were listed next to a public key (config validation refuses that), the
    // key type decides: the RSA key does not verify HS256.
    let confused = build(&jwt_settings(
        &[Algorithm::RS256, Algorithm::HS256],
        pem_key(RSA1_PUBLIC),
    ));
    assert_invalid(
        confused.check(&bearer(&token)).await,
        "the token's algorithm does not fit the key",
        &token,
    );
    let token = mint(Algorithm::HS256, RSA1_PUBLIC_PKCS1, None, &claims());
    assert!(confused.check(&bearer(&token)).await.is_err());
    // And an RS token against an HMAC secret is refused too.
    let hmac = build(&jwt_settings(
        &[Algorithm::HS256],
        JwtKeySettings::Secret(Secret::new(HMAC_SECRET)),
    ));
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());
    assert_invalid(
        hmac.check(&bearer(&token)).await,
        "the token's algorithm is not accepted here",
        &token,
    );
    // A P-256 key verifies ES256 only, not ES384.
    let ec = build(&jwt_settings(
        &[Algorithm::ES256, Algorithm::ES384],
        pem_key(EC256_PUBLIC),
    ));
    let token = mint(Algorithm::ES384, EC384_PRIVATE, None, &claims());
    assert_invalid(
        ec.check(&bearer(&token)).await,
        "the token's algorithm does not fit the key",
        &token,
    );
}

#[tokio::test]
async fn a_missing_or_malformed_credential_is_refused() {
    let check = rsa_check();
    let refusal = check.check(&HeaderMap::new()).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Unauthenticated {
            detail: "no credential was sent".into(),
            www_authenticate: "Bearer realm=\"tollgate\"".into(),
        }
    );
    // Another scheme is no bearer token at all.
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Basic YWxpY2U6cHc="),
    );
    let refusal = check.check(&headers).await.unwrap_err();
    assert_eq!(refusal.detail(), "no credential was sent");

    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());
    let malformed: Vec<(HeaderMap, &str)> = vec![
        (
            {
                let mut h = HeaderMap::new();
                h.insert("authorization", HeaderValue::from_static("Bearer"));
                h
            },
            "the scheme is not followed by a credential",
        ),
        (
            {
                let mut h = bearer(&token);
                h.append(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
                h
            },
            "the credential header appears more than once",
        ),
        (
            {
                let mut h = HeaderMap::new();
                h.insert("authorization", HeaderValue::from_static("Bearer a b"));
                h
            },
            "the credential holds spaces or control characters",
        ),
    ];
    for (headers, detail) in malformed {
        let refusal = check.check(&headers).await.unwrap_err();
        let (status, got, challenge) = detail_of(&refusal);
        assert_eq!((status, got.as_str()), ("401", detail));
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{challenge}"
        );
    }
    // The scheme is case-insensitive and extra spaces are fine.
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("bearer   {token}")).unwrap(),
    );
    assert!(check.check(&headers).await.is_ok());
}

#[tokio::test]
async fn garbage_never_panics_and_is_refused() {
    let check = rsa_check();
    let hmac = build(&jwt_settings(
        &[Algorithm::HS256],
        JwtKeySettings::Secret(Secret::new(HMAC_SECRET)),
    ));
    let header = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    let long = "a".repeat(20_000);
    let inputs = vec![
        "x".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        "a.b.c.d".to_owned(),
        "...".to_owned(),
        "eyJ.eyJ.".to_owned(),
        format!("{}.{body}.sig", header(json!({"alg": 5}))),
        format!("{}.{body}.sig", header(json!({}))),
        format!("{}.{body}.sig", header(json!([]))),
        format!(
            "{}.{body}.sig",
            header(json!({"alg": "RS256", "crit": ["exp"]}))
        ),
        format!("{}.{body}.sig", header(json!({"alg": "XS999"}))),
        format!("{}.bm90IGpzb24.sig", header(json!({"alg": "RS256"}))),
        format!(
            "{}.{}.sig",
            header(json!({"alg": "RS256"})),
            URL_SAFE_NO_PAD.encode("[1,2]")
        ),
        format!("{}.{body}.!!!", header(json!({"alg": "RS256"}))),
        format!("{}.{body}.sig", header(json!({"alg": "HS256"}))),
        long,
    ];
    for input in &inputs {
        for check in [&check, &hmac] {
            let headers = bearer(input);
            let refusal = check.check(&headers).await.expect_err(input);
            assert_eq!(refusal.status(), 401, "{input}: {refusal:?}");
        }
    }
    // Exotic claim values do not panic either.
    for value in [json!(u64::MAX), json!(-1), json!(1e300), json!(null)] {
        let mut odd = claims();
        odd["exp"] = value.clone();
        odd["nbf"] = value;
        let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &odd);
        let _ = check.check(&bearer(&token)).await;
    }
}

#[tokio::test]
async fn the_token_is_read_from_the_configured_place() {
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());

    let mut settings = jwt_settings(&[Algorithm::RS256], pem_key(RSA1_PUBLIC));
    settings.from = TokenSource::Header {
        name: http::HeaderName::from_static("x-auth"),
        scheme: None,
    };
    let x_auth = build(&settings);
    let mut headers = HeaderMap::new();
    headers.insert("x-auth", HeaderValue::from_str(&token).unwrap());
    assert!(x_auth.check(&headers).await.is_ok());
    // The bearer header does not count for this route.
    let refusal = x_auth.check(&bearer(&token)).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Unauthenticated {
            detail: "no credential was sent".into(),
            www_authenticate: "Token realm=\"tollgate\", header=\"x-auth\"".into(),
        }
    );

    settings.from = TokenSource::Header {
        name: http::HeaderName::from_static("x-token"),
        scheme: Some("JWT".into()),
    };
    let custom_scheme = build(&settings);
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-token",
        HeaderValue::from_str(&format!("JWT {token}")).unwrap(),
    );
    assert!(custom_scheme.check(&headers).await.is_ok());

    settings.from = TokenSource::Cookie {
        name: "session".into(),
    };
    let cookie = build(&settings);
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("theme=dark; session={token}; lang=en")).unwrap(),
    );
    assert!(cookie.check(&headers).await.is_ok());
    // Cookies split across headers (HTTP/2) are found too.
    let mut headers = HeaderMap::new();
    headers.append("cookie", HeaderValue::from_static("theme=dark"));
    headers.append(
        "cookie",
        HeaderValue::from_str(&format!("session=\"{token}\"")).unwrap(),
    );
    assert!(cookie.check(&headers).await.is_ok());
    // A second session cookie is ambiguous.
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("session={token}; session=other")).unwrap(),
    );
    let refusal = cookie.check(&headers).await.unwrap_err();
    assert_eq!(
        refusal.detail(),
        "the credential cookie appears more than once"
    );
    // A cookie whose name only ends in `session` is not it.
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("oldsession={token}")).unwrap(),
    );
    let refusal = cookie.check(&headers).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Unauthenticated {
            detail: "no credential was sent".into(),
            www_authenticate: "Cookie realm=\"tollgate\", cookie=\"session\"".into(),
        }
    );
}

#[tokio::test]
async fn required_claims_and_scopes_give_403() {
    let mut settings = jwt_settings(&[Algorithm::RS256], pem_key(RSA1_PUBLIC));
    settings.required_claims = vec![
        ("tenant".into(), json!("acme")),
        ("/profile/team".into(), json!("blue")),
    ];
    settings.required_scopes = vec!["reports.read".into()];
    let check = build(&settings);
    let token = mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims());
    assert!(check.check(&bearer(&token)).await.is_ok());

    let forbidden = |mutate: &dyn Fn(&mut Value)| {
        let mut claims = claims();
        mutate(&mut claims);
        mint(Algorithm::RS256, RSA1_PRIVATE, None, &claims)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            forbidden(&|c| c["tenant"] = json!("globex")),
            "the token's `tenant` claim does not have the required value",
        ),
        (
            forbidden(&|c| {
                c.as_object_mut().unwrap().remove("tenant");
            }),
            "the token's `tenant` claim does not have the required value",
        ),
        (
            forbidden(&|c| c["profile"]["team"] = json!("red")),
            "the token's `/profile/team` claim does not have the required value",
        ),
        (
            forbidden(&|c| c["scope"] = json!("reports.list")),
            "the token lacks the scope `reports.read`",
        ),
        (
            forbidden(&|c| {
                c.as_object_mut().unwrap().remove("scope");
            }),
            "the token lacks the scope `reports.read`",
        ),
    ];
    for (token, detail) in cases {
        let refusal = check.check(&bearer(&token)).await.unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Forbidden {
                detail: detail.into()
            }
        );
    }
    // `scp` as a list, and a list claim that contains the required value.
    let token = forbidden(&|c| {
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["reports.read"]);
        c["tenant"] = json!(["globex", "acme"]);
    });
    assert!(check.check(&bearer(&token)).await.is_ok());
}
