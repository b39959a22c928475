//! `type: oauth2`: an RFC 6749 token endpoint.

use super::require_secret;
use super::token_endpoint;
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(raw: RawOAuth2, path: &str, errors: &mut Errors) -> Option<OAuth2Settings> {
    let client = token_endpoint::client(
        &raw.token_url,
        raw.client_id,
        raw.client_secret,
        raw.client_auth,
        path,
        errors,
    );
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
    let scopes = token_endpoint::scopes(raw.scopes, path, errors);
    let resources = token_endpoint::resources(raw.resource, path, errors);
    Some(OAuth2Settings {
        client: client?,
        grant: grant?,
        scopes,
        audience: raw.audience,
        resources,
    })
}
