//! Demo tokens: HS256 JWTs signed with a fixed, public demo key, and opaque tokens.
//!
//! The key is in the source on purpose: these tokens only ever travel between the stand-ins
//! and the gateway on loopback. The gateway reads `exp` without the key; tests that want to
//! check a signature use [`verify`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// The fixed HS256 key of every demo JWT. Not a secret.
pub const DEMO_KEY: &[u8] = b"tollgate-demo-signing-key-not-a-secret";

/// The claims of a demo JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds (now + ttl).
    pub exp: u64,
    /// Random, so two tokens minted in the same second differ.
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// RFC 8693 section 4.1: the party acting for the subject, in an exchanged token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// The `act` claim (RFC 8693 section 4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

/// The `aud` claim: one audience, or several (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// `None` for no audiences, one as a string, several as a list.
    pub fn of(audiences: &[String]) -> Option<Audience> {
        match audiences {
            [] => None,
            [one] => Some(Audience::One(one.clone())),
            many => Some(Audience::Many(many.to_vec())),
        }
    }

    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }

    /// The audience when there is exactly one.
    pub fn as_one(&self) -> Option<&str> {
        match self {
            Audience::One(one) => Some(one),
            Audience::Many(_) => None,
        }
    }
}

/// An HS256 JWT for `subject` from `issuer`, valid for `ttl`.
pub fn mint(subject: &str, issuer: &str, ttl: Duration) -> String {
    mint_with_audience(subject, issuer, None, ttl)
}

/// [`mint`] with an optional `aud` claim.
pub fn mint_with_audience(
    subject: &str,
    issuer: &str,
    audience: Option<&str>,
    ttl: Duration,
) -> String {
    let audiences: Vec<String> = audience.into_iter().map(str::to_owned).collect();
    mint_for_audiences(subject, issuer, &audiences, ttl)
}

/// [`mint`] with `aud` naming `audiences` (none, one, or several).
pub fn mint_for_audiences(
    subject: &str,
    issuer: &str,
    audiences: &[String],
    ttl: Duration,
) -> String {
    mint_acting(subject, issuer, audiences, None, ttl)
}

/// [`mint_for_audiences`] with an `act` claim naming `actor` (RFC 8693 section 4.1).
pub fn mint_acting(
    subject: &str,
    issuer: &str,
    audiences: &[String],
    actor: Option<&str>,
    ttl: Duration,
) -> String {
    let now = SystemTime::now();
    let iat = unix_seconds(now);
    let exp = unix_seconds(now + ttl);
    let claims = Claims {
        sub: subject.to_owned(),
        iss: issuer.to_owned(),
        iat,
        exp,
        jti: random_url_safe(16),
        aud: Audience::of(audiences),
        act: actor.map(|sub| Actor {
            sub: sub.to_owned(),
        }),
    };
    // HS256 over a struct of strings and integers: serialization and HMAC cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(DEMO_KEY),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Check a demo JWT's signature and expiry (no leeway) and return its claims. The audience
/// is returned, not checked.
pub fn verify(token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(DEMO_KEY), &validation)
        .map(|data| data.claims)
}

/// A random url-safe string with 32 bytes of entropy (43 characters, no padding).
pub fn opaque_token() -> String {
    random_url_safe(32)
}

fn random_url_safe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_carries_the_claims() {
        let before = unix_seconds(SystemTime::now());
        let token = mint("alice", "http://issuer", Duration::from_secs(120));
        let claims = verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.iss, "http://issuer");
        assert_eq!(claims.aud, None);
        assert!(claims.iat >= before && claims.iat <= before + 2);
        assert_eq!(claims.exp, claims.iat + 120);
        assert_eq!(token.split('.').count(), 3);
    }

    #[test]
    fn header_says_hs256() {
        let token = mint("a", "b", Duration::from_secs(1));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn two_tokens_in_the_same_second_differ() {
        let a = mint("alice", "iss", Duration::from_secs(60));
        let b = mint("alice", "iss", Duration::from_secs(60));
        assert_ne!(a, b);
        assert_ne!(verify(&a).unwrap().jti, verify(&b).unwrap().jti);
    }

    #[test]
    fn audience_is_put_in_aud() {
        let token = mint_with_audience("c", "i", Some("https://api"), Duration::from_secs(60));
        let claims = verify(&token).unwrap();
        assert_eq!(
            claims.aud.as_ref().and_then(Audience::as_one),
            Some("https://api")
        );
    }

    #[test]
    fn expired_token_fails_verification() {
        let token = mint("alice", "iss", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(verify(&token).is_err());
    }

    #[test]
    fn wrong_key_fails_verification() {
        let token = mint("alice", "iss", Duration::from_secs(60));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let other = DecodingKey::from_secret(b"another key");
        assert!(jsonwebtoken::decode::<Claims>(&token, &other, &validation).is_err());
    }

    #[test]
    fn opaque_tokens_are_url_safe_and_random() {
        let a = opaque_token();
        let b = opaque_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
