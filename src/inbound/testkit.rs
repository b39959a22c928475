//! The inbound unit tests' kit: `tollgate_standins::inbound` (the fixed test keys, token
//! minting, JWKS documents and server, sign-in on the Auth Engine stand-in), which
//! `tests/e2e/inbound.rs` uses too, plus the settings built from tollgate's own config types,
//! which the stand-ins crate cannot name.

use std::time::Duration;

use jsonwebtoken::Algorithm;
pub use tollgate_standins::inbound::*;

use crate::config::inbound::{
    JwksSettings, JwtKeySettings, JwtSettings, TokenSource, DEFAULT_INBOUND_TIMEOUT,
};
use crate::config::TlsSettings;
use crate::keys::PublicKey;

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
        key: PublicKey::from_pem(pem).unwrap(),
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
