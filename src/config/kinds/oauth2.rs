//! `type: oauth2`: an RFC 6749 token endpoint.

use super::{http_url, require_secret};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(raw: RawOAuth2, path: &str, errors: &mut Errors) -> Option<OAuth2Settings> {
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
    let resources = raw.resource.map(OneOrMany::into_vec).unwrap_or_default();
    for (index, resource) in resources.iter().enumerate() {
        let at = match resources.len() {
            1 => join(path, "resource"),
            _ => join(path, &format!("resource[{index}]")),
        };
        match url::Url::parse(resource) {
            Ok(url) if url.fragment().is_none() => {}
            Ok(_) => errors.push(at, "a resource indicator has no fragment (RFC 8707)"),
            Err(_) => errors.push(
                at,
                format!("`{resource}` is not an absolute URI (RFC 8707 resource indicator)"),
            ),
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
        resources,
    })
}
