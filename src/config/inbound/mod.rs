//! A route's `inbound:` section: who may pass before tollgate forwards (a client
//! certificate verified by an mTLS listener, JWT verification, a remote decision by the
//! Auth Engine, API keys), and the identity headers set for the upstream. Validation: the raw types (`raw/inbound.rs`) in, the validated model
//! (`model/inbound.rs`) out, one file per check.
//!
//! When several checks are configured, **all** must pass (API keys first, then the JWT,
//! then the remote decision). Identity headers are read from the `/me` reply when
//! `authorize.identity_from_me` is set, else from the JWT claims; a value starting with `/`
//! is a JSON pointer, anything else a top-level name.

mod api_keys;
mod authorize;
mod identity;
mod jwt;
mod source;
#[cfg(test)]
mod tests;

use std::time::Duration;

use http::HeaderName;

use super::error::{join, Errors};
use super::raw::RawInbound;

/// The validated model (`model/inbound.rs`), also named here, where the inbound checks
/// have always imported it from.
pub use super::model::{
    ApiKeySettings, AuthorizeAction, AuthorizeSettings, IdentityHeaderSetting, IdentitySource,
    InboundSettings, JwksSettings, JwtKeySettings, JwtSettings, TokenSource,
};

/// JWKS cached this long unless `jwks_refresh` says otherwise.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the JWKS at most this often unless `jwks_min_refetch` says
/// otherwise.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp` and `nbf` unless `leeway` says otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Whole-request deadline of a JWKS, `/user/authorize` or `/me` call.
pub const DEFAULT_INBOUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Authorization decisions are cached this long unless `cache_ttl` says otherwise.
pub const DEFAULT_DECISION_TTL: Duration = Duration::from_secs(30);

/// Validates a route's `inbound:` section found at `path` (`routes[0].inbound`).
pub(crate) fn validate(
    raw: RawInbound,
    path: &str,
    errors: &mut Errors,
) -> Option<InboundSettings> {
    if raw.client_cert.is_none()
        && raw.jwt.is_none()
        && raw.authorize.is_none()
        && raw.api_keys.is_none()
    {
        errors.push(
            path,
            "no check configured: give at least one of client_cert, jwt, authorize, api_keys",
        );
        return None;
    }
    let client_cert = raw.client_cert.is_some();
    let jwt_given = raw.jwt.is_some();
    let me_given = raw
        .authorize
        .as_ref()
        .is_some_and(|authorize| authorize.identity_from_me == Some(true));
    let mut ok = true;
    let jwt = raw.jwt.and_then(|raw| {
        let jwt = jwt::validate(raw, &join(path, "jwt"), errors);
        ok &= jwt.is_some();
        jwt
    });
    let authorize = raw.authorize.and_then(|raw| {
        let authorize = authorize::validate(raw, &join(path, "authorize"), errors);
        ok &= authorize.is_some();
        authorize
    });
    let api_keys = raw.api_keys.and_then(|raw| {
        let api_keys = api_keys::validate(raw, &join(path, "api_keys"), errors);
        ok &= api_keys.is_some();
        api_keys
    });
    let identity_path = join(path, "identity_headers");
    let identity_headers = identity::validate(
        raw.identity_headers.unwrap_or_default(),
        &identity_path,
        errors,
    );
    if let Some(identity_headers) = &identity_headers {
        let from_documents = identity_headers.iter().any(|h| !h.source.is_client_cert());
        if from_documents && !jwt_given && !me_given {
            errors.push(
                &identity_path,
                "identity headers are read from JWT claims or from /me: configure jwt, or authorize with identity_from_me: true",
            );
            ok = false;
        }
        for identity in identity_headers {
            if identity.source.is_client_cert() && !client_cert {
                errors.push(
                    join(&identity_path, identity.header.as_str()),
                    "reads the client certificate: configure client_cert: {} in this inbound section",
                );
                ok = false;
            }
        }
        let mut sources: Vec<HeaderName> = Vec::new();
        sources.extend(jwt.as_ref().map(|jwt| jwt.from.header_name()));
        sources.extend(authorize.as_ref().map(|a| a.from.header_name()));
        sources.extend(api_keys.as_ref().map(|keys| keys.header.clone()));
        for identity in identity_headers {
            if sources.contains(&identity.header) {
                errors.push(
                    join(&identity_path, identity.header.as_str()),
                    "is also where the caller's credential is read; pick another header",
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    Some(InboundSettings {
        client_cert,
        jwt,
        authorize,
        api_keys,
        identity_headers: identity_headers?,
        forward_caller_credential: raw.forward_caller_credential.unwrap_or(false),
    })
}

/// Types and validates an `inbound:` section written as YAML (for tests).
#[cfg(test)]
pub(crate) fn from_yaml(text: &str) -> Result<InboundSettings, super::ConfigErrors> {
    let mut errors = Errors::default();
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|error| {
        super::ConfigErrors(vec![super::ConfigError::new("", error.to_string())])
    })?;
    let path = "routes[0].inbound";
    let settings = super::typed::<RawInbound>(value, path, &mut errors)
        .and_then(|raw| validate(raw, path, &mut errors));
    match settings {
        Some(settings) => errors.into_result(settings),
        None => Err(errors.into_errors()),
    }
}
