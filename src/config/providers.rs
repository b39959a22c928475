//! Validation of the `providers` section: common keys first, then the type's own keys.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::error::{join, Errors};
use super::kinds;
use super::mcp::ImportedProvider;
use super::model::*;
use super::raw::*;
use super::references::{key_name, Expanded};
use super::typed;
use super::values::tls_settings;

const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDER_TYPES: &str =
    "oauth2, bigid, fortanix, bigbucks, bagid, static, http, token_exchange";
/// A bound beyond this is a typo more likely than a plan (each entry holds a token).
const MAX_PER_CALLER_ENTRIES: u64 = 100_000_000;

/// Validates the `providers` section, then the providers imports add.
pub(crate) fn validate_all(
    value: Option<Value>,
    imported: Vec<ImportedProvider>,
    errors: &mut Errors,
    expanded: &Expanded,
) -> Vec<ProviderSpec> {
    let map = match value {
        None | Some(Value::Null) => Mapping::new(),
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            errors.push(
                "providers",
                "must be a mapping of provider name to settings",
            );
            Mapping::new()
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
        if let Some(mut spec) = validate_one(name, value, &path, errors) {
            spec.reference_values = expanded.values_under(&path);
            specs.push(spec);
        }
    }
    for provider in imported {
        if specs.iter().any(|spec| spec.name == provider.name) {
            errors.push(
                &provider.path,
                format!(
                    "becomes provider `{}`, which is already configured; name it in the import's `providers` to use that one",
                    provider.name
                ),
            );
            continue;
        }
        if let Some(mut spec) = validate_one(provider.name, provider.value, &provider.path, errors)
        {
            spec.reference_values = provider.secrets;
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
    let identity = identity(&kind, &rest);
    let settings = match kind.as_str() {
        "oauth2" => typed::<RawOAuth2>(rest, path, errors)
            .and_then(|raw| kinds::oauth2::validate(raw, path, errors))
            .map(ProviderSettings::OAuth2),
        "bigid" => typed::<RawBigId>(rest, path, errors)
            .and_then(|raw| kinds::bigid::validate(raw, path, errors))
            .map(ProviderSettings::BigId),
        "fortanix" => typed::<RawFortanix>(rest, path, errors)
            .and_then(|raw| kinds::fortanix::validate(raw, path, errors))
            .map(ProviderSettings::Fortanix),
        "bigbucks" => typed::<RawBigBucks>(rest, path, errors)
            .and_then(|raw| kinds::bigbucks::validate(raw, path, errors))
            .map(ProviderSettings::BigBucks),
        "bagid" => typed::<RawBagId>(rest, path, errors)
            .and_then(|raw| kinds::bagid::validate(raw, path, errors))
            .map(ProviderSettings::BagId),
        "static" => typed::<RawStatic>(rest, path, errors)
            .and_then(|raw| kinds::static_value::validate(raw, path, errors))
            .map(ProviderSettings::Static),
        "http" => typed::<RawHttpLogin>(rest, path, errors)
            .and_then(|raw| kinds::http::validate(raw, path, errors))
            .map(ProviderSettings::Http),
        "token_exchange" => typed::<RawTokenExchange>(rest, path, errors)
            .and_then(|raw| kinds::token_exchange::validate(raw, path, errors))
            .map(ProviderSettings::TokenExchange),
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
    let settings = settings?;
    let per_caller = per_caller(common.per_caller, &settings, path, errors);
    Some(ProviderSpec {
        name,
        identity,
        settings,
        refresh,
        timeout,
        tls,
        reference_values: Vec::new(),
        per_caller,
    })
}

/// A digest of the provider's type and own settings (secrets included, references
/// expanded), not of the keys every provider shares (`refresh`, `timeout`, `tls`): those
/// change how a token is fetched and kept, not which credentials it stands for.
fn identity(kind: &str, settings: &Value) -> [u8; 32] {
    let text = serde_yaml_ng::to_string(settings).unwrap_or_default();
    Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(text.as_bytes())
        .finalize()
        .into()
}

/// The `per_caller` key: the cache bound of a provider that mints a token per caller, and
/// an error on any other provider.
fn per_caller(
    raw: Option<RawPerCaller>,
    settings: &ProviderSettings,
    path: &str,
    errors: &mut Errors,
) -> Option<PerCallerSettings> {
    let at = join(path, "per_caller");
    if !settings.is_per_caller() {
        if raw.is_some() {
            errors.push(
                at,
                "only a provider that mints a token per caller takes it (type token_exchange, or bagid with federated_token: from_caller)",
            );
        }
        return None;
    }
    let defaults = PerCallerSettings::default();
    let max_entries = raw
        .and_then(|raw| raw.max_entries)
        .unwrap_or(defaults.max_entries);
    if max_entries == 0 || max_entries > MAX_PER_CALLER_ENTRIES {
        errors.push(
            join(&at, "max_entries"),
            format!("must be between 1 and {MAX_PER_CALLER_ENTRIES}"),
        );
    }
    Some(PerCallerSettings { max_entries })
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
