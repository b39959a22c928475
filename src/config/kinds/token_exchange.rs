//! `type: token_exchange`: RFC 8693 token exchange at an OAuth 2.0 token endpoint. The
//! subject token is the caller's; the keys here say what is asked for it.

use super::{http_url, require_secret};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(
    raw: RawTokenExchange,
    path: &str,
    errors: &mut Errors,
) -> Option<TokenExchangeSettings> {
    let token_url = http_url(&raw.token_url, &join(path, "token_url"), errors);
    if raw.client_id.is_empty() {
        errors.push(join(path, "client_id"), "is empty");
    }
    let client_auth = match raw.client_auth.unwrap_or(RawClientAuth::Basic) {
        RawClientAuth::Basic => ClientAuth::Basic,
        RawClientAuth::Post => ClientAuth::Post,
    };
    let subject_token_type = raw
        .subject_token_type
        .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_owned());
    token_type(
        &subject_token_type,
        &join(path, "subject_token_type"),
        errors,
    );
    if let Some(requested) = &raw.requested_token_type {
        token_type(requested, &join(path, "requested_token_type"), errors);
    }
    let audiences = raw.audience.map(OneOrMany::into_vec).unwrap_or_default();
    for (index, audience) in audiences.iter().enumerate() {
        if audience.is_empty() || audience.chars().any(char::is_control) {
            errors.push(
                listed(path, "audience", index, audiences.len()),
                "an audience is a non-empty name without control characters",
            );
        }
    }
    let resources = raw.resource.map(OneOrMany::into_vec).unwrap_or_default();
    for (index, resource) in resources.iter().enumerate() {
        let at = listed(path, "resource", index, resources.len());
        match url::Url::parse(resource) {
            Ok(url) if url.fragment().is_none() => {}
            Ok(_) => errors.push(at, "a resource indicator has no fragment (RFC 8707)"),
            Err(_) => errors.push(
                at,
                format!("`{resource}` is not an absolute URI (RFC 8707 resource indicator)"),
            ),
        }
    }
    let scopes = raw.scopes.unwrap_or_default();
    for (index, scope) in scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(' ') {
            errors.push(
                join(path, &format!("scopes[{index}]")),
                "a scope is one non-empty word without spaces",
            );
        }
    }
    let actor = match (raw.actor_token, raw.actor_token_type) {
        (None, None) => None,
        (None, Some(_)) => {
            errors.push(
                join(path, "actor_token_type"),
                "is sent only with an actor_token (RFC 8693 section 2.1): give actor_token too",
            );
            None
        }
        (Some(token), token_type_text) => {
            let token_type_text = token_type_text.unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_owned());
            token_type(&token_type_text, &join(path, "actor_token_type"), errors);
            require_secret(Some(token), &join(path, "actor_token"), "", errors).map(|token| {
                ActorToken {
                    token,
                    token_type: token_type_text,
                }
            })
        }
    };
    Some(TokenExchangeSettings {
        token_url: token_url?,
        client_id: raw.client_id,
        client_secret: raw.client_secret.filter(|s| !s.is_empty()),
        client_auth,
        subject_token_type,
        requested_token_type: raw.requested_token_type,
        audiences,
        resources,
        scopes,
        actor,
    })
}

/// RFC 8693 section 3: a token type identifier is a URI
/// (`urn:ietf:params:oauth:token-type:jwt`, say).
fn token_type(text: &str, path: &str, errors: &mut Errors) {
    if url::Url::parse(text).is_err() || text.chars().any(|c| c.is_whitespace()) {
        errors.push(
            path,
            format!(
                "`{text}` is not a token type URI (RFC 8693 section 3, e.g. {ACCESS_TOKEN_TYPE})"
            ),
        );
    }
}

/// `path.key` for a value written alone, `path.key[index]` for one of a list.
fn listed(path: &str, key: &str, index: usize, count: usize) -> String {
    match count {
        1 => join(path, key),
        _ => join(path, &format!("{key}[{index}]")),
    }
}
