//! `authorize:`: a remote decision by the BigBucks Auth Engine (`POST /user/authorize`,
//! optionally `GET /me` for identity).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::{HeaderName, Method};

use super::source::{self, is_token};
use super::{DEFAULT_DECISION_TTL, DEFAULT_INBOUND_TIMEOUT};
use crate::config::error::{join, Errors};
use crate::config::model::{AuthorizeAction, AuthorizeSettings, TokenSource};
use crate::config::raw::RawAuthorize;
use crate::config::values::{http_url, tls_settings};

const MAX_DECISION_TTL: Duration = Duration::from_secs(3600);

pub(super) fn validate(
    raw: RawAuthorize,
    path: &str,
    errors: &mut Errors,
) -> Option<AuthorizeSettings> {
    let url = http_url(&raw.url, &join(path, "url"), errors);
    if let Some(url) = &url {
        if url.query().is_some() || url.fragment().is_some() {
            errors.push(join(path, "url"), "must not have a query or fragment");
        }
    }
    let from = source::validate(
        raw.from,
        TokenSource::Header {
            name: HeaderName::from_static("x-auth"),
            scheme: None,
        },
        &join(path, "from"),
        errors,
    );
    let action = action(raw.action, raw.action_by_method, path, errors);
    if raw.resource.is_empty() {
        errors.push(join(path, "resource"), "is empty");
    }
    if raw.scope.is_empty() {
        errors.push(join(path, "scope"), "is empty");
    }
    let cache_ttl = raw.cache_ttl.map_or(DEFAULT_DECISION_TTL, |d| d.0);
    if cache_ttl > MAX_DECISION_TTL {
        errors.push(
            join(path, "cache_ttl"),
            format!("must be at most {}s", MAX_DECISION_TTL.as_secs()),
        );
    }
    let timeout = raw.timeout.map_or(DEFAULT_INBOUND_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.push(join(path, "timeout"), "must be longer than 0s");
    }
    let tls = tls_settings(raw.tls.unwrap_or_default(), &join(path, "tls"), errors);
    if raw.resource.is_empty() || raw.scope.is_empty() || timeout.is_zero() {
        return None;
    }
    Some(AuthorizeSettings {
        url: url?,
        from: from?,
        action: action?,
        resource: raw.resource,
        scope: raw.scope,
        org_id: raw.org_id,
        cache_ttl,
        fail_open: raw.fail_open.unwrap_or(false),
        identity_from_me: raw.identity_from_me.unwrap_or(false),
        timeout,
        tls,
    })
}

/// `action` for every method, or `action_by_method`.
fn action(
    action: Option<String>,
    action_by_method: Option<BTreeMap<String, String>>,
    path: &str,
    errors: &mut Errors,
) -> Option<AuthorizeAction> {
    match (action, action_by_method) {
        (Some(action), None) => {
            if action.is_empty() {
                errors.push(join(path, "action"), "is empty");
                None
            } else {
                Some(AuthorizeAction::Fixed(action))
            }
        }
        (None, Some(map)) => {
            let map_path = join(path, "action_by_method");
            if map.is_empty() {
                errors.push(&map_path, "needs at least one method");
            }
            let mut seen = HashSet::new();
            let mut pairs = Vec::new();
            let mut ok = true;
            for (method, action) in map {
                let at = join(&map_path, &method);
                let upper = method.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(parsed) if is_token(&upper) => {
                        if !seen.insert(parsed.clone()) {
                            errors.push(&at, "method listed twice");
                            ok = false;
                        }
                        if action.is_empty() {
                            errors.push(&at, "action is empty");
                            ok = false;
                        }
                        pairs.push((parsed, action));
                    }
                    _ => {
                        errors.push(at, format!("`{method}` is not an HTTP method"));
                        ok = false;
                    }
                }
            }
            (ok && !pairs.is_empty()).then_some(AuthorizeAction::ByMethod(pairs))
        }
        (Some(_), Some(_)) => {
            errors.push(path, "give action or action_by_method, not both");
            None
        }
        (None, None) => {
            errors.push(
                join(path, "action"),
                "missing (give action, or action_by_method)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::inbound::tests::assert_error;

    #[test]
    fn authorize_settings_are_checked() {
        assert_error(
            "authorize: { url: 'engine:8000', action: read, resource: r, scope: s }",
            "routes[0].inbound.authorize.url: ",
        );
        assert_error(
            "authorize: { url: 'http://user:pw@engine', action: read, resource: r, scope: s }",
            "routes[0].inbound.authorize.url: must not carry credentials",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, action_by_method: { GET: read }, resource: r, scope: s }",
            "routes[0].inbound.authorize: give action or action_by_method, not both",
        );
        assert_error(
            "authorize: { url: 'http://engine', resource: r, scope: s }",
            "routes[0].inbound.authorize.action: missing",
        );
        assert_error(
            "authorize: { url: 'http://engine', action_by_method: { 'GE T': read }, resource: r, scope: s }",
            "routes[0].inbound.authorize.action_by_method.GE T: `GE T` is not an HTTP method",
        );
        assert_error(
            "authorize: { url: 'http://engine', action_by_method: { get: read, GET: write }, resource: r, scope: s }",
            "routes[0].inbound.authorize.action_by_method.get: method listed twice",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, resource: '', scope: s }",
            "routes[0].inbound.authorize.resource: is empty",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, resource: r, scope: s, cache_ttl: 2h }",
            "routes[0].inbound.authorize.cache_ttl: must be at most 3600s",
        );
        assert_error(
            "authorize: { url: 'http://engine', action: read, scope: s }",
            "routes[0].inbound.authorize: missing field `resource`",
        );
    }
}
