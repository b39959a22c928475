//! `type: token_exchange`: RFC 8693 token exchange at an OAuth 2.0 token endpoint. The
//! subject token is the caller's; the keys here say what is asked for it.

use super::require_secret;
use super::token_endpoint::{self, listed};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;

pub(crate) fn validate(
    raw: RawTokenExchange,
    path: &str,
    errors: &mut Errors,
) -> Option<TokenExchangeSettings> {
    let client = token_endpoint::client(
        &raw.token_url,
        raw.client_id,
        raw.client_secret,
        raw.client_auth,
        path,
        errors,
    );
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
    let resources = token_endpoint::resources(raw.resource, path, errors);
    let scopes = token_endpoint::scopes(raw.scopes, path, errors);
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
        client: client?,
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
