//! Validation of the `providers` section: common keys first, then the type's own keys.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use url::Url;

use super::error::{join, Errors};
use super::model::*;
use super::raw::*;
use super::references::key_name;
use super::typed;
use crate::secret::Secret;

const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDER_TYPES: &str = "oauth2, bigid";

pub(crate) fn validate_all(value: Option<Value>, errors: &mut Errors) -> Vec<ProviderSpec> {
    let map = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            errors.push(
                "providers",
                "must be a mapping of provider name to settings",
            );
            return Vec::new();
        }
    };
    let mut specs = Vec::new();
    for (key, value) in map {
        let name = key_name(&key);
        let path = join("providers", &name);
        if !valid_name(&name) {
            errors.push(
                &path,
                "provider names use lower-case letters, digits, '-' and '_'",
            );
        }
        if let Some(spec) = validate_one(name, value, &path, errors) {
            specs.push(spec);
        }
    }
    specs
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn validate_one(
    name: String,
    value: Value,
    path: &str,
    errors: &mut Errors,
) -> Option<ProviderSpec> {
    let Value::Mapping(mut map) = value else {
        errors.push(path, "must be a mapping with at least `type`");
        return None;
    };
    let kind = match map.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            errors.push(
                join(path, "type"),
                format!("must be one of {PROVIDER_TYPES}"),
            );
            return None;
        }
        None => {
            errors.push(
                join(path, "type"),
                format!("missing (one of {PROVIDER_TYPES})"),
            );
            return None;
        }
    };
    let common = take_common(&mut map, path, errors);
    let rest = Value::Mapping(map);
    let settings = match kind.as_str() {
        "oauth2" => typed::<RawOAuth2>(rest, path, errors)
            .and_then(|raw| oauth2(raw, path, errors))
            .map(ProviderSettings::OAuth2),
        "bigid" => typed::<RawBigId>(rest, path, errors)
            .and_then(|raw| bigid(raw, path, errors))
            .map(ProviderSettings::BigId),
        other => {
            errors.push(
                join(path, "type"),
                format!("unknown provider type `{other}` (expected one of {PROVIDER_TYPES})"),
            );
            None
        }
    };
    let refresh = refresh_policy(common.refresh.unwrap_or_default(), path, errors);
    let tls = tls_settings(common.tls.unwrap_or_default(), &join(path, "tls"), errors);
    let timeout = common.timeout.map_or(DEFAULT_PROVIDER_TIMEOUT, |t| t.0);
    if timeout.is_zero() {
        errors.push(join(path, "timeout"), "must be longer than 0s");
    }
    Some(ProviderSpec {
        name,
        settings: settings?,
        refresh,
        timeout,
        tls,
    })
}

fn take_common(map: &mut Mapping, path: &str, errors: &mut Errors) -> RawProviderCommon {
    let mut common = Mapping::new();
    for key in PROVIDER_COMMON_KEYS {
        if let Some(value) = map.remove(key) {
            common.insert(Value::String(key.to_owned()), value);
        }
    }
    typed(Value::Mapping(common), path, errors).unwrap_or_default()
}

fn refresh_policy(raw: RawRefresh, path: &str, errors: &mut Errors) -> RefreshPolicy {
    let defaults = RefreshPolicy::default();
    let policy = RefreshPolicy {
        before_expiry: raw.before_expiry.map_or(defaults.before_expiry, |d| d.0),
        default_ttl: raw.default_ttl.map_or(defaults.default_ttl, |d| d.0),
        min_backoff: raw.min_backoff.map_or(defaults.min_backoff, |d| d.0),
        max_backoff: raw.max_backoff.map_or(defaults.max_backoff, |d| d.0),
    };
    let refresh_path = join(path, "refresh");
    if policy.default_ttl.is_zero() {
        errors.push(join(&refresh_path, "default_ttl"), "must be longer than 0s");
    }
    if policy.min_backoff.is_zero() {
        errors.push(join(&refresh_path, "min_backoff"), "must be longer than 0s");
    }
    if policy.min_backoff > policy.max_backoff {
        errors.push(
            join(&refresh_path, "max_backoff"),
            "must not be shorter than min_backoff",
        );
    }
    policy
}

pub(crate) fn tls_settings(raw: RawTls, path: &str, errors: &mut Errors) -> TlsSettings {
    let ca_file = raw.ca_file.map(PathBuf::from);
    if let Some(file) = &ca_file {
        if let Err(message) = crate::tls::read_ca_file(file) {
            errors.push(join(path, "ca_file"), message);
        }
    }
    TlsSettings {
        ca_file,
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
    }
}

pub(crate) fn http_url(text: &str, path: &str, errors: &mut Errors) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                errors.push(path, "must not carry credentials; use the provider's keys");
                return None;
            }
            Some(url)
        }
        Ok(_) => {
            errors.push(
                path,
                format!("`{text}` is not an http:// or https:// URL with a host"),
            );
            None
        }
        Err(error) => {
            errors.push(path, format!("`{text}` is not a valid URL: {error}"));
            None
        }
    }
}

fn require_secret(
    secret: Option<Secret>,
    path: &str,
    what: &str,
    errors: &mut Errors,
) -> Option<Secret> {
    match secret {
        Some(secret) if !secret.is_empty() => Some(secret),
        Some(_) => {
            errors.push(path, "is empty");
            None
        }
        None => {
            errors.push(path, format!("missing ({what})"));
            None
        }
    }
}

fn oauth2(raw: RawOAuth2, path: &str, errors: &mut Errors) -> Option<OAuth2Settings> {
    let token_url = http_url(&raw.token_url, &join(path, "token_url"), errors);
    if raw.client_id.is_empty() {
        errors.push(join(path, "client_id"), "is empty");
    }
    let grant = match raw.grant.unwrap_or(RawGrant::ClientCredentials) {
        RawGrant::ClientCredentials => Some(OAuth2Grant::ClientCredentials),
        RawGrant::Password => {
            let username = raw.username.filter(|u| !u.is_empty());
            if username.is_none() {
                errors.push(
                    join(path, "username"),
                    "missing (needed by grant: password)",
                );
            }
            let password = require_secret(
                raw.password,
                &join(path, "password"),
                "needed by grant: password",
                errors,
            );
            username
                .zip(password)
                .map(|(username, password)| OAuth2Grant::Password { username, password })
        }
        RawGrant::RefreshToken => require_secret(
            raw.refresh_token,
            &join(path, "refresh_token"),
            "needed by grant: refresh_token",
            errors,
        )
        .map(|refresh_token| OAuth2Grant::RefreshToken { refresh_token }),
    };
    let client_auth = match raw.client_auth.unwrap_or(RawClientAuth::Basic) {
        RawClientAuth::Basic => ClientAuth::Basic,
        RawClientAuth::Post => ClientAuth::Post,
    };
    let scopes = raw.scopes.unwrap_or_default();
    for (index, scope) in scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(' ') {
            errors.push(
                join(path, &format!("scopes[{index}]")),
                "a scope is one non-empty word without spaces",
            );
        }
    }
    Some(OAuth2Settings {
        token_url: token_url?,
        grant: grant?,
        client_id: raw.client_id,
        client_secret: raw.client_secret.filter(|s| !s.is_empty()),
        client_auth,
        scopes,
        audience: raw.audience,
    })
}

fn bigid(raw: RawBigId, path: &str, errors: &mut Errors) -> Option<BigIdSettings> {
    let base_url = http_url(&raw.base_url, &join(path, "base_url"), errors);
    let login = match (raw.user_token, raw.username, raw.password) {
        (Some(token), None, None) => {
            require_secret(Some(token), &join(path, "user_token"), "", errors)
                .map(BigIdLogin::UserToken)
        }
        (None, Some(username), password) => {
            let password = require_secret(
                password,
                &join(path, "password"),
                "needed with username",
                errors,
            );
            password.map(|password| BigIdLogin::Password { username, password })
        }
        (None, None, Some(_)) => {
            errors.push(join(path, "username"), "missing (needed with password)");
            None
        }
        (None, None, None) => {
            errors.push(path, "needs either user_token, or username and password");
            None
        }
        (Some(_), _, _) => {
            errors.push(
                join(path, "user_token"),
                "give either user_token or username and password, not both",
            );
            None
        }
    };
    Some(BigIdSettings {
        base_url: base_url?,
        login: login?,
    })
}
