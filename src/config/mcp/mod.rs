//! The `mcp` section and `server.mcp`: the MCP listener, the caller checks of the MCP
//! endpoint, declared tools, and imports (`naftiko.rs`, `openapi.rs`) that turn published
//! API descriptions into tools, routes and providers.
//!
//! Imports run first and hand their routes and providers to the ordinary validation of
//! those sections (with key paths that name the import), so an imported route is checked
//! like a written one. Tools are checked last, against the validated routes.

pub(crate) mod naftiko;
pub(crate) mod openapi;
pub(crate) mod template;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use http::{HeaderName, Method};
use serde_json::{json, Map, Value as Json};
use serde_yaml_ng::Value;

use super::error::{join, Errors};
use super::model::*;
use super::raw::*;
use super::references::Expanded;
use super::typed;
use super::values::http_url;
use crate::secret::Secret;

pub const DEFAULT_MCP_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_MCP_PATH: &str = "/mcp";
const MAX_TOOL_NAME: usize = 128;

/// A provider an import declares, validated with the `providers` section.
pub(crate) struct ImportedProvider {
    /// The key path errors are reported under.
    pub path: String,
    pub name: String,
    pub value: Value,
    /// Values from the environment in its settings: never echoed in error text.
    pub secrets: Vec<Secret>,
}

/// What the imports add to the config.
#[derive(Default)]
pub(crate) struct Imported {
    pub providers: Vec<ImportedProvider>,
    /// (key path, route in the `routes` syntax).
    pub routes: Vec<(String, Value)>,
    /// (key path, tool).
    pub tools: Vec<(String, RawTool)>,
}

/// Types the `mcp` section (the imports are read later, with [`run_imports`]).
pub(crate) fn raw_section(value: Option<Value>, errors: &mut Errors) -> RawMcp {
    value
        .and_then(|value| match value {
            Value::Null => None,
            value => typed::<RawMcp>(value, "mcp", errors),
        })
        .unwrap_or_default()
}

/// Reads every `mcp.import` entry; relative files are found from `base_dir`.
pub(crate) fn run_imports(
    raw: &mut RawMcp,
    base_dir: &Path,
    errors: &mut Errors,
    expanded: &mut Expanded,
) -> Imported {
    let mut imported = Imported::default();
    for (index, item) in raw
        .import
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("mcp.import[{index}]");
        let Some(entry) = typed::<RawImport>(item, &path, errors) else {
            continue;
        };
        match (entry.naftiko, entry.openapi) {
            (Some(naftiko), None) => naftiko::import(
                naftiko,
                &join(&path, "naftiko"),
                base_dir,
                &mut imported,
                errors,
                expanded,
            ),
            (None, Some(openapi)) => openapi::import(
                openapi,
                &join(&path, "openapi"),
                base_dir,
                &mut imported,
                errors,
            ),
            (None, None) => errors.push(&path, "give `naftiko` or `openapi`"),
            (Some(_), Some(_)) => {
                errors.push(&path, "give one of `naftiko` and `openapi` per entry")
            }
        }
    }
    imported
}

/// Reads a file named in an import, relative to the config file's folder.
pub(crate) fn read_import(
    file: &str,
    base_dir: &Path,
    path: &str,
    errors: &mut Errors,
) -> Option<Value> {
    let full = base_dir.join(file);
    let text = match std::fs::read_to_string(&full) {
        Ok(text) => text,
        Err(error) => {
            errors.push(path, format!("cannot read {}: {error}", full.display()));
            return None;
        }
    };
    match serde_yaml_ng::from_str(&text) {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(
                path,
                format!("{} is not valid YAML or JSON: {error}", full.display()),
            );
            None
        }
    }
}

/// The MCP listener: configured in `server.mcp`, or the default one when tools exist.
pub(crate) fn listener(
    raw: Option<RawMcpServer>,
    wanted: bool,
    others: &[SocketAddr],
    errors: &mut Errors,
) -> Option<McpListener> {
    if raw.is_none() && !wanted {
        return None;
    }
    let raw = raw.unwrap_or_default();
    let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_MCP_LISTEN.to_owned());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            errors.push(
                "server.mcp.listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:9090"),
            );
            return None;
        }
    };
    if others.contains(&listen) {
        errors.push(
            "server.mcp.listen",
            format!("{listen} is already the proxy or admin listener"),
        );
    }
    let path = raw.path.unwrap_or_else(|| DEFAULT_MCP_PATH.to_owned());
    let canonical = crate::canonical::canonical_path(path.as_bytes(), &PathPolicy::default());
    if !path.starts_with('/')
        || path == "/"
        || path.starts_with("/.well-known")
        || !matches!(canonical, Ok(ref c) if c == path.as_str())
        || path.ends_with('/')
    {
        errors.push(
            "server.mcp.path",
            "must be a canonical path like /mcp (not `/`, not under /.well-known, no trailing `/`)",
        );
    }
    let allowed_hosts = match raw.allowed_hosts {
        Some(hosts) => hosts,
        // A loopback listener is what DNS rebinding attacks from a browser reach.
        None if listen.ip().is_loopback() => {
            vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ]
        }
        None => Vec::new(),
    };
    Some(McpListener {
        listen,
        path,
        allowed_hosts,
    })
}

/// Validates the caller checks, the resource metadata and every tool (declared first,
/// then imported), against the validated routes and providers.
pub(crate) fn validate(
    raw: RawMcp,
    imported_tools: Vec<(String, RawTool)>,
    routes: &[Route],
    providers: &[ProviderSpec],
    errors: &mut Errors,
) -> McpSettings {
    let inbound = raw.inbound.and_then(|raw| {
        let settings = super::inbound::validate(raw, "mcp.inbound", errors)?;
        if !settings.identity_headers.is_empty() {
            errors.push(
                "mcp.inbound.identity_headers",
                "not used on the MCP endpoint (a tool's route sets its own)",
            );
        }
        if settings.forward_caller_credential {
            errors.push(
                "mcp.inbound.forward_caller_credential",
                "the MCP caller's credential is never passed upstream",
            );
        }
        if settings.client_cert {
            errors.push(
                "mcp.inbound.client_cert",
                "the MCP listener is plain HTTP: no client certificate reaches it",
            );
        }
        Some(settings)
    });
    let resource_metadata = resource_metadata(raw.resource_metadata, inbound.as_ref(), errors);
    let mut tools = Vec::new();
    let mut names = HashSet::new();
    let declared = raw
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| {
            let path = format!("mcp.tools[{index}]");
            typed::<RawTool>(value, &path, errors).map(|tool| (path, tool))
        })
        .collect::<Vec<_>>();
    for (path, raw_tool) in declared.into_iter().chain(imported_tools) {
        if !names.insert(raw_tool.name.clone()) {
            errors.push(
                join(&path, "name"),
                format!("duplicate tool name `{}`", raw_tool.name),
            );
        }
        if let Some(tool) = tool(raw_tool, &path, routes, providers, errors) {
            tools.push(tool);
        }
    }
    McpSettings {
        inbound,
        resource_metadata,
        tools,
    }
}

fn resource_metadata(
    raw: Option<RawResourceMetadata>,
    inbound: Option<&InboundSettings>,
    errors: &mut Errors,
) -> ResourceMetadata {
    let path = "mcp.resource_metadata";
    let given = raw.is_some();
    let raw = raw.unwrap_or_default();
    if given && inbound.and_then(|i| i.jwt.as_ref()).is_none() {
        errors.push(
            path,
            "is served only with mcp.inbound.jwt (an OAuth resource server)",
        );
    }
    let jwt = inbound.and_then(|inbound| inbound.jwt.as_ref());
    let resource = raw
        .resource
        .and_then(|text| http_url(&text, &join(path, "resource"), errors));
    let authorization_servers = raw
        .authorization_servers
        .unwrap_or_else(|| jwt.map(|jwt| jwt.issuer.clone()).unwrap_or_default());
    for (index, server) in authorization_servers.iter().enumerate() {
        http_url(
            server,
            &join(path, &format!("authorization_servers[{index}]")),
            errors,
        );
    }
    ResourceMetadata {
        resource,
        authorization_servers,
        scopes_supported: raw.scopes_supported.unwrap_or_else(|| {
            jwt.map(|jwt| jwt.required_scopes.clone())
                .unwrap_or_default()
        }),
    }
}

fn tool(
    raw: RawTool,
    path: &str,
    routes: &[Route],
    providers: &[ProviderSpec],
    errors: &mut Errors,
) -> Option<Tool> {
    let mut ok = true;
    if raw.name.is_empty()
        || raw.name.len() > MAX_TOOL_NAME
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        errors.push(
            join(path, "name"),
            "tool names are 1 to 128 letters, digits, `_`, `-` and `.`",
        );
        ok = false;
    }
    let method_text = raw.method.unwrap_or_else(|| "GET".to_owned());
    let method = match Method::from_bytes(method_text.to_ascii_uppercase().as_bytes()) {
        Ok(method)
            if [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::HEAD,
                Method::OPTIONS,
            ]
            .contains(&method) =>
        {
            Some(method)
        }
        _ => {
            errors.push(
                join(path, "method"),
                format!(
                    "`{method_text}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
                ),
            );
            None
        }
    };
    let upstream_path = match template::parse(&raw.path) {
        Ok(template) => Some(template),
        Err(message) => {
            errors.push(join(path, "path"), message);
            None
        }
    };
    let query = raw.query.unwrap_or_default();
    for (index, name) in query.iter().enumerate() {
        if !template::valid_argument_name(name) {
            errors.push(
                join(path, &format!("query[{index}]")),
                "argument names use letters, digits, `_` and `-`",
            );
            ok = false;
        }
    }
    let input_schema = match raw.input_schema {
        None => derived_schema(upstream_path.as_ref(), &query, raw.body.as_deref()),
        Some(Json::Object(schema)) => {
            if schema.get("type").and_then(Json::as_str) != Some("object") {
                errors.push(join(path, "input_schema.type"), "must be `object`");
                ok = false;
            }
            schema
        }
        Some(_) => {
            errors.push(
                join(path, "input_schema"),
                "must be a JSON Schema object (type: object, properties: ...)",
            );
            return None;
        }
    };
    let properties = input_schema.get("properties").and_then(Json::as_object);
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Json::as_array)
        .map(|items| items.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let mut used: HashSet<&str> = HashSet::new();
    let mut arguments: Vec<(String, &str, bool)> = Vec::new();
    if let Some(template) = &upstream_path {
        arguments.extend(
            template
                .arguments()
                .map(|name| (join(path, "path"), name, true)),
        );
    }
    arguments.extend(
        query
            .iter()
            .enumerate()
            .map(|(index, name)| (join(path, &format!("query[{index}]")), name.as_str(), false)),
    );
    if let Some(body) = &raw.body {
        arguments.push((join(path, "body"), body.as_str(), false));
    }
    for (at, name, must_be_required) in arguments {
        if !used.insert(name) {
            errors.push(
                &at,
                format!(
                    "argument `{name}` is used twice (path, query and body each take their own)"
                ),
            );
            ok = false;
        }
        if !properties.is_some_and(|p| p.contains_key(name)) {
            errors.push(
                &at,
                format!("argument `{name}` is not in input_schema.properties"),
            );
            ok = false;
        } else if must_be_required && !required.contains(&name) {
            errors.push(
                &at,
                format!("placeholder `{name}` must be listed in input_schema.required"),
            );
            ok = false;
        }
    }
    if raw.body.is_some() && matches!(method, Some(Method::GET | Method::HEAD)) {
        errors.push(
            join(path, "body"),
            format!(
                "a {} request sends no body; use POST, PUT or PATCH",
                method_text.to_ascii_uppercase()
            ),
        );
        ok = false;
    }
    let hints = raw.hints.unwrap_or_default();
    let Some(route) = routes.iter().find(|route| route.name == raw.route) else {
        errors.push(
            join(path, "route"),
            format!("no route named `{}` is configured", raw.route),
        );
        return None;
    };
    let (request_path, caller_headers) = match &upstream_path {
        Some(template) => through_route(template, route, path, errors)?,
        None => return None,
    };
    let secrets = route
        .credential
        .as_ref()
        .and_then(|credential| providers.iter().find(|p| p.name == credential.provider))
        .map(provider_secrets)
        .unwrap_or_default();
    if !ok {
        return None;
    }
    Some(Tool {
        description: raw.description.unwrap_or_else(|| {
            format!(
                "{} {} through route {}",
                method_text.to_ascii_uppercase(),
                raw.path,
                raw.route
            )
        }),
        name: raw.name,
        title: raw.title,
        route: raw.route,
        method: method?,
        upstream_path: upstream_path?,
        request_path,
        host: route.host.clone(),
        query,
        body: raw.body,
        input_schema,
        hints: ToolHints {
            read_only: hints.read_only,
            destructive: hints.destructive,
            idempotent: hints.idempotent,
            open_world: hints.open_world,
        },
        caller_headers,
        secrets,
        source: path.to_owned(),
    })
}

/// The path the proxy listener must receive for `route` to forward `upstream` (the path
/// its upstream receives), and the caller headers its inbound check reads.
fn through_route(
    upstream: &PathTemplate,
    route: &Route,
    path: &str,
    errors: &mut Errors,
) -> Option<(PathTemplate, Vec<HeaderName>)> {
    let base = route.backends.first().map_or("", |b| b.base_path.as_str());
    if route.backends.iter().any(|b| b.base_path != base) {
        errors.push(
            join(path, "route"),
            format!(
                "route `{}` has backends with different base paths; a tool needs one",
                route.name
            ),
        );
        return None;
    }
    let rest = template::strip_literal_prefix(upstream, base).filter(|rest| {
        let start = rest.literal_start();
        start.is_empty() && rest.parts.is_empty() || start.starts_with('/')
    });
    let Some(rest) = rest else {
        errors.push(
            join(path, "path"),
            format!(
                "is the path the upstream receives, so it starts with the route's upstream base path `{base}`"
            ),
        );
        return None;
    };
    let prefix = route.path_prefix.trim_end_matches('/');
    let request = if route.strip_prefix {
        template::with_literal_prefix(&rest, prefix)
    } else {
        let start = rest.literal_start();
        let covered = start.len() >= prefix.len() || start.ends_with('/');
        if !covered || !crate::routing::prefix_matches(&route.path_prefix, start) {
            errors.push(
                join(path, "path"),
                format!(
                    "route `{}` forwards paths under `{}` as they are: the path (after the base path `{base}`) must start with that prefix, written out",
                    route.name, route.path_prefix
                ),
            );
            return None;
        }
        template::with_literal_prefix(&rest, "")
    };
    let mut caller_headers: Vec<HeaderName> = Vec::new();
    if let Some(inbound) = &route.inbound {
        if inbound.forward_caller_credential {
            errors.push(
                join(path, "route"),
                format!(
                    "route `{}` forwards the caller's credential upstream (forward_caller_credential), which a tool never does",
                    route.name
                ),
            );
            return None;
        }
        if inbound.client_cert {
            errors.push(
                join(path, "route"),
                format!(
                    "route `{}` checks the caller's client certificate (inbound.client_cert), which a tool call, made on a plain proxy listener, never has",
                    route.name
                ),
            );
            return None;
        }
        let sources = [
            inbound.api_keys.as_ref().map(|keys| keys.header.clone()),
            inbound.jwt.as_ref().map(|jwt| jwt.from.header_name()),
            inbound.authorize.as_ref().map(|a| a.from.header_name()),
        ];
        for name in sources.into_iter().flatten() {
            if !caller_headers.contains(&name) {
                caller_headers.push(name);
            }
        }
    }
    Some((request, caller_headers))
}

/// The secrets of a route's provider that a tool result must never show: whatever its
/// `${env:...}`/`${file:...}` references expanded to, and its secret settings written
/// inline (the `http` type's templates are covered by their references only).
fn provider_secrets(spec: &ProviderSpec) -> Vec<Secret> {
    let mut secrets = spec.reference_values.clone();
    let mut add = |secret: &Secret| secrets.push(secret.clone());
    match &spec.settings {
        ProviderSettings::OAuth2(settings) => {
            settings.client.client_secret.iter().for_each(&mut add);
            match &settings.grant {
                OAuth2Grant::Password { password, .. } => add(password),
                OAuth2Grant::RefreshToken { refresh_token } => add(refresh_token),
                OAuth2Grant::ClientCredentials => {}
            }
        }
        ProviderSettings::TokenExchange(settings) => {
            settings.client.client_secret.iter().for_each(&mut add);
            settings.actor.iter().for_each(|actor| add(&actor.token));
        }
        ProviderSettings::BigId(settings) => match &settings.login {
            BigIdLogin::UserToken(token) => add(token),
            BigIdLogin::Password { password, .. } => add(password),
        },
        ProviderSettings::Fortanix(settings) => match &settings.login {
            FortanixLogin::Basic { password, .. }
            | FortanixLogin::Password { password, .. }
            | FortanixLogin::AppName { password, .. }
            | FortanixLogin::Ldap { password, .. } => add(password),
        },
        ProviderSettings::BigBucks(settings) => {
            add(&settings.password);
            settings.recaptcha.iter().for_each(&mut add);
        }
        ProviderSettings::BagId(settings) => match &settings.flow {
            BagIdFlow::Federated { app_key, token } => {
                add(app_key);
                if let FederatedToken::Value(token) = token {
                    add(token);
                }
            }
            BagIdFlow::B2bSecret {
                app_key,
                b2b_secret,
                password,
                ..
            } => {
                add(app_key);
                add(b2b_secret);
                add(password);
            }
            BagIdFlow::Attestation { .. } | BagIdFlow::Guest { .. } => {}
        },
        ProviderSettings::Static(settings) => add(&settings.value),
        ProviderSettings::Http(_) => {}
    }
    secrets.retain(|secret| secret.expose().len() >= 4);
    secrets
}

/// An input schema from the template and the argument lists: placeholders are required
/// strings, query arguments optional, the body a required object.
fn derived_schema(
    template: Option<&PathTemplate>,
    query: &[String],
    body: Option<&str>,
) -> Map<String, Json> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for name in template.into_iter().flat_map(|t| t.arguments()) {
        properties.insert(name.to_owned(), json!({"type": "string"}));
        required.push(json!(name));
    }
    for name in query {
        properties.insert(
            name.clone(),
            json!({"type": ["string", "number", "boolean"]}),
        );
    }
    if let Some(body) = body {
        properties.insert(
            body.to_owned(),
            json!({"type": "object", "description": "sent as the JSON body"}),
        );
        required.push(json!(body));
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Json::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), Json::Array(required));
    }
    schema
}
