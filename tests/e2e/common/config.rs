//! Config text. `{listen}` and `{admin}` (or `{admin_any}`, the admin port on every
//! interface) are left for the harness to fill in with free ports.
//!
//! Provider and route blocks take their extra keys as text, one key per line, flush left
//! (nested blocks indented as in YAML): `grant: password\nusername: demo-user`.

/// Backoff for every test provider unless a test says otherwise: short, so that a test
/// that makes a provider fail does not wait long to see it recover.
pub const FAST_REFRESH: &str = "refresh: { min_backoff: 200ms, max_backoff: 1s }";

/// Renewal one second ahead of expiry, for the short-lived (2 s) tokens of the refresh
/// tests, with the fast backoff.
pub const SHORT_REFRESH: &str =
    "refresh: { before_expiry: 1s, min_backoff: 200ms, max_backoff: 1s }";

/// A whole config: the server section with the port placeholders, then the given provider
/// blocks (each from [`oauth2`]/[`provider`]/...) and route blocks ([`route`]...).
pub fn config(providers: &[String], routes: &[String]) -> String {
    format!(
        "server:\n  listen: [\"{{listen}}\"]\n  admin: \"{{admin}}\"\n  threads: 1\nproviders:\n{}routes:\n{}",
        providers.concat(),
        routes.concat()
    )
}

/// `yaml` (made by [`config`]) with more keys in its server section, one per line.
pub fn with_server(yaml: &str, keys: &str) -> String {
    assert!(
        yaml.contains("\n  threads: 1\n"),
        "not a harness config:\n{yaml}"
    );
    yaml.replacen(
        "\n  threads: 1\n",
        &format!("\n  threads: 1\n{}", indented(keys, "  ")),
        1,
    )
}

/// The config most tests start from: the oauth2 provider `idp` at `token_url`, with the
/// stand-in's default client and `extra` keys (see [`oauth2`]), and the route `reports`:
/// `/reports/` (stripped) to `upstream` with idp's token as `Authorization: Bearer`.
pub fn reports_config(token_url: &str, extra: &str, upstream: &str) -> String {
    single_route(oauth2("idp", token_url, extra), "/reports/", upstream)
}

/// A config with one provider block and one route named after `prefix` (`/api/` is
/// `api`): `prefix` (stripped) to `upstream`, with that provider's token as
/// `Authorization: Bearer`.
pub fn single_route(provider: String, prefix: &str, upstream: &str) -> String {
    let name = provider_name(&provider).to_owned();
    let route_name = prefix.trim_matches('/');
    config(
        &[provider],
        &[route(route_name, prefix, upstream, &name, "")],
    )
}

/// The name of a provider block (its first key).
pub fn provider_name(block: &str) -> &str {
    block.trim_start().split(':').next().unwrap_or_default()
}

/// Each non-empty line of `lines` with `indent` before it.
fn indented(lines: &str, indent: &str) -> String {
    let mut out = String::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A provider block `name` of `type: kind`; `keys` are its own keys. Without a `refresh:`
/// line, [`FAST_REFRESH`].
pub fn provider(name: &str, kind: &str, keys: &str) -> String {
    let mut keys = keys.to_owned();
    if !keys.contains("refresh:") {
        keys.push('\n');
        keys.push_str(FAST_REFRESH);
    }
    format!("  {name}:\n    type: {kind}\n{}", indented(&keys, "    "))
}

/// An oauth2 provider block with the stand-in's default client (`demo-client` /
/// `demo-secret`) unless `extra` names its own (`grant: password`, `refresh: {...}`...).
pub fn oauth2(name: &str, token_url: &str, extra: &str) -> String {
    let has = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    let mut keys = format!("token_url: {token_url}\n");
    if !has("client_id:") {
        keys.push_str("client_id: demo-client\n");
    }
    if !has("client_secret:") {
        keys.push_str("client_secret: demo-secret\n");
    }
    keys.push_str(extra);
    provider(name, "oauth2", &keys)
}

/// The `Authorization` value of the OAuth2 stand-in's default client in Basic form.
pub fn oauth2_basic_header() -> String {
    format!("Basic {}", super::basic_pair("demo-client", "demo-secret"))
}

/// A bigid provider block logging in with a user token.
pub fn bigid_user_token(name: &str, base_url: &str, user_token: &str, extra: &str) -> String {
    provider(
        name,
        "bigid",
        &format!("base_url: {base_url}\nuser_token: {user_token}\n{extra}"),
    )
}

/// A bigid provider block logging in with username and password.
pub fn bigid_password(
    name: &str,
    base_url: &str,
    username: &str,
    password: &str,
    extra: &str,
) -> String {
    provider(
        name,
        "bigid",
        &format!("base_url: {base_url}\nusername: {username}\npassword: {password}\n{extra}"),
    )
}

/// A `static` provider block: no network, for routes whose test is not about tokens.
pub fn static_provider(name: &str) -> String {
    format!("  {name}:\n    type: static\n    value: static-test-key\n")
}

/// A route `name` matching `path_prefix`, stripping it, forwarding to `upstream_url`, with
/// `Authorization: Bearer {token}` from `provider`. `extra` holds more route keys.
pub fn route(
    name: &str,
    path_prefix: &str,
    upstream_url: &str,
    provider: &str,
    extra: &str,
) -> String {
    let strip = if extra.contains("strip_prefix:") {
        String::new()
    } else {
        "    strip_prefix: true\n".to_owned()
    };
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {path_prefix} }}\n{strip}    upstream: {{ url: {upstream_url} }}\n    credential: {{ provider: {provider}, header: Authorization, format: \"Bearer {{token}}\" }}\n{}",
        indented(extra, "    ")
    )
}

/// A route `name` on `prefix` (stripped) to `upstream`, injecting `header` with `format`.
pub fn route_injecting(
    name: &str,
    prefix: &str,
    upstream: &str,
    provider: &str,
    header: &str,
    format: &str,
) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    strip_prefix: true\n    upstream: {{ url: {upstream} }}\n    credential: {{ provider: {provider}, header: {header}, format: \"{format}\" }}\n"
    )
}

/// A route block with any match and upstream: `matcher` and `upstream` are the inside of
/// their flow mappings (`path_prefix: /a/`, `urls: [http://x, http://y]`), `provider`
/// gives a bearer credential, `extra` holds more route keys. The prefix is stripped.
pub fn route_block(
    name: &str,
    matcher: &str,
    upstream: &str,
    provider: Option<&str>,
    extra: &str,
) -> String {
    let mut block = format!(
        "  - name: {name}\n    match: {{ {matcher} }}\n    strip_prefix: true\n    upstream: {{ {upstream} }}\n"
    );
    if let Some(provider) = provider {
        block.push_str(&format!(
            "    credential: {{ provider: {provider}, header: Authorization, format: \"Bearer {{token}}\" }}\n"
        ));
    }
    block.push_str(&indented(extra, "    "));
    block
}

/// A config with the `static` provider `key` ([`static_provider`]) and `routes`: for the
/// tests that are not about tokens.
pub fn keyed_config(routes: &[String]) -> String {
    config(&[static_provider("key")], routes)
}

/// [`route_block`] on `path_prefix: /{name}/` to `url: {upstream}` with the `static`
/// provider `key` (see [`static_provider`]): the route of a test that is not about tokens.
pub fn keyed_route(name: &str, upstream: &str, extra: &str) -> String {
    route_block(
        name,
        &format!("path_prefix: /{name}/"),
        &format!("url: {upstream}"),
        Some("key"),
        extra,
    )
}
