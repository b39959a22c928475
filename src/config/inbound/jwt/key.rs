//! The key of `jwt:`: exactly one of `secret`, `public_key_file` and `jwks_url`, and one
//! that fits every listed algorithm. A key file is read and parsed here, once: the model
//! keeps the parsed key.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use crate::config::error::{join, Errors};
use crate::config::inbound::{
    DEFAULT_INBOUND_TIMEOUT, DEFAULT_JWKS_MIN_REFETCH, DEFAULT_JWKS_REFRESH,
};
use crate::config::model::{JwksSettings, JwtKeySettings};
use crate::config::raw::RawJwt;
use crate::config::values::{http_url, tls_settings};
use crate::keys::PublicKey;
use crate::secret::Secret;

/// RFC 7518 §3.2: an HMAC key at least as long as the hash output (256 bits for HS256).
const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The key source of the `jwt:` section at `path`; `algorithms` is `None` when the list
/// itself is wrong.
pub(super) fn validate(
    raw: &mut RawJwt,
    algorithms: Option<&[Algorithm]>,
    path: &str,
    errors: &mut Errors,
) -> Option<JwtKeySettings> {
    let given = [
        raw.secret.is_some(),
        raw.public_key_file.is_some(),
        raw.jwks_url.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    let hmac_listed =
        algorithms.is_some_and(|a| a.iter().any(|a| a.family() == AlgorithmFamily::Hmac));
    let public_listed =
        algorithms.is_some_and(|a| a.iter().any(|a| a.family() != AlgorithmFamily::Hmac));
    if raw.jwks_url.is_none() {
        for (key, set) in [
            ("jwks_refresh", raw.jwks_refresh.is_some()),
            ("jwks_min_refetch", raw.jwks_min_refetch.is_some()),
            ("jwks_timeout", raw.jwks_timeout.is_some()),
            ("jwks_tls", raw.jwks_tls.is_some()),
        ] {
            if set {
                errors.push(join(path, key), "only applies with jwks_url");
            }
        }
    }
    if given == 0 {
        if hmac_listed {
            errors.push(
                join(path, "secret"),
                "missing (HS algorithms verify with a shared secret)",
            );
        } else {
            errors.push(
                path,
                "no key: give public_key_file or jwks_url (or secret for HS algorithms)",
            );
        }
        return None;
    }
    if given > 1 {
        errors.push(
            path,
            "give exactly one of secret, public_key_file, jwks_url (the key decides the algorithms)",
        );
        return None;
    }
    if let Some(secret) = &raw.secret {
        if public_listed {
            errors.push(
                join(path, "algorithms"),
                "a secret verifies HS256/HS384/HS512 only; RS, PS, ES and EdDSA need public_key_file or jwks_url",
            );
            return None;
        }
        return hmac_secret(secret, &join(path, "secret"), errors);
    }
    if hmac_listed {
        errors.push(
            join(path, "algorithms"),
            "HS algorithms need `secret`; a public key never verifies an HMAC token",
        );
        return None;
    }
    if let Some(file) = &raw.public_key_file {
        return public_key_file(file, algorithms, path, errors);
    }
    jwks(raw, path, errors)
}

/// `secret`, found at `path`: long enough for HS256.
fn hmac_secret(secret: &Secret, path: &str, errors: &mut Errors) -> Option<JwtKeySettings> {
    if secret.is_empty() {
        errors.push(path, "is empty");
        return None;
    }
    if secret.expose().len() < MIN_HMAC_SECRET_BYTES {
        errors.push(
            path,
            format!("is shorter than {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 §3.2 asks for at least the hash size)"),
        );
        return None;
    }
    Some(JwtKeySettings::Secret(secret.clone()))
}

/// `public_key_file`: read, parsed, and able to verify every listed algorithm.
fn public_key_file(
    file: &str,
    algorithms: Option<&[Algorithm]>,
    path: &str,
    errors: &mut Errors,
) -> Option<JwtKeySettings> {
    let at = join(path, "public_key_file");
    let pem = match std::fs::read(file) {
        Ok(pem) => pem,
        Err(error) => {
            errors.push(at, format!("cannot read {file}: {error}"));
            return None;
        }
    };
    let key = match PublicKey::from_pem(&pem) {
        Ok(key) => key,
        Err(message) => {
            errors.push(at, format!("{file}: {message}"));
            return None;
        }
    };
    if let Some(algorithms) = algorithms {
        let unusable: Vec<String> = algorithms
            .iter()
            .filter(|a| !key.algorithms().contains(a))
            .map(|a| format!("{a:?}"))
            .collect();
        if !unusable.is_empty() {
            errors.push(
                join(path, "algorithms"),
                format!(
                    "{} cannot be verified with the {} key in {file}",
                    unusable.join(", "),
                    key.describe()
                ),
            );
            return None;
        }
    }
    Some(JwtKeySettings::PublicKeyPem {
        path: PathBuf::from(file),
        key,
    })
}

/// `jwks_url` and the `jwks_*` keys that go with it.
fn jwks(raw: &mut RawJwt, path: &str, errors: &mut Errors) -> Option<JwtKeySettings> {
    let url_text = raw.jwks_url.as_deref().unwrap_or_default();
    let url = http_url(url_text, &join(path, "jwks_url"), errors);
    let refresh = raw.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.0);
    let min_refetch = raw
        .jwks_min_refetch
        .map_or(DEFAULT_JWKS_MIN_REFETCH, |d| d.0);
    let timeout = raw.jwks_timeout.map_or(DEFAULT_INBOUND_TIMEOUT, |d| d.0);
    let mut ok = true;
    for (key, value) in [
        ("jwks_refresh", refresh),
        ("jwks_min_refetch", min_refetch),
        ("jwks_timeout", timeout),
    ] {
        if value.is_zero() {
            errors.push(join(path, key), "must be longer than 0s");
            ok = false;
        }
    }
    if min_refetch > refresh && ok {
        errors.push(
            join(path, "jwks_min_refetch"),
            "must not be longer than jwks_refresh",
        );
        ok = false;
    }
    let tls = tls_settings(
        raw.jwks_tls.take().unwrap_or_default(),
        &join(path, "jwks_tls"),
        errors,
    );
    if !ok {
        return None;
    }
    Some(JwtKeySettings::Jwks(JwksSettings {
        url: url?,
        refresh,
        min_refetch,
        timeout,
        tls,
    }))
}
