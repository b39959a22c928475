//! `jwt:`: a JWT verified with a shared secret, a PEM public key or a JWKS (the key in
//! [`key`]), then its issuer, audience, required claims and scopes.

mod key;

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::{identity, source, DEFAULT_LEEWAY};
use crate::config::error::{join, Errors};
use crate::config::model::{JwtSettings, TokenSource};
use crate::config::raw::{RawJwt, RawOneOrMany};

const MAX_LEEWAY: Duration = Duration::from_secs(3600);
const ALGORITHM_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

pub(super) fn validate(mut raw: RawJwt, path: &str, errors: &mut Errors) -> Option<JwtSettings> {
    let from = source::validate(
        raw.from.take(),
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            scheme: Some("Bearer".to_owned()),
        },
        &join(path, "from"),
        errors,
    );
    let algorithms = algorithms(raw.algorithms.take(), path, errors);
    let key = key::validate(&mut raw, algorithms.as_deref(), path, errors);
    let issuer = non_empty(raw.issuer, path, "issuer", errors);
    let audience = non_empty(raw.audience, path, "audience", errors);
    let leeway = raw.leeway.map_or(DEFAULT_LEEWAY, |d| d.0);
    if leeway > MAX_LEEWAY {
        errors.push(
            join(path, "leeway"),
            format!("must be at most {}s", MAX_LEEWAY.as_secs()),
        );
    }
    let mut required_claims = Vec::new();
    for (name, value) in raw.required_claims.unwrap_or_default() {
        let at = join(&join(path, "required_claims"), &name);
        if let Err(message) = identity::field_reference(&name) {
            errors.push(&at, message);
            continue;
        }
        match value {
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_) => required_claims.push((name, value)),
            _ => errors.push(at, "must be a string, a number or true/false"),
        }
    }
    let required_scopes = raw.required_scopes.unwrap_or_default();
    for (index, scope) in required_scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            errors.push(
                join(path, &format!("required_scopes[{index}]")),
                "a scope is one non-empty word without spaces",
            );
        }
    }
    Some(JwtSettings {
        from: from?,
        algorithms: algorithms?,
        key: key?,
        issuer,
        audience,
        leeway,
        required_claims,
        required_scopes,
    })
}

/// `algorithms`: a list without duplicates, `none` or unknown names.
fn algorithms(
    names: Option<Vec<String>>,
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<Algorithm>> {
    match names {
        None => {
            errors.push(
                join(path, "algorithms"),
                "missing (list the algorithms the issuer signs with, like [RS256])",
            );
            None
        }
        Some(names) if names.is_empty() => {
            errors.push(join(path, "algorithms"), "needs at least one algorithm");
            None
        }
        Some(names) => {
            let mut ok = true;
            let mut algorithms = Vec::new();
            for (index, name) in names.iter().enumerate() {
                let at = join(path, &format!("algorithms[{index}]"));
                match parse_algorithm(name) {
                    Ok(algorithm) if !algorithms.contains(&algorithm) => algorithms.push(algorithm),
                    Ok(_) => {
                        errors.push(at, format!("`{name}` is listed twice"));
                        ok = false;
                    }
                    Err(message) => {
                        errors.push(at, message);
                        ok = false;
                    }
                }
            }
            ok.then_some(algorithms)
        }
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` is never accepted: unsigned tokens prove nothing".to_owned());
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{name}` (expected one of {ALGORITHM_NAMES})"))
}

/// `issuer` or `audience`: one value or a list, none of them empty.
fn non_empty(raw: Option<RawOneOrMany>, path: &str, key: &str, errors: &mut Errors) -> Vec<String> {
    let values = raw.map(RawOneOrMany::into_vec).unwrap_or_default();
    for (index, value) in values.iter().enumerate() {
        if value.is_empty() {
            errors.push(join(path, &format!("{key}[{index}]")), "is empty");
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use crate::config::inbound::tests::{assert_error, errors_of, key_file, SECRET};

    #[test]
    fn algorithms_and_keys_must_fit() {
        assert_eq!(
            errors_of("jwt: { algorithms: [HS256] }"),
            ["routes[0].inbound.jwt.secret: missing (HS algorithms verify with a shared secret)"]
        );
        assert_eq!(
            errors_of("jwt: { algorithms: [RS256] }"),
            ["routes[0].inbound.jwt: no key: give public_key_file or jwks_url (or secret for HS algorithms)"]
        );
        assert_error(
            "jwt: { secret: 'an-hmac-secret-of-at-least-32-bytes!!' }",
            "routes[0].inbound.jwt.algorithms: missing",
        );
        assert_error(
            "jwt: { algorithms: [], secret: x }",
            "routes[0].inbound.jwt.algorithms: needs at least one algorithm",
        );
        for none in ["none", "None", "NONE"] {
            assert_error(
                &format!("jwt: {{ algorithms: [RS256, {none}], jwks_url: 'https://idp/jwks' }}"),
                "routes[0].inbound.jwt.algorithms[1]: `none` is never accepted",
            );
        }
        assert_error(
            "jwt: { algorithms: [RS257], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.algorithms[0]: unknown algorithm `RS257`",
        );
        assert_error(
            "jwt: { algorithms: [HS256], secret: short }",
            "routes[0].inbound.jwt.secret: is shorter than 32 bytes",
        );
        assert_error(
            &format!("jwt: {{ algorithms: [RS256], secret: '{SECRET}' }}"),
            "routes[0].inbound.jwt.algorithms: a secret verifies HS256/HS384/HS512 only",
        );
        assert_error(
            "jwt: { algorithms: [HS256, RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.algorithms: HS algorithms need `secret`",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [HS256], secret: '{SECRET}', jwks_url: 'https://idp/jwks' }}"
            ),
            "routes[0].inbound.jwt: give exactly one of secret, public_key_file, jwks_url",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [ES256], public_key_file: {} }}",
                key_file("rsa1_public.pem")
            ),
            "routes[0].inbound.jwt.algorithms: ES256 cannot be verified with the RSA 2048-bit key",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [ES384], public_key_file: {} }}",
                key_file("ec256_public.pem")
            ),
            "routes[0].inbound.jwt.algorithms: ES384 cannot be verified with the EC P-256 key",
        );
        assert_error(
            &format!(
                "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
                key_file("rsa1_private.pem")
            ),
            "routes[0].inbound.jwt.public_key_file: ",
        );
        let errors = errors_of(&format!(
            "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
            key_file("rsa1_private.pem")
        ));
        assert!(errors[0].contains("holds a private key"), "{errors:?}");
        assert_error(
            &format!(
                "jwt: {{ algorithms: [RS256], public_key_file: {} }}",
                key_file("rsa_weak_public.pem")
            ),
            "routes[0].inbound.jwt.public_key_file: ",
        );
        assert_error(
            "jwt: { algorithms: [RS256], public_key_file: /nonexistent/key.pem }",
            "routes[0].inbound.jwt.public_key_file: cannot read /nonexistent/key.pem",
        );
        assert_error(
            &format!("jwt: {{ algorithms: [HS256], secret: '{SECRET}', jwks_refresh: 1m }}"),
            "routes[0].inbound.jwt.jwks_refresh: only applies with jwks_url",
        );
    }

    #[test]
    fn jwks_settings_are_checked() {
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'ftp://idp/jwks' }",
            "routes[0].inbound.jwt.jwks_url: `ftp://idp/jwks` is not an http:// or https:// URL",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'not a url' }",
            "routes[0].inbound.jwt.jwks_url: `not a url` is not a valid URL",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', jwks_refresh: 10s, jwks_min_refetch: 1m }",
            "routes[0].inbound.jwt.jwks_min_refetch: must not be longer than jwks_refresh",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', jwks_timeout: 0s }",
            "routes[0].inbound.jwt.jwks_timeout: must be longer than 0s",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', leeway: 2h }",
            "routes[0].inbound.jwt.leeway: must be at most 3600s",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', required_claims: { roles: [a] } }",
            "routes[0].inbound.jwt.required_claims.roles: must be a string, a number or true/false",
        );
        assert_error(
            "jwt: { algorithms: [RS256], jwks_url: 'https://idp/jwks', required_scopes: ['a b'] }",
            "routes[0].inbound.jwt.required_scopes[0]: a scope is one non-empty word",
        );
        assert_error(
            "jwt: { from: { header: Authorization, cookie: s }, algorithms: [RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.from: give header or cookie, not both",
        );
        assert_error(
            "jwt: { from: { header: 'Bad Header' }, algorithms: [RS256], jwks_url: 'https://idp/jwks' }",
            "routes[0].inbound.jwt.from.header: `Bad Header` is not a valid header name",
        );
    }
}
