//! Test helpers: fixed keys (`testdata/`, made once with openssl), token minting, JWKS
//! documents and an in-process JWKS server whose keys can be swapped and whose fetches are
//! counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::jwt::{parse_public_key_pem, PublicKey};
use crate::config::inbound::{
    JwksSettings, JwtKeySettings, JwtSettings, TokenSource, DEFAULT_INBOUND_TIMEOUT,
};
use crate::config::TlsSettings;
use tollgate_standins::RunningServer;

pub const RSA1_PRIVATE: &[u8] = include_bytes!("testdata/rsa1_private.pem");
pub const RSA1_PUBLIC: &[u8] = include_bytes!("testdata/rsa1_public.pem");
pub const RSA1_PUBLIC_PKCS1: &[u8] = include_bytes!("testdata/rsa1_public_pkcs1.pem");
pub const RSA2_PRIVATE: &[u8] = include_bytes!("testdata/rsa2_private.pem");
pub const RSA2_PUBLIC: &[u8] = include_bytes!("testdata/rsa2_public.pem");
pub const RSA_WEAK_PUBLIC: &[u8] = include_bytes!("testdata/rsa_weak_public.pem");
pub const EC256_PRIVATE: &[u8] = include_bytes!("testdata/ec256_private.pem");
pub const EC256_PUBLIC: &[u8] = include_bytes!("testdata/ec256_public.pem");
pub const EC384_PRIVATE: &[u8] = include_bytes!("testdata/ec384_private.pem");
pub const EC384_PUBLIC: &[u8] = include_bytes!("testdata/ec384_public.pem");
pub const ED25519_PRIVATE: &[u8] = include_bytes!("testdata/ed25519_private.pem");
pub const ED25519_PUBLIC: &[u8] = include_bytes!("testdata/ed25519_public.pem");

pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "reports";
pub const HMAC_SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

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

pub fn encoding_key(algorithm: Algorithm, private_pem: &[u8]) -> EncodingKey {
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(private_pem)
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private_pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(private_pem).unwrap(),
    }
}

/// A token signed with `algorithm` by `key` (a private PEM, or the HMAC secret).
pub fn mint(algorithm: Algorithm, key: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(algorithm, key)).unwrap()
}

/// An unsigned token: `{"alg": alg}` header, the claims, an empty signature.
pub fn unsigned(alg: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// A token with a well-formed header naming `kid` and a signature that is not one: enough
/// for every check that happens before a signature is verified, and cheap to make.
pub fn fake_signed(alg: &str, kid: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

/// The JWK of a public PEM, with `kid` and an optional `alg`.
pub fn jwk(public_pem: &[u8], kid: &str, alg: Option<&str>) -> Value {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let mut jwk = match parse_public_key_pem(public_pem).unwrap() {
        PublicKey::Rsa { n, e, .. } => json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)}),
        PublicKey::Ec { curve, point } => {
            let half = (point.len() - 1) / 2;
            json!({
                "kty": "EC",
                "crv": curve.name(),
                "x": b64(&point[1..1 + half]),
                "y": b64(&point[1 + half..]),
            })
        }
        PublicKey::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)}),
    };
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

pub fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

pub fn bearer_source() -> TokenSource {
    TokenSource::Header {
        name: http::header::AUTHORIZATION,
        scheme: Some("Bearer".to_owned()),
    }
}

/// JWT settings checking the test issuer and audience, 30 s leeway, nothing else required.
pub fn jwt_settings(algorithms: &[Algorithm], key: JwtKeySettings) -> JwtSettings {
    JwtSettings {
        from: bearer_source(),
        algorithms: algorithms.to_vec(),
        key,
        issuer: vec![ISSUER.to_owned()],
        audience: vec![AUDIENCE.to_owned()],
        leeway: Duration::from_secs(30),
        required_claims: Vec::new(),
        required_scopes: Vec::new(),
    }
}

pub fn pem_key(pem: &[u8]) -> JwtKeySettings {
    JwtKeySettings::PublicKeyPem {
        path: "testdata/key.pem".into(),
        pem: pem.to_vec(),
    }
}

pub fn jwks_key(url: &str, refresh: Duration, min_refetch: Duration) -> JwtKeySettings {
    JwtKeySettings::Jwks(JwksSettings {
        url: url.parse().unwrap(),
        refresh,
        min_refetch,
        timeout: DEFAULT_INBOUND_TIMEOUT,
        tls: TlsSettings::default(),
    })
}

/// A JWKS endpoint at `/jwks.json` whose document can be swapped, that counts requests and
/// can be switched down (503).
pub struct JwksServer {
    server: RunningServer,
    state: Arc<JwksState>,
}

struct JwksState {
    body: Mutex<String>,
    requests: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

async fn serve_jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.body.lock().unwrap().clone();
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let state = Arc::new(JwksState {
            body: Mutex::new(body),
            requests: AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let router = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(Arc::clone(&state));
        let server = tollgate_standins::serve(router, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        JwksServer { server, state }
    }

    pub fn url(&self) -> String {
        format!("{}/jwks.json", self.server.url())
    }

    pub fn set(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` requests arrived (the warm-up fetch runs in the
    /// background).
    pub async fn wait_for(&self, count: usize) {
        for _ in 0..200 {
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
