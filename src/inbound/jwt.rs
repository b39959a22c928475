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
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::jwks::{Jwks, Selection};
use super::{credential, field, invalid, unauthenticated, InboundBuildError, Refusal};
use crate::config::inbound::{JwtKeySettings, JwtSettings, TokenSource};

const MIN_RSA_BITS: usize = 2048;
/// The largest modulus the RSA verifier accepts.
const MAX_RSA_BITS: usize = 4096;
/// A token without `kid` is tried against at most this many keys of a JWKS.
const MAX_KEYS_WITHOUT_KID: usize = 4;

/// A public key, parsed and checked once.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8>, bits: usize },
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PublicKey {
    /// RSA from its big-endian modulus and exponent; sizes are checked.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = match n.first() {
            Some(first) => n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            ));
        }
        if bits > MAX_RSA_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; at most {MAX_RSA_BITS} are supported"
            ));
        }
        let exponent = if e.is_empty() || e.len() > 4 {
            0
        } else {
            e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        if exponent < 3 || exponent % 2 == 0 {
            return Err("the RSA key has an unusable public exponent".to_owned());
        }
        Ok(PublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
            bits,
        })
    }

    /// An EC key from its SEC1 uncompressed point; the point is checked to be on the curve.
    pub(crate) fn ec(curve: Curve, point: &[u8]) -> Result<PublicKey, String> {
        let coordinate = match curve {
            Curve::P256 => 32,
            Curve::P384 => 48,
        };
        if point.len() != 1 + 2 * coordinate || point.first() != Some(&4) {
            return Err(format!(
                "the {} key is not an uncompressed point of that curve",
                curve.name()
            ));
        }
        let key = PublicKey::Ec {
            curve,
            point: point.to_vec(),
        };
        key.self_check()?;
        Ok(key)
    }

    pub(crate) fn ed25519(x: &[u8]) -> Result<PublicKey, String> {
        if x.len() != 32 {
            return Err("the Ed25519 key is not 32 bytes".to_owned());
        }
        let key = PublicKey::Ed25519 { x: x.to_vec() };
        key.self_check()?;
        Ok(key)
    }

    /// The algorithms this key type can verify.
    pub(crate) fn algorithms(&self) -> &'static [Algorithm] {
        match self {
            PublicKey::Rsa { .. } => AlgorithmFamily::Rsa.algorithms(),
            PublicKey::Ec {
                curve: Curve::P256, ..
            } => &[Algorithm::ES256],
            PublicKey::Ec {
                curve: Curve::P384, ..
            } => &[Algorithm::ES384],
            PublicKey::Ed25519 { .. } => &[Algorithm::EdDSA],
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { bits, .. } => format!("RSA {bits}-bit"),
            PublicKey::Ec { curve, .. } => format!("EC {}", curve.name()),
            PublicKey::Ed25519 { .. } => "Ed25519".to_owned(),
        }
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        match self {
            PublicKey::Rsa { n, e, .. } => DecodingKey::from_rsa_raw_components(n, e),
            PublicKey::Ec { point, .. } => DecodingKey::from_ec_der(point),
            PublicKey::Ed25519 { x } => DecodingKey::from_ed_der(x),
        }
    }

    /// Builds the verifier once: for EC and Ed25519 that parses the point, so a key that is
    /// not on its curve fails here rather than on every request.
    fn self_check(&self) -> Result<(), String> {
        let algorithm = self.algorithms()[0];
        jsonwebtoken::crypto::verify("AAAA", b"probe", &self.decoding_key(), algorithm)
            .map(|_| ())
            .map_err(|_| format!("the {} key is not a valid point", self.describe()))
    }
}

impl Curve {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Parses a PEM public key: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519),
/// `RSA PUBLIC KEY` (PKCS#1) or a `CERTIFICATE` (its subject key). Private keys are refused.
pub(crate) fn parse_public_key_pem(pem: &[u8]) -> Result<PublicKey, String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "not a PEM file (expected -----BEGIN PUBLIC KEY-----)".to_owned())?;
    match parsed.label.as_str() {
        "PUBLIC KEY" => {
            let (_, spki) = SubjectPublicKeyInfo::from_der(&parsed.contents)
                .map_err(|_| "the PUBLIC KEY block does not parse".to_owned())?;
            from_spki(&spki)
        }
        "RSA PUBLIC KEY" => {
            let (_, rsa) = RSAPublicKey::from_der(&parsed.contents)
                .map_err(|_| "the RSA PUBLIC KEY block does not parse".to_owned())?;
            PublicKey::rsa(rsa.modulus, rsa.exponent)
        }
        "CERTIFICATE" => {
            let certificate = parsed
                .parse_x509()
                .map_err(|_| "the CERTIFICATE block does not parse".to_owned())?;
            from_spki(certificate.public_key())
        }
        label if label.contains("PRIVATE KEY") => Err(
            "holds a private key; give the issuer's public key (openssl pkey -pubout)".to_owned(),
        ),
        label => Err(format!(
            "holds a `{label}` block; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"
        )),
    }
}

fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
    let algorithm = &spki.algorithm.algorithm;
    let data: &[u8] = &spki.subject_public_key.data;
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let (_, rsa) =
            RSAPublicKey::from_der(data).map_err(|_| "the RSA key does not parse".to_owned())?;
        PublicKey::rsa(rsa.modulus, rsa.exponent)
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        match curve {
            Some(oid) if oid == OID_EC_P256 => PublicKey::ec(Curve::P256, data),
            Some(oid) if oid == OID_NIST_EC_P384 => PublicKey::ec(Curve::P384, data),
            _ => Err("the EC key is on a curve other than P-256 or P-384".to_owned()),
        }
    } else if *algorithm == OID_SIG_ED25519 {
        PublicKey::ed25519(data)
    } else {
        Err(format!("unsupported key type (OID {algorithm})"))
    }
}

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
            JwtKeySettings::PublicKeyPem { path, pem } => {
                let key = parse_public_key_pem(pem)
                    .map_err(|reason| error(format!("{}: {reason}", path.display())))?;
                let algorithms: Vec<Algorithm> = settings
                    .algorithms
                    .iter()
                    .copied()
                    .filter(|a| key.algorithms().contains(a))
                    .collect();
                if algorithms.is_empty() {
                    return Err(error(format!(
                        "the {} key in {} verifies none of the configured algorithms",
                        key.describe(),
                        path.display()
                    )));
                }
                Keys::Fixed(VerifyKey {
                    kid: None,
                    key: key.decoding_key(),
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
