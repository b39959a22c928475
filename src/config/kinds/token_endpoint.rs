//! The keys `oauth2` and `token_exchange` share: the token endpoint and the client
//! (`token_url`, `client_id`, `client_secret`, `client_auth`), `scopes` and `resource`.

use super::http_url;
use crate::config::error::{join, Errors};
use crate::config::model::{ClientAuth, TokenClient};
use crate::config::raw::{OneOrMany, RawClientAuth};
use crate::secret::Secret;

/// The token endpoint and client; `None` when `token_url` is not a usable URL.
pub(crate) fn client(
    token_url: &str,
    client_id: String,
    client_secret: Option<Secret>,
    client_auth: Option<RawClientAuth>,
    path: &str,
    errors: &mut Errors,
) -> Option<TokenClient> {
    let token_url = http_url(token_url, &join(path, "token_url"), errors);
    if client_id.is_empty() {
        errors.push(join(path, "client_id"), "is empty");
    }
    let client_auth = match client_auth.unwrap_or(RawClientAuth::Basic) {
        RawClientAuth::Basic => ClientAuth::Basic,
        RawClientAuth::Post => ClientAuth::Post,
    };
    Some(TokenClient {
        token_url: token_url?,
        client_id,
        client_secret: client_secret.filter(|s| !s.is_empty()),
        client_auth,
    })
}

/// `scopes`: each one non-empty word.
pub(crate) fn scopes(raw: Option<Vec<String>>, path: &str, errors: &mut Errors) -> Vec<String> {
    let scopes = raw.unwrap_or_default();
    for (index, scope) in scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(' ') {
            errors.push(
                join(path, &format!("scopes[{index}]")),
                "a scope is one non-empty word without spaces",
            );
        }
    }
    scopes
}

/// `resource`: RFC 8707 resource indicators, one or a list, each an absolute URI without
/// a fragment.
pub(crate) fn resources(raw: Option<OneOrMany>, path: &str, errors: &mut Errors) -> Vec<String> {
    let resources = raw.map(OneOrMany::into_vec).unwrap_or_default();
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
    resources
}

/// `path.key` for a value written alone, `path.key[index]` for one of a list.
pub(crate) fn listed(path: &str, key: &str, index: usize, count: usize) -> String {
    match count {
        1 => join(path, key),
        _ => join(path, &format!("{key}[{index}]")),
    }
}
