//! Helpers of the inbound end-to-end tests (`tests/inbound.rs`): the fixed test keys of
//! `src/inbound/testdata/`, token minting with jsonwebtoken, a JWKS server whose key set can
//! be swapped (rotation) and whose fetches are counted, and sign-in on the Auth Engine
//! stand-in.
//!
//! `src/inbound/testkit.rs` is `#[cfg(test)]` inside the crate, so integration tests cannot
//! use it; what they need is rebuilt here from the same PEM files.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tollgate_standins::RunningServer;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

macro_rules! testdata {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/inbound/testdata/",
            $name
        ))
    };
}

pub const RSA1_PRIVATE: &[u8] = testdata!("rsa1_private.pem");
pub const RSA1_PUBLIC: &[u8] = testdata!("rsa1_public.pem");
pub const RSA2_PRIVATE: &[u8] = testdata!("rsa2_private.pem");
pub const RSA2_PUBLIC: &[u8] = testdata!("rsa2_public.pem");

pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "reports";

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
        "scope": "reports.read reports.list",
    })
}

/// `claims()` with `changes` merged over it (a `null` removes the claim).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let map = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// An RS256 token signed by the private PEM `key`, naming `kid`.
pub fn rs256(key: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(key).expect("test RSA private key");
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// An HMAC token signed with `secret` as the key bytes (for algorithm confusion: the RSA
/// public key's PEM used as an HMAC secret).
pub fn hmac(algorithm: Algorithm, secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// An unsigned token: `{"alg": alg}` header (with `kid` when given), the claims, an empty
/// signature.
pub fn unsigned(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// The RSA JWK of a public PEM (SPKI) with `kid`, `use: sig`, `alg: RS256`.
pub fn rsa_jwk(public_pem: &[u8], kid: &str) -> Value {
    let (_, pem) = x509_parser::pem::parse_x509_pem(public_pem).expect("a PEM block");
    let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).expect("an SPKI public key");
    let PublicKey::RSA(rsa) = spki.parsed().expect("a parsable public key") else {
        panic!("not an RSA key");
    };
    let b64 = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        URL_SAFE_NO_PAD.encode(&bytes[start..])
    };
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64(rsa.modulus),
        "e": b64(rsa.exponent),
    })
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

/// A JWKS endpoint at `/jwks.json` whose document can be swapped and whose requests are
/// counted.
pub struct JwksServer {
    server: RunningServer,
    state: Arc<JwksState>,
}

struct JwksState {
    body: Mutex<String>,
    requests: AtomicUsize,
}

async fn serve_jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let body = state.body.lock().unwrap().clone();
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let state = Arc::new(JwksState {
            body: Mutex::new(body),
            requests: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(Arc::clone(&state));
        let server = tollgate_standins::serve(router, ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the JWKS server");
        JwksServer { server, state }
    }

    pub fn url(&self) -> String {
        format!("{}/jwks.json", self.server.url())
    }

    /// Serves `body` from now on (key rotation at the issuer).
    pub fn set(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
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

/// `POST {base_url}/signin` on the Auth Engine stand-in: the JWT it answers (a JSON string).
pub async fn signin(
    client: &reqwest::Client,
    base_url: &str,
    user: &str,
    password: &str,
) -> String {
    let reply = client
        .post(format!("{base_url}/signin"))
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
