//! JWT verification with jsonwebtoken: a shared secret (HS*), a PEM public key (RS*, PS*,
//! ES*, EdDSA) or a JWKS ([`super::jwks`]).
//!
//! Algorithm confusion is impossible by construction: each key carries the algorithms *its
//! type* can verify (an RSA key never verifies HS256, a P-256 key only ES256, a JWK with an
//! `alg` only that one), intersected with the configured list. The token's `alg` must be in
//! that set before any verification runs, and the verification is asked for exactly that one
//! algorithm. `alg: none` is never accepted.
//!
//! Checked: signature, `exp` (required) and `nbf` with the leeway, `iss`, `aud` (when
//! configured), `crit` (refused if present), then required claims (403) and scopes (403).

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, Selection};
use super::{credential, field, invalid, unauthenticated, InboundBuildError, Refusal};
use crate::config::inbound::{JwtKeySettings, JwtSettings, TokenSource};

/// A token without `kid` is tried against at most this many keys of a JWKS.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// A key ready to verify, with the algorithms it may verify (its type's, intersected with
/// the configured list and, for a JWK, its `alg`).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("family", &self.key.family())
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl VerifyKey {
    pub(crate) fn verifies(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

enum Keys {
    /// A secret or a PEM key.
    Fixed(VerifyKey),
    Jwks(Jwks),
}

pub(crate) struct JwtCheck {
    from: TokenSource,
    /// One prepared validation per configured algorithm.
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    required_claims: Vec<(String, Value)>,
    required_scopes: Vec<String>,
}

impl fmt::Debug for JwtCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Fixed(key) => format!("{key:?}"),
            Keys::Jwks(jwks) => format!("{jwks:?}"),
        };
        f.debug_struct("JwtCheck")
            .field("from", &self.from)
            .field(
                "algorithms",
                &self.validations.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            )
            .field("keys", &keys)
            .field("required_claims", &self.required_claims)
            .field("required_scopes", &self.required_scopes)
            .finish()
    }
}

impl JwtCheck {
    pub(crate) fn build(
        settings: &JwtSettings,
        control: tokio::runtime::Handle,
    ) -> Result<JwtCheck, InboundBuildError> {
        let error = |reason: String| InboundBuildError {
            check: "jwt",
            reason,
        };
        let keys = match &settings.key {
            JwtKeySettings::Secret(secret) => {
                if settings
                    .algorithms
                    .iter()
                    .any(|a| a.family() != AlgorithmFamily::Hmac)
                {
                    return Err(error("a secret verifies HS algorithms only".to_owned()));
                }
                Keys::Fixed(VerifyKey {
                    kid: None,
                    key: DecodingKey::from_secret(secret.expose().as_bytes()),
                    algorithms: settings.algorithms.clone(),
                })
            }
            JwtKeySettings::PublicKeyPem { path, key } => {
                let algorithms = key.usable(&settings.algorithms);
                if algorithms.is_empty() {
                    return Err(error(format!(
                        "the {} key in {} verifies none of the configured algorithms",
                        key.describe(),
                        path.display()
                    )));
                }
                Keys::Fixed(VerifyKey {
                    kid: None,
                    key: key.decoding_key().clone(),
                    algorithms,
                })
            }
            JwtKeySettings::Jwks(jwks) => {
                if settings
                    .algorithms
                    .iter()
                    .any(|a| a.family() == AlgorithmFamily::Hmac)
                {
                    return Err(error("a JWKS never verifies HS algorithms".to_owned()));
                }
                Keys::Jwks(Jwks::build(jwks, &settings.algorithms, control).map_err(error)?)
            }
        };
        let validations = settings
            .algorithms
            .iter()
            .map(|algorithm| {
                let mut validation = Validation::new(*algorithm);
                validation.leeway = settings.leeway.as_secs();
                validation.validate_exp = true;
                validation.validate_nbf = true;
                let mut required = vec!["exp"];
                if settings.issuer.is_empty() {
                    validation.iss = None;
                } else {
                    validation.set_issuer(&settings.issuer);
                    required.push("iss");
                }
                if settings.audience.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(&settings.audience);
                    required.push("aud");
                }
                validation.set_required_spec_claims(&required);
                (*algorithm, validation)
            })
            .collect();
        Ok(JwtCheck {
            from: settings.from.clone(),
            validations,
            keys,
            required_claims: settings.required_claims.clone(),
            required_scopes: settings.required_scopes.clone(),
        })
    }

    /// Where the token is read.
    pub(crate) fn source(&self) -> &TokenSource {
        &self.from
    }

    /// The verified claims, or why not.
    pub(crate) async fn check(&self, headers: &HeaderMap) -> Result<Value, Refusal> {
        let token = credential(&self.from, headers).map_err(|p| unauthenticated(&self.from, p))?;
        let algorithm = self.algorithm_of(token)?;
        let Some(validation) = self
            .validations
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v)
        else {
            return Err(self.invalid("the token's algorithm is not accepted here"));
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| self.invalid("the token is not a well-formed JWT"))?;
        if header.crit.as_ref().is_some_and(|crit| !crit.is_empty()) {
            return Err(self.invalid("the token has critical header extensions we do not know"));
        }
        let claims = match &self.keys {
            Keys::Fixed(key) => {
                if !key.verifies(algorithm) {
                    return Err(self.invalid("the token's algorithm does not fit the key"));
                }
                self.verify(token, key, validation)?
            }
            Keys::Jwks(jwks) => {
                let kid = header.kid.as_deref();
                let mut set = jwks.keys().await?;
                let mut selection = set.select(kid, algorithm, MAX_KEYS_WITHOUT_KID);
                if matches!(selection, Selection::Unknown) {
                    set = jwks.refetch_after_unknown(set.generation).await?;
                    selection = set.select(kid, algorithm, MAX_KEYS_WITHOUT_KID);
                }
                match selection {
                    Selection::Unknown => {
                        return Err(self.invalid("the token is signed with an unknown key"))
                    }
                    Selection::WrongAlgorithm => {
                        return Err(self.invalid("the token's algorithm does not fit the key"))
                    }
                    Selection::Keys(keys) => {
                        let mut outcome = Err(self.invalid("the token's signature is not valid"));
                        for key in keys {
                            outcome = self.verify(token, key, validation);
                            // Only a bad signature makes another key worth a try.
                            if !matches!(&outcome, Err(Refusal::Unauthenticated { detail, .. }) if detail == BAD_SIGNATURE)
                            {
                                break;
                            }
                        }
                        outcome?
                    }
                }
            }
        };
        self.authorize(&claims)?;
        Ok(claims)
    }

    /// The `alg` of the token's header, refusing `none` and anything not configured, before
    /// any key is looked at.
    fn algorithm_of(&self, token: &str) -> Result<Algorithm, Refusal> {
        let malformed = || self.invalid("the token is not a well-formed JWT");
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        let Some(Value::String(alg)) = header.get("alg") else {
            return Err(malformed());
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(self.invalid("unsigned tokens (alg none) are never accepted"));
        }
        let algorithm: Algorithm = alg
            .parse()
            .map_err(|_| self.invalid("the token's algorithm is not accepted here"))?;
        if self.validations.iter().any(|(a, _)| *a == algorithm) {
            Ok(algorithm)
        } else {
            Err(self.invalid("the token's algorithm is not accepted here"))
        }
    }

    fn verify(
        &self,
        token: &str,
        key: &VerifyKey,
        validation: &Validation,
    ) -> Result<Value, Refusal> {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
            Ok(data) => Ok(Value::Object(data.claims)),
            Err(error) => {
                let detail = match error.kind() {
                    ErrorKind::InvalidSignature => BAD_SIGNATURE,
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                    ErrorKind::InvalidAudience => "the token's audience is not accepted",
                    ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                        "exp" => "the token has no exp claim",
                        "iss" => "the token has no iss claim",
                        "aud" => "the token has no aud claim",
                        _ => "the token lacks a required claim",
                    },
                    ErrorKind::InvalidClaimFormat(_) => "a time claim of the token is malformed",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                        "the token's algorithm does not fit the key"
                    }
                    _ => "the token is not a well-formed JWT",
                };
                Err(self.invalid(detail))
            }
        }
    }

    /// Required claims and scopes: a valid token that lacks them is refused with 403.
    fn authorize(&self, claims: &Value) -> Result<(), Refusal> {
        for (name, expected) in &self.required_claims {
            let matches = match field(claims, name) {
                Some(Value::Array(items)) => items.contains(expected),
                Some(value) => value == expected,
                None => false,
            };
            if !matches {
                return Err(Refusal::forbidden(format!(
                    "the token's `{name}` claim does not have the required value"
                )));
            }
        }
        if !self.required_scopes.is_empty() {
            let mut granted: HashSet<&str> = HashSet::new();
            match claims.get("scope") {
                Some(Value::String(scope)) => granted.extend(scope.split_whitespace()),
                Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
            match claims.get("scp") {
                Some(Value::String(scope)) => granted.extend(scope.split_whitespace()),
                Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
            for scope in &self.required_scopes {
                if !granted.contains(scope.as_str()) {
                    return Err(Refusal::forbidden(format!(
                        "the token lacks the scope `{scope}`"
                    )));
                }
            }
        }
        Ok(())
    }

    fn invalid(&self, detail: &str) -> Refusal {
        invalid(&self.from, "invalid_token", detail)
    }
}

const BAD_SIGNATURE: &str = "the token's signature is not valid";

#[cfg(test)]
mod tests;
