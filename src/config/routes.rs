//! Validation of the `routes` section.

use std::collections::HashSet;

use serde_yaml_ng::Value;

use super::error::{join, Errors};
use super::model::*;
use super::raw::*;
use super::typed;
use super::values::{header_name, http_url, tls_settings};

const TOKEN_PLACEHOLDER: &str = "{token}";
const DEFAULT_MAX_REQUEST_BODY: u64 = 10 << 20;
const TOKEN_TYPE_PLACEHOLDER: &str = "{token_type}";

/// The providers a route may name.
pub(crate) struct KnownProviders<'a> {
    pub all: &'a [&'a str],
    /// Those that mint a token per caller, from the token the route's inbound check verified.
    pub per_caller: &'a [&'a str],
}

/// Validates the `routes` section, then the routes an import adds (each with the key path
/// to report its errors under).
pub(crate) fn validate_all(
    value: Option<Value>,
    imported: Vec<(String, Value)>,
    providers: &KnownProviders<'_>,
    listeners: &[Listener],
    errors: &mut Errors,
) -> Vec<Route> {
    let items = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            errors.push("routes", "must be a list of routes");
            return Vec::new();
        }
    };
    if items.is_empty() && imported.is_empty() {
        errors.push("routes", "at least one route is needed");
    }
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    let mut routes = Vec::new();
    let items = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| (format!("routes[{index}]"), item))
        .chain(imported);
    for (path, item) in items {
        let Some(raw) = typed::<RawRoute>(item, &path, errors) else {
            continue;
        };
        if !names.insert(raw.name.clone()) {
            errors.push(
                join(&path, "name"),
                format!("duplicate route name `{}`", raw.name),
            );
        }
        if let Some(route) = validate_one(raw, &path, providers, listeners, errors) {
            if !matches.insert((route.host.clone(), route.path_prefix.clone())) {
                errors.push(
                    join(&path, "match"),
                    "another route already matches the same host and path_prefix",
                );
            }
            routes.push(route);
        }
    }
    routes
}

fn validate_one(
    raw: RawRoute,
    path: &str,
    providers: &KnownProviders<'_>,
    listeners: &[Listener],
    errors: &mut Errors,
) -> Option<Route> {
    if raw.name.is_empty() || raw.name.chars().any(|c| c.is_control() || c == ' ') {
        errors.push(
            join(path, "name"),
            "must be non-empty, without spaces or control characters",
        );
    }
    let match_path = join(path, "match");
    let path_prefix = raw.matcher.path_prefix.unwrap_or_else(|| "/".to_owned());
    if !path_prefix.starts_with('/') || path_prefix.chars().any(|c| c.is_control() || c == ' ') {
        errors.push(
            join(&match_path, "path_prefix"),
            "must start with `/` and hold no spaces",
        );
    } else {
        // Requests are routed by their canonical path, so a prefix in any other form
        // would never match, or match what it does not say.
        let policy = PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        };
        match crate::canonical::canonical_path(path_prefix.as_bytes(), &policy) {
            Ok(canonical) if canonical == path_prefix.as_str() => {}
            Ok(canonical) => errors.push(
                join(&match_path, "path_prefix"),
                format!("is not a canonical path: write `{canonical}`"),
            ),
            Err(refusal) => errors.push(join(&match_path, "path_prefix"), refusal.detail()),
        }
    }
    // Requests name a host with or without the trailing dot of a fully qualified name.
    let host = raw
        .matcher
        .host
        .map(|host| host.trim_end_matches('.').to_ascii_lowercase());
    if let Some(host) = &host {
        if host.is_empty() || host.contains(['/', ' ', ':']) || host.chars().any(|c| c.is_control())
        {
            errors.push(
                join(&match_path, "host"),
                "must be a host name without port or path",
            );
        }
    }
    let backends = backends(raw.upstream, &join(path, "upstream"), errors);
    let credential = raw
        .credential
        .and_then(|raw| credential(raw, &join(path, "credential"), providers.all, errors));
    let on_upstream_status = raw.on_upstream_status.unwrap_or_else(|| vec![401]);
    for (index, status) in on_upstream_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.push(
                join(path, &format!("on_upstream_status[{index}]")),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    let inbound_given = raw.inbound.is_some();
    let inbound = raw
        .inbound
        .and_then(|raw| super::inbound::validate(raw, &join(path, "inbound"), errors));
    if inbound.as_ref().is_some_and(|inbound| inbound.client_cert)
        && !listeners.iter().any(Listener::mtls)
    {
        errors.push(
            join(path, "inbound.client_cert"),
            "no listener asks for client certificates: give one a tls.client_ca_file",
        );
    }
    if let Some(credential) = &credential {
        if providers.per_caller.contains(&credential.provider.as_str()) {
            per_caller_route(
                &credential.provider,
                inbound.as_ref(),
                inbound_given,
                path,
                errors,
            );
        }
    }
    let defaults = UpstreamTimeouts::default();
    let raw_timeouts = raw.timeouts.unwrap_or_default();
    let timeouts = UpstreamTimeouts {
        connect: raw_timeouts.connect.map_or(defaults.connect, |d| d.0),
        read: raw_timeouts.read.map_or(defaults.read, |d| d.0),
        write: raw_timeouts.write.map_or(defaults.write, |d| d.0),
        idle: raw_timeouts.idle.map_or(defaults.idle, |d| d.0),
        total: raw_timeouts.total.map_or(defaults.total, |d| d.0),
        upgraded_idle: raw_timeouts
            .upgraded_idle
            .map_or(defaults.upgraded_idle, |d| d.0),
        upgraded_total: raw_timeouts
            .upgraded_total
            .map_or(defaults.upgraded_total, |d| d.0),
    };
    for (key, value) in [
        ("connect", timeouts.connect),
        ("read", timeouts.read),
        ("write", timeouts.write),
        ("total", timeouts.total),
        ("upgraded_idle", timeouts.upgraded_idle),
        ("upgraded_total", timeouts.upgraded_total),
    ] {
        if value.is_zero() {
            errors.push(join(&join(path, "timeouts"), key), "must be longer than 0s");
        }
    }
    Some(Route {
        name: raw.name,
        host,
        path_prefix,
        strip_prefix: raw.strip_prefix.unwrap_or(false),
        backends: backends?,
        credential,
        on_upstream_status,
        preserve_host: raw.preserve_host.unwrap_or(false),
        timeouts,
        max_request_body: raw
            .max_request_body
            .map_or(DEFAULT_MAX_REQUEST_BODY, |size| size.0),
        inbound,
    })
}

/// A route whose provider mints a token per caller exchanges the token its inbound check
/// verified: it needs a check that verifies a token (jwt, or authorize without fail_open),
/// and the upstream must never see the caller's own token.
fn per_caller_route(
    provider: &str,
    inbound: Option<&InboundSettings>,
    inbound_given: bool,
    path: &str,
    errors: &mut Errors,
) {
    let inbound_path = join(path, "inbound");
    let Some(inbound) = inbound else {
        if !inbound_given {
            errors.push(
                join(&join(path, "credential"), "provider"),
                format!(
                    "provider `{provider}` mints a token per caller from the caller's verified token: the route needs an inbound check (jwt, or authorize)"
                ),
            );
        }
        return;
    };
    if inbound.jwt.is_none() && inbound.authorize.is_none() {
        errors.push(
            &inbound_path,
            format!(
                "provider `{provider}` exchanges the caller's verified token, and an API key is none: configure jwt or authorize"
            ),
        );
    }
    if inbound.jwt.is_none()
        && inbound
            .authorize
            .as_ref()
            .is_some_and(|authorize| authorize.fail_open)
    {
        errors.push(
            join(&join(&inbound_path, "authorize"), "fail_open"),
            format!(
                "a fail-open pass has not verified the caller's token, which provider `{provider}` exchanges: remove fail_open or add a jwt check"
            ),
        );
    }
    if inbound.forward_caller_credential {
        errors.push(
            join(&inbound_path, "forward_caller_credential"),
            format!(
                "must not be true on a route whose provider `{provider}` mints a token per caller: the upstream gets the minted token, never the caller's own"
            ),
        );
    }
}

fn backends(raw: RawUpstream, path: &str, errors: &mut Errors) -> Option<Vec<Backend>> {
    let tls_settings = tls_settings(raw.tls.unwrap_or_default(), &join(path, "tls"), errors);
    let http2 = raw.http2.unwrap_or(false);
    let urls: Vec<(String, String)> = match (raw.url, raw.urls) {
        (Some(url), None) => vec![(join(path, "url"), url)],
        (None, Some(urls)) if !urls.is_empty() => urls
            .into_iter()
            .enumerate()
            .map(|(index, url)| (join(path, &format!("urls[{index}]")), url))
            .collect(),
        (None, Some(_)) => {
            errors.push(join(path, "urls"), "needs at least one URL");
            return None;
        }
        (None, None) => {
            errors.push(
                join(path, "url"),
                "missing (give url, or urls for several backends)",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            errors.push(path, "give url or urls, not both");
            return None;
        }
    };
    let mut backends = Vec::new();
    for (url_path, text) in urls {
        let Some(url) = http_url(&text, &url_path, errors) else {
            continue;
        };
        if url.query().is_some() || url.fragment().is_some() {
            errors.push(&url_path, "must not have a query or fragment");
            continue;
        }
        let tls = url.scheme() == "https";
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            errors.push(&url_path, "needs a host");
            continue;
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        backends.push(Backend {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            tls_settings: tls_settings.clone(),
            http2,
        });
    }
    (!backends.is_empty()).then_some(backends)
}

fn credential(
    raw: RawCredential,
    path: &str,
    providers: &[&str],
    errors: &mut Errors,
) -> Option<Credential> {
    if !providers.contains(&raw.provider.as_str()) {
        errors.push(
            join(path, "provider"),
            format!("no provider named `{}` is configured", raw.provider),
        );
    }
    let header_text = raw.header.unwrap_or_else(|| "Authorization".to_owned());
    let header = header_name(&header_text, &join(path, "header"), errors);
    let format_text = raw.format.unwrap_or_else(|| "Bearer {token}".to_owned());
    let format = token_format(&format_text, &join(path, "format"), errors);
    Some(Credential {
        provider: raw.provider,
        header: header?,
        format: format?,
    })
}

fn token_format(text: &str, path: &str, errors: &mut Errors) -> Option<TokenFormat> {
    if text.matches(TOKEN_PLACEHOLDER).count() != 1 {
        errors.push(path, "must contain `{token}` exactly once");
        return None;
    }
    if text.matches(TOKEN_TYPE_PLACEHOLDER).count() > 1 {
        errors.push(path, "may contain `{token_type}` at most once");
        return None;
    }
    if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        errors.push(path, "must not contain CR, LF or NUL (header injection)");
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let (placeholder, part) = if rest[start..].starts_with(TOKEN_PLACEHOLDER) {
            (TOKEN_PLACEHOLDER, FormatPart::Token)
        } else if rest[start..].starts_with(TOKEN_TYPE_PLACEHOLDER) {
            (TOKEN_TYPE_PLACEHOLDER, FormatPart::TokenType)
        } else {
            errors.push(
                path,
                "only `{token}` and `{token_type}` may appear in braces",
            );
            return None;
        };
        if start > 0 {
            parts.push(FormatPart::Literal(rest[..start].to_owned()));
        }
        parts.push(part);
        rest = &rest[start + placeholder.len()..];
    }
    if !rest.is_empty() {
        parts.push(FormatPart::Literal(rest.to_owned()));
    }
    let format = TokenFormat { parts };
    if http::HeaderValue::from_str(&format.render("x", "Bearer")).is_err() {
        errors.push(path, "holds characters not allowed in a header value");
        return None;
    }
    Some(format)
}
