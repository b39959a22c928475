//! Public keys that verify JWTs, parsed and checked once: from a PEM file (the config's
//! `public_key_file`) or from a JWK (a key set fetched at run time).
//!
//! A leaf: it knows PEM, DER and JWK encodings and jsonwebtoken, nothing of tollgate. The
//! config validates a key file with it and keeps the parsed [`PublicKey`] in its model; the
//! inbound checks verify with that key as it is.
//!
//! A key's [`KeyFamily`] fixes the algorithms it can verify (an RSA key RS* and PS*, a P-256
//! key only ES256, ...), so algorithm confusion is decided by the key's type. Weak or broken
//! keys are refused here: RSA below 2048 or above 4096 bits or with an unusable exponent, EC
//! points that are not on their curve, private keys given where a public key belongs.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

const MIN_RSA_BITS: usize = 2048;
/// The largest modulus the RSA verifier accepts.
const MAX_RSA_BITS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The name JWKs (`crv`) and messages use.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn coordinate_bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// What a key is; it fixes the algorithms the key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa { bits: usize },
    Ec(Curve),
    Ed25519,
}

impl KeyFamily {
    /// The algorithms a key of this family can verify.
    pub fn algorithms(self) -> &'static [Algorithm] {
        match self {
            KeyFamily::Rsa { .. } => AlgorithmFamily::Rsa.algorithms(),
            KeyFamily::Ec(Curve::P256) => &[Algorithm::ES256],
            KeyFamily::Ec(Curve::P384) => &[Algorithm::ES384],
            KeyFamily::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    /// `RSA 2048-bit`, `EC P-256`, `Ed25519`.
    pub fn describe(self) -> String {
        match self {
            KeyFamily::Rsa { bits } => format!("RSA {bits}-bit"),
            KeyFamily::Ec(curve) => format!("EC {}", curve.name()),
            KeyFamily::Ed25519 => "Ed25519".to_owned(),
        }
    }
}

/// A public key, parsed and checked once, ready to verify with.
#[derive(Clone)]
pub struct PublicKey {
    family: KeyFamily,
    key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Two keys are equal when they are the same key (whatever file or encoding they came from).
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.family == other.family && material(&self.key) == material(&other.key)
    }
}

impl Eq for PublicKey {}

fn material(key: &DecodingKey) -> (&[u8], &[u8]) {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => (bytes, &[]),
        DecodingKeyKind::RsaModulusExponent { n, e } => (n, e),
    }
}

impl PublicKey {
    /// RSA from its big-endian modulus and exponent; sizes are checked.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
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
        Ok(PublicKey {
            family: KeyFamily::Rsa { bits },
            key: DecodingKey::from_rsa_raw_components(n, e),
        })
    }

    /// An EC key from its SEC1 uncompressed point; the point is checked to be on the curve.
    pub fn ec(curve: Curve, point: &[u8]) -> Result<PublicKey, String> {
        if point.len() != 1 + 2 * curve.coordinate_bytes() || point.first() != Some(&4) {
            return Err(format!(
                "the {} key is not an uncompressed point of that curve",
                curve.name()
            ));
        }
        PublicKey {
            family: KeyFamily::Ec(curve),
            key: DecodingKey::from_ec_der(point),
        }
        .self_checked()
    }

    pub fn ed25519(x: &[u8]) -> Result<PublicKey, String> {
        if x.len() != 32 {
            return Err("the Ed25519 key is not 32 bytes".to_owned());
        }
        PublicKey {
            family: KeyFamily::Ed25519,
            key: DecodingKey::from_ed_der(x),
        }
        .self_checked()
    }

    /// Parses a PEM public key: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519),
    /// `RSA PUBLIC KEY` (PKCS#1) or a `CERTIFICATE` (its subject key). Private keys are
    /// refused.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
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
                "holds a private key; give the issuer's public key (openssl pkey -pubout)"
                    .to_owned(),
            ),
            label => Err(format!(
                "holds a `{label}` block; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"
            )),
        }
    }

    /// The key of a JWK: `kty` RSA, EC (P-256, P-384) or OKP (Ed25519). A symmetric (`oct`)
    /// key is `None`: a published key set never verifies HMAC tokens.
    pub fn from_jwk(jwk: &JwkMembers<'_>) -> Result<Option<PublicKey>, String> {
        let decode = |member: Option<&str>, name: &str| -> Result<Vec<u8>, String> {
            let text = member.ok_or_else(|| format!("{} key without `{name}`", jwk.kty))?;
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| format!("`{name}` is not base64url"))
        };
        let key = match jwk.kty {
            "RSA" => PublicKey::rsa(&decode(jwk.n, "n")?, &decode(jwk.e, "e")?)?,
            "EC" => {
                let curve = match jwk.crv {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    _ => return Err("EC key on an unsupported curve".to_owned()),
                };
                let mut point = vec![4u8];
                point.extend(decode(jwk.x, "x")?);
                point.extend(decode(jwk.y, "y")?);
                PublicKey::ec(curve, &point)?
            }
            "OKP" if jwk.crv == Some("Ed25519") => PublicKey::ed25519(&decode(jwk.x, "x")?)?,
            "oct" => return Ok(None),
            other => return Err(format!("unsupported key type `{other}`")),
        };
        Ok(Some(key))
    }

    pub fn family(&self) -> KeyFamily {
        self.family
    }

    /// The algorithms this key can verify.
    pub fn algorithms(&self) -> &'static [Algorithm] {
        self.family.algorithms()
    }

    /// Those of `configured` this key can verify, in their order.
    pub fn usable(&self, configured: &[Algorithm]) -> Vec<Algorithm> {
        configured
            .iter()
            .copied()
            .filter(|algorithm| self.algorithms().contains(algorithm))
            .collect()
    }

    pub fn describe(&self) -> String {
        self.family.describe()
    }

    /// The key as jsonwebtoken verifies with it.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Verifies once with the key: for EC and Ed25519 that parses the point, so a key that
    /// is not on its curve fails here rather than on every request.
    fn self_checked(self) -> Result<PublicKey, String> {
        let algorithm = self.algorithms()[0];
        match jsonwebtoken::crypto::verify("AAAA", b"probe", &self.key, algorithm) {
            Ok(_) => Ok(self),
            Err(_) => Err(format!("the {} key is not a valid point", self.describe())),
        }
    }
}

/// The key members of one JWK (RFC 7518 §6) as published: base64url text.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwkMembers<'a> {
    pub kty: &'a str,
    pub crv: Option<&'a str>,
    pub n: Option<&'a str>,
    pub e: Option<&'a str>,
    pub x: Option<&'a str>,
    pub y: Option<&'a str>,
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
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

#[cfg(test)]
mod tests;
