//! The kit of tollgate's inbound tests, its unit tests and `tests/e2e/inbound.rs` alike: the
//! fixed keys of `testdata/` (made once with openssl), JWT minting with jsonwebtoken, JWKS
//! documents, a JWKS server whose key set can be swapped (rotation) and whose fetches are
//! counted, and sign-in on the Auth Engine stand-in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::bigbucks::BigBucksStandIn;
use crate::controls::Switches;
use crate::handle::{answer, StandIn, Switched};
use crate::{any_loopback_port, lock};

macro_rules! testdata {
    ($name:literal) => {
        include_bytes!(concat!("../testdata/", $name))
    };
}

pub const RSA1_PRIVATE: &[u8] = testdata!("rsa1_private.pem");
pub const RSA1_PUBLIC: &[u8] = testdata!("rsa1_public.pem");
pub const RSA1_PUBLIC_PKCS1: &[u8] = testdata!("rsa1_public_pkcs1.pem");
pub const RSA2_PRIVATE: &[u8] = testdata!("rsa2_private.pem");
pub const RSA2_PUBLIC: &[u8] = testdata!("rsa2_public.pem");
pub const RSA_WEAK_PUBLIC: &[u8] = testdata!("rsa_weak_public.pem");
pub const EC256_PRIVATE: &[u8] = testdata!("ec256_private.pem");
pub const EC256_PUBLIC: &[u8] = testdata!("ec256_public.pem");
pub const EC384_PRIVATE: &[u8] = testdata!("ec384_private.pem");
pub const EC384_PUBLIC: &[u8] = testdata!("ec384_public.pem");
pub const ED25519_PRIVATE: &[u8] = testdata!("ed25519_private.pem");
pub const ED25519_PUBLIC: &[u8] = testdata!("ed25519_public.pem");

/// The path of the key file `name` of `testdata/`, for a config that names a key file.
pub fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "reports";
pub const HMAC_SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

/// Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims valid for 10 minutes from the test issuer to the test audience.
pub fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "email": "alice@example.test",
        "tenant": "acme",
        "scope": "reports.read reports.list",
        "profile": {"team": "blue"},
    })
}

/// [`claims`] with `changes` merged over it (a `null` removes the claim).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let map = claims.as_object_mut().expect("the claims are an object");
    for (name, value) in changes.as_object().expect("the changes are an object") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// The key that signs with `algorithm`: `key` is a private PEM, or for HMAC the secret's
/// bytes (any bytes: an RSA public PEM, for the algorithm-confusion tests).
pub fn encoding_key(algorithm: Algorithm, key: &[u8]) -> EncodingKey {
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return EncodingKey::from_secret(key)
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key),
        _ => EncodingKey::from_rsa_pem(key),
    };
    key.expect("a test private key of the algorithm's type")
}

/// A token signed with `algorithm` by `key` (see [`encoding_key`]), naming `kid`.
pub fn mint(algorithm: Algorithm, key: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(algorithm, key)).expect("signing")
}

/// An unsigned token: a `{"alg": alg}` header (naming `kid` when given), the claims, an
/// empty signature.
pub fn unsigned(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// A token with a well-formed header naming `kid` and a signature that is not one: enough
/// for every check that happens before a signature is verified, and cheap to make.
pub fn fake_signed(alg: &str, kid: &str) -> String {
    format!("{}c2lnbmF0dXJl", unsigned(alg, Some(kid), &claims()))
}

/// The JWK of a public PEM (SPKI: RSA, EC P-256 or P-384, Ed25519), with `kid`,
/// `use: sig` and an optional `alg`.
pub fn jwk(public_pem: &[u8], kid: &str, alg: Option<&str>) -> Value {
    let (_, pem) = x509_parser::pem::parse_x509_pem(public_pem).expect("a PEM block");
    let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).expect("an SPKI public key");
    let b64 = |bytes: &[u8]| {
        // Big-endian integers without their leading zero bytes, as RFC 7518 wants them.
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        URL_SAFE_NO_PAD.encode(&bytes[start..])
    };
    let mut jwk = match spki.parsed().expect("a parsable public key") {
        PublicKey::RSA(rsa) => json!({"kty": "RSA", "n": b64(rsa.modulus), "e": b64(rsa.exponent)}),
        PublicKey::EC(point) => {
            // An uncompressed SEC1 point: 0x04, x, y.
            let point = point.data();
            let half = (point.len() - 1) / 2;
            let curve = if half == 32 { "P-256" } else { "P-384" };
            json!({
                "kty": "EC",
                "crv": curve,
                "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
                "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
            })
        }
        _ => {
            let x = URL_SAFE_NO_PAD.encode(&spki.subject_public_key.data);
            json!({"kty": "OKP", "crv": "Ed25519", "x": x})
        }
    };
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header-safe token"),
    );
    headers
}

/// `POST {base_url}/signin` on the Auth Engine stand-in: the JWT it answers (a JSON
/// string), after checking that it answered 200.
pub async fn signin(engine: &BigBucksStandIn, user: &str, password: &str) -> String {
    let reply = reqwest::Client::new()
        .post(format!("{}/signin", engine.base_url()))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("POST /signin");
    assert_eq!(reply.status(), 200, "signin of {user}");
    let token: Value = reply.json().await.expect("signin answers JSON");
    token
        .as_str()
        .unwrap_or_else(|| panic!("signin answered {token}, not a JSON string"))
        .to_owned()
}

/// The path the JWKS server serves its document at.
pub const JWKS_PATH: &str = "/jwks.json";

/// A JWKS endpoint at [`JWKS_PATH`] whose document can be swapped (key rotation at the
/// issuer) and whose requests are counted. Down, it answers a bare 503.
pub type JwksServer = StandIn<Jwks>;

/// The state of the JWKS server.
pub struct Jwks {
    switches: Switches,
    body: Mutex<String>,
    requests: AtomicUsize,
}

impl Switched for Jwks {
    fn switches(&self) -> &Switches {
        &self.switches
    }
}

fn serve_jwks(jwks: &Jwks, _: &HeaderMap, _: &[u8]) -> Response {
    jwks.requests.fetch_add(1, Ordering::SeqCst);
    if !jwks.switches.is_available() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = lock(&jwks.body).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl JwksServer {
    /// Start on `127.0.0.1:0`, serving `body`.
    pub async fn start(body: String) -> JwksServer {
        let jwks = |_| Jwks {
            switches: Switches::default(),
            body: Mutex::new(body),
            requests: AtomicUsize::new(0),
        };
        let router =
            Router::<Arc<Jwks>>::new().route(JWKS_PATH, answer(MethodFilter::GET, serve_jwks));
        Self::launch(any_loopback_port(), jwks, router)
            .await
            .expect("start the JWKS server")
    }

    /// `url() + "/jwks.json"`.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.url())
    }

    /// Serves `body` from now on (key rotation at the issuer).
    pub fn set(&self, body: String) {
        *lock(&self.state().body) = body;
    }

    /// Requests so far, whatever the answer.
    pub fn requests(&self) -> usize {
        self.state().requests.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until at least `count` requests arrived: the gateway's warm-up
    /// fetches run in the background.
    pub async fn wait_for(&self, count: usize) {
        for _ in 0..500 {
            if self.requests() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the JWKS endpoint saw {} requests, not {count}",
            self.requests()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_of_every_key_type() {
        let rsa = jwk(RSA1_PUBLIC, "r", Some("RS256"));
        assert_eq!(
            (rsa["kty"].as_str(), rsa["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        assert_eq!(rsa["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "a 2048-bit modulus without a leading zero");
        for (pem, curve, size) in [(EC256_PUBLIC, "P-256", 32), (EC384_PUBLIC, "P-384", 48)] {
            let ec = jwk(pem, "e", None);
            assert_eq!(
                (ec["kty"].as_str(), ec["crv"].as_str()),
                (Some("EC"), Some(curve))
            );
            for coordinate in ["x", "y"] {
                let bytes = URL_SAFE_NO_PAD
                    .decode(ec[coordinate].as_str().unwrap())
                    .unwrap();
                assert_eq!(bytes.len(), size);
            }
            assert!(ec.get("alg").is_none());
        }
        let ed = jwk(ED25519_PUBLIC, "d", None);
        assert_eq!(
            (ed["kty"].as_str(), ed["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(ed["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(ed["use"], "sig");
        assert!(key_path("rsa1_public.pem").is_file());
    }

    #[test]
    fn minted_tokens_carry_kid_and_claims() {
        let token = mint(
            Algorithm::ES256,
            EC256_PRIVATE,
            Some("k"),
            &claims_with(json!({"sub": "bob", "tenant": null})),
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::ES256, Some("k"))
        );
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["sub"], "bob");
        assert!(claims.get("tenant").is_none());
        assert!(unsigned("none", None, &claims).ends_with('.'));
        assert!(fake_signed("RS256", "x").ends_with(".c2lnbmF0dXJl"));
    }

    #[tokio::test]
    async fn the_jwks_server_serves_swaps_counts_and_goes_down() {
        let server = JwksServer::start(jwks(vec![jwk(RSA1_PUBLIC, "a", None)])).await;
        let fetch = || async {
            let reply = reqwest::get(server.jwks_url()).await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        };
        let (status, body) = fetch().await;
        assert_eq!(status, 200);
        assert!(body.contains("\"kid\":\"a\""), "{body}");
        server.set(jwks(vec![]));
        assert_eq!(fetch().await, (200, r#"{"keys":[]}"#.to_owned()));
        server.set_available(false);
        assert_eq!(fetch().await.0, 503);
        server.wait_for(3).await;
        assert_eq!(server.requests(), 3);
    }
}
