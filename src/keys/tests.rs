use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;

use super::*;

const RSA1_PRIVATE: &[u8] = include_bytes!("../inbound/testdata/rsa1_private.pem");
const RSA1_PUBLIC: &[u8] = include_bytes!("../inbound/testdata/rsa1_public.pem");
const RSA1_PUBLIC_PKCS1: &[u8] = include_bytes!("../inbound/testdata/rsa1_public_pkcs1.pem");
const RSA_WEAK_PUBLIC: &[u8] = include_bytes!("../inbound/testdata/rsa_weak_public.pem");
const EC256_PUBLIC: &[u8] = include_bytes!("../inbound/testdata/ec256_public.pem");
const EC384_PUBLIC: &[u8] = include_bytes!("../inbound/testdata/ec384_public.pem");
const ED25519_PUBLIC: &[u8] = include_bytes!("../inbound/testdata/ed25519_public.pem");

#[test]
fn public_key_files_are_parsed_and_checked() {
    let rsa = PublicKey::from_pem(RSA1_PUBLIC).unwrap();
    assert_eq!(rsa.describe(), "RSA 2048-bit");
    assert_eq!(PublicKey::from_pem(RSA1_PUBLIC_PKCS1).unwrap(), rsa);
    assert_eq!(
        PublicKey::from_pem(EC256_PUBLIC).unwrap().algorithms(),
        &[Algorithm::ES256]
    );
    assert_eq!(
        PublicKey::from_pem(EC384_PUBLIC).unwrap().algorithms(),
        &[Algorithm::ES384]
    );
    assert_eq!(
        PublicKey::from_pem(ED25519_PUBLIC).unwrap().algorithms(),
        &[Algorithm::EdDSA]
    );
    let private = PublicKey::from_pem(RSA1_PRIVATE).unwrap_err();
    assert!(private.contains("private key"), "{private}");
    let weak = PublicKey::from_pem(RSA_WEAK_PUBLIC).unwrap_err();
    assert!(weak.contains("1024 bits"), "{weak}");
    assert!(PublicKey::from_pem(b"not a pem").is_err());
    assert!(
        PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
    // A point that is not on the curve is refused up front.
    let mut point = vec![4u8];
    point.extend([1u8; 64]);
    assert!(PublicKey::ec(Curve::P256, &point).is_err());
}

#[test]
fn the_key_family_decides_the_usable_algorithms() {
    let configured = [Algorithm::HS256, Algorithm::ES256, Algorithm::PS256];
    let rsa = PublicKey::from_pem(RSA1_PUBLIC).unwrap();
    assert_eq!(rsa.family(), KeyFamily::Rsa { bits: 2048 });
    assert_eq!(rsa.usable(&configured), [Algorithm::PS256]);
    let ec = PublicKey::from_pem(EC256_PUBLIC).unwrap();
    assert_eq!(ec.describe(), "EC P-256");
    assert_eq!(ec.usable(&configured), [Algorithm::ES256]);
    assert!(PublicKey::from_pem(ED25519_PUBLIC)
        .unwrap()
        .usable(&configured)
        .is_empty());
    assert_eq!(format!("{rsa:?}"), "RSA 2048-bit");
}

#[test]
fn a_jwk_gives_the_same_key_as_its_pem() {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let rsa = PublicKey::from_pem(RSA1_PUBLIC).unwrap();
    let DecodingKeyKind::RsaModulusExponent { n, e } = rsa.decoding_key().kind() else {
        panic!("an RSA key holds its modulus and exponent");
    };
    let (n, e) = (b64(n), b64(e));
    let jwk = JwkMembers {
        kty: "RSA",
        n: Some(&n),
        e: Some(&e),
        ..JwkMembers::default()
    };
    assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), Some(rsa));

    let ec = PublicKey::from_pem(EC384_PUBLIC).unwrap();
    let DecodingKeyKind::SecretOrDer(point) = ec.decoding_key().kind() else {
        panic!("an EC key holds its point");
    };
    let (x, y) = (b64(&point[1..49]), b64(&point[49..]));
    let jwk = JwkMembers {
        kty: "EC",
        crv: Some("P-384"),
        x: Some(&x),
        y: Some(&y),
        ..JwkMembers::default()
    };
    assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), Some(ec.clone()));

    let bare = |kty, crv| JwkMembers {
        kty,
        crv,
        ..JwkMembers::default()
    };
    assert_eq!(PublicKey::from_jwk(&bare("oct", None)).unwrap(), None);
    for (jwk, expected) in [
        (bare("RSA", None), "RSA key without `n`"),
        (bare("EC", Some("P-521")), "EC key on an unsupported curve"),
        (bare("OKP", Some("X25519")), "unsupported key type `OKP`"),
        (
            JwkMembers {
                n: Some("!!"),
                ..bare("RSA", None)
            },
            "`n` is not base64url",
        ),
    ] {
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap_err(), expected);
    }
}
