//! A token as the gateway holds it: the value, when it stops being usable, when to renew it.

use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::RefreshPolicy;
use crate::providers::{Grant, ProviderError};
use crate::secret::Secret;

/// Tokens are treated as expired this long before the instant they expire, so that a token
/// is never sent with a moment left that the network delay would eat.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// Longest lifetime taken from a provider (ten years).
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug)]
pub struct Token {
    /// Distinguishes tokens of one provider, so a rejection purges exactly the one sent.
    pub id: u64,
    pub value: Secret,
    pub expires_at: Instant,
    pub expires_at_unix: f64,
    /// When the background refresher renews it, ahead of expiry.
    pub refresh_at: Instant,
    pub lifetime_source: LifetimeSource,
    /// The whole lifetime it was issued with.
    pub lifetime: Duration,
    pub fingerprint: String,
    /// The scheme for `{token_type}` in header formats: the provider's, else `Bearer`.
    pub token_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    ExpiresIn,
    JwtExp,
    DefaultTtl,
    /// Another replica obtained it and shared it through the store (fleet mode).
    Store,
}

impl Token {
    /// Builds the token from a grant: lifetime from `expires_in`, else the JWT `exp` claim,
    /// else the policy's `default_ttl`. A token that is already expired is an error.
    pub fn from_grant(
        id: u64,
        grant: &Grant,
        policy: &RefreshPolicy,
    ) -> Result<Token, ProviderError> {
        let (lifetime, source) = lifetime(grant, policy, SystemTime::now())?;
        // A provider may state any number; beyond this it only risks overflowing clocks.
        let lifetime = lifetime.min(MAX_LIFETIME);
        let token_type = token_type(grant.token_type.as_deref())?;
        Ok(Token::timed(
            id,
            grant.access_token.clone(),
            token_type,
            Timing::new(lifetime, lifetime, policy),
            source,
        ))
    }

    /// A token another replica shared: `expires_at_unix_ms` and `lifetime` as its provider
    /// gave them, so every replica renews it at the same point. `None` when it is already
    /// expired, or past that point (not worth taking).
    pub fn from_shared(
        id: u64,
        value: Secret,
        stated_type: Option<&str>,
        expires_at_unix_ms: u64,
        lifetime: Duration,
        policy: &RefreshPolicy,
    ) -> Option<Token> {
        let timing = Timing::shared(expires_at_unix_ms, lifetime, policy)?;
        let token_type = token_type(stated_type).ok()?;
        Some(Token::timed(
            id,
            value,
            token_type,
            timing,
            LifetimeSource::Store,
        ))
    }

    fn timed(
        id: u64,
        value: Secret,
        token_type: String,
        timing: Timing,
        source: LifetimeSource,
    ) -> Token {
        let now = Instant::now();
        let expires_at_unix = SystemTime::now()
            .checked_add(timing.remaining)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        Token {
            id,
            fingerprint: fingerprint(&value),
            value,
            expires_at: now + timing.usable,
            expires_at_unix,
            refresh_at: now + timing.until_refresh,
            lifetime_source: source,
            lifetime: timing.lifetime,
            token_type,
        }
    }

    pub fn is_usable(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// When, from now, a token stops being usable and is renewed.
struct Timing {
    lifetime: Duration,
    remaining: Duration,
    usable: Duration,
    until_refresh: Duration,
}

impl Timing {
    /// `remaining` of a `lifetime`: usable until the margin before expiry (1 s, at most a
    /// tenth of the lifetime), renewed `min(before_expiry, lifetime/2)` before expiry.
    fn new(lifetime: Duration, remaining: Duration, policy: &RefreshPolicy) -> Timing {
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        let lead = policy.before_expiry.min(lifetime / 2);
        Timing {
            lifetime,
            remaining,
            usable: remaining.saturating_sub(margin),
            until_refresh: remaining.saturating_sub(lead),
        }
    }

    fn shared(
        expires_at_unix_ms: u64,
        lifetime: Duration,
        policy: &RefreshPolicy,
    ) -> Option<Timing> {
        let now_ms = crate::clock::unix_ms();
        let remaining = Duration::from_millis(expires_at_unix_ms.checked_sub(now_ms)?);
        let timing = Timing::new(
            lifetime.min(MAX_LIFETIME),
            remaining.min(MAX_LIFETIME),
            policy,
        );
        (!timing.until_refresh.is_zero() && !timing.usable.is_zero()).then_some(timing)
    }
}

fn token_type(stated: Option<&str>) -> Result<String, ProviderError> {
    match stated {
        None | Some("") => Ok("Bearer".to_owned()),
        Some(scheme)
            if scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b)) =>
        {
            Ok(scheme.to_owned())
        }
        Some(_) => Err(ProviderError::BadReply(
            "token type is not a single word".to_owned(),
        )),
    }
}

fn lifetime(
    grant: &Grant,
    policy: &RefreshPolicy,
    now: SystemTime,
) -> Result<(Duration, LifetimeSource), ProviderError> {
    if let Some(expires_in) = grant.expires_in {
        if expires_in.is_zero() {
            return Err(ProviderError::BadReply(
                "token reply says expires_in 0".to_owned(),
            ));
        }
        return Ok((expires_in, LifetimeSource::ExpiresIn));
    }
    match jwt_expiry(grant.access_token.expose()) {
        Some(exp) => {
            let now_unix = crate::clock::unix_seconds(now);
            if exp <= now_unix {
                return Err(ProviderError::BadReply(format!(
                    "token is already expired (JWT exp is {}s in the past; check clocks)",
                    now_unix - exp
                )));
            }
            Ok((Duration::from_secs(exp - now_unix), LifetimeSource::JwtExp))
        }
        None => Ok((policy.default_ttl, LifetimeSource::DefaultTtl)),
    }
}

/// The claims of a JWT as JSON, unverified, for display by `tollgate token`.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    if token.bytes().filter(|&b| b == b'.').count() != 2 {
        return None;
    }
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .ok()
        .map(|data| data.claims)
}

/// The `exp` claim of a JWT, read without verifying the signature: the gateway only needs
/// to know when the provider will stop accepting it, not to trust it.
pub fn jwt_expiry(token: &str) -> Option<u64> {
    jwt_claims(token)?.get("exp")?.as_u64()
}

/// A short hash that tells tokens apart in `/status` without revealing them.
pub fn fingerprint(token: &Secret) -> String {
    let digest = Sha256::digest(token.expose().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt_with_exp(exp: u64) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!(
            "{}.{}.c2ln",
            encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            encode(&format!(r#"{{"sub":"x","exp":{exp}}}"#))
        )
    }

    #[test]
    fn expires_in_wins_over_jwt_exp() {
        let mut grant = Grant::bare(Secret::new(jwt_with_exp(crate::clock::unix_now() + 1000)));
        grant.expires_in = Some(Duration::from_secs(60));
        let token = Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap();
        assert_eq!(token.lifetime_source, LifetimeSource::ExpiresIn);
        // 60s lifetime, refresh lead capped at half the lifetime.
        let until_refresh = token.refresh_at - Instant::now();
        assert!(
            until_refresh > Duration::from_secs(28) && until_refresh <= Duration::from_secs(30)
        );
    }

    #[test]
    fn jwt_exp_is_read_without_a_key() {
        let grant = Grant::bare(Secret::new(jwt_with_exp(crate::clock::unix_now() + 600)));
        let token = Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap();
        assert_eq!(token.lifetime_source, LifetimeSource::JwtExp);
        let until_refresh = token.refresh_at - Instant::now();
        assert!(
            until_refresh > Duration::from_secs(535) && until_refresh <= Duration::from_secs(540)
        );
    }

    #[test]
    fn opaque_tokens_get_the_default_ttl() {
        let grant = Grant::bare(Secret::new("opaque"));
        let token = Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap();
        assert_eq!(token.lifetime_source, LifetimeSource::DefaultTtl);
    }

    #[test]
    fn an_expired_jwt_is_refused() {
        let grant = Grant::bare(Secret::new(jwt_with_exp(crate::clock::unix_now() - 30)));
        let error = Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap_err();
        assert!(error.to_string().contains("already expired"), "{error}");
    }

    /// Found by the property test below: `Instant + Duration` overflowed and panicked.
    #[test]
    fn a_huge_expires_in_is_capped_not_a_crash() {
        let mut grant = Grant::bare(Secret::new("opaque"));
        grant.expires_in = Some(Duration::from_secs(9_223_372_036_854_772_288));
        let token = Token::from_grant(1, &grant, &RefreshPolicy::default()).unwrap();
        assert!(token.expires_at - Instant::now() <= MAX_LIFETIME);
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let a = fingerprint(&Secret::new("token-a"));
        assert_eq!(a.len(), 12);
        assert_eq!(a, fingerprint(&Secret::new("token-a")));
        assert_ne!(a, fingerprint(&Secret::new("token-b")));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        // Cases it finds become named tests, not a seed file at the top of the repository.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn jwt_expiry_never_panics(text in "\\PC{0,300}") {
            let _ = jwt_expiry(&text);
        }

        #[test]
        fn jwt_shaped_tokens_give_a_lifetime_or_a_clear_error(
            payload in prop_oneof![
                any::<Vec<u8>>(),
                (any::<i64>()).prop_map(|exp| format!("{{\"exp\":{exp}}}").into_bytes()),
                (any::<u64>()).prop_map(|exp| format!("{{\"exp\":{exp}}}").into_bytes()),
                "\\PC{0,40}".prop_map(|s| format!("{{\"exp\":\"{s}\"}}").into_bytes()),
            ],
            expires_in in proptest::option::of(any::<u64>()),
        ) {
            let token = format!("{}.{}.sig", encode(br#"{"alg":"HS256"}"#), encode(&payload));
            let mut grant = Grant::bare(Secret::new(token));
            grant.expires_in = expires_in.map(Duration::from_secs);
            match Token::from_grant(1, &grant, &RefreshPolicy::default()) {
                Ok(token) => {
                    let now = Instant::now();
                    prop_assert!(token.expires_at > now);
                    prop_assert!(token.refresh_at <= token.expires_at + EXPIRY_MARGIN);
                }
                Err(error) => prop_assert!(matches!(error, ProviderError::BadReply(_))),
            }
        }
    }
}
