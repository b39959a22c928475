//! `mcp.import: - naftiko: file.yaml`: a Naftiko capability, loaded as published.
//!
//! - `binds` (namespace `env`) name environment variables; `{{env.KEY}}` in the file
//!   resolves through them. A variable that a used value needs and that is not set is an
//!   error naming it.
//! - Each `consumes` entry (type `http`) is an upstream API: its `baseUri`, its
//!   `authentication` (bearer, basic, apikey in a header) as a `static` provider named after
//!   the namespace, unless the import puts a configured provider behind it
//!   (`providers: { <namespace>: <provider> }`).
//! - Each resource of a `rest` exposure becomes a route on the proxy listener, matching the
//!   exposed path and forwarding to the consumed path: when the exposed path ends the
//!   consumed one (`/v1/sessions` and `/api/v1/sessions`), the route keeps the path and its
//!   upstream URL carries the rest (`{baseUri}/api`).
//! - Each tool of an `mcp` exposure becomes a tool through the route that serves its
//!   consumed resource, with its hints as annotations and its input parameters as the
//!   input schema.
//!
//! What tollgate cannot do as the capability says is an error, not an approximation:
//! other exposure types, argument mappings other than passing an argument on unchanged,
//! parameters in headers, a REST resource whose operations call different consumed
//! resources or change the method.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value as Json};
use serde_yaml_ng::{Mapping, Value};

use super::{read_import, Imported, ImportedProvider};
use crate::config::error::{join, Errors};
use crate::config::raw::{RawHints, RawNaftikoImport, RawTool};
use crate::config::references::Expanded;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
struct Capability {
    naftiko: String,
    #[serde(default)]
    binds: Vec<Bind>,
    capability: Body,
}

#[derive(Debug, Deserialize)]
struct Bind {
    namespace: String,
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    consumes: Vec<Consumes>,
    #[serde(default)]
    exposes: Vec<Exposes>,
}

#[derive(Debug, Deserialize)]
struct Consumes {
    #[serde(rename = "type")]
    kind: String,
    namespace: String,
    #[serde(rename = "baseUri")]
    base_uri: String,
    #[serde(default)]
    resources: Vec<ConsumedResource>,
    authentication: Option<Authentication>,
}

#[derive(Debug, Deserialize)]
struct ConsumedResource {
    path: String,
    #[serde(default)]
    operations: Vec<ConsumedOperation>,
}

#[derive(Debug, Deserialize)]
struct ConsumedOperation {
    name: String,
    method: String,
    description: Option<String>,
    #[serde(default, rename = "inputParameters")]
    input_parameters: Vec<InputParameter>,
}

#[derive(Debug, Deserialize)]
struct InputParameter {
    name: String,
    #[serde(rename = "in")]
    location: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    description: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
struct Authentication {
    #[serde(rename = "type")]
    kind: String,
    value: Option<String>,
    username: Option<String>,
    password: Option<String>,
    key: Option<String>,
    placement: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Exposes {
    #[serde(rename = "type")]
    kind: String,
    namespace: String,
    #[serde(default)]
    resources: Vec<RestResource>,
    #[serde(default)]
    tools: Vec<McpTool>,
}

#[derive(Debug, Deserialize)]
struct RestResource {
    path: String,
    name: String,
    #[serde(default)]
    operations: Vec<RestOperation>,
}

#[derive(Debug, Deserialize)]
struct RestOperation {
    method: String,
    call: String,
    #[serde(default)]
    with: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct McpTool {
    name: String,
    description: Option<String>,
    #[serde(default)]
    hints: NaftikoHints,
    call: String,
    #[serde(default)]
    with: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
struct NaftikoHints {
    #[serde(rename = "readOnly")]
    read_only: Option<bool>,
    destructive: Option<bool>,
    idempotent: Option<bool>,
    #[serde(rename = "openWorld")]
    open_world: Option<bool>,
}

/// A consumed API as tollgate serves it.
struct Upstream {
    namespace: String,
    /// `baseUri` with its values resolved, without a trailing `/`.
    base_uri: String,
    /// The path part of `baseUri` ("" for none).
    base_path: String,
    credential: Option<Mapping>,
}

pub(crate) fn import(
    raw: RawNaftikoImport,
    path: &str,
    base_dir: &Path,
    imported: &mut Imported,
    errors: &mut Errors,
    expanded: &mut Expanded,
) {
    let (file, chosen) = match raw {
        RawNaftikoImport::File(file) => (file, BTreeMap::new()),
        RawNaftikoImport::Detailed(detailed) => {
            (detailed.file, detailed.providers.unwrap_or_default())
        }
    };
    let label = format!("{path}({file})");
    let Some(value) = read_import(&file, base_dir, path, errors) else {
        return;
    };
    let Some(capability) = crate::config::typed::<Capability>(value, &label, errors) else {
        return;
    };
    if !capability.naftiko.starts_with("1.") {
        errors.push(
            join(&label, "naftiko"),
            format!("version `{}` is not known (1.x is)", capability.naftiko),
        );
        return;
    }
    let binds = Binds::new(&capability.binds);
    let mut upstreams: Vec<Upstream> = Vec::new();
    for (index, consumes) in capability.capability.consumes.iter().enumerate() {
        let at = join(&label, &format!("capability.consumes[{index}]"));
        if consumes.kind != "http" {
            errors.push(
                join(&at, "type"),
                format!("`{}` is not served (http is)", consumes.kind),
            );
            continue;
        }
        let Some(base_uri) =
            binds.resolve(&consumes.base_uri, &join(&at, "baseUri"), errors, expanded)
        else {
            continue;
        };
        let base_uri = base_uri.trim_end_matches('/').to_owned();
        let base_path = match url::Url::parse(&base_uri) {
            Ok(url) => url.path().trim_end_matches('/').to_owned(),
            Err(error) => {
                errors.push(
                    join(&at, "baseUri"),
                    format!("`{base_uri}` is not a URL: {error}"),
                );
                continue;
            }
        };
        let provider_name = provider_name(&consumes.namespace);
        let credential = match (chosen.get(&consumes.namespace), &consumes.authentication) {
            (Some(provider), auth) => {
                let (header, format) = auth
                    .as_ref()
                    .map_or(("Authorization".to_owned(), "Bearer {token}"), |auth| {
                        credential_shape(auth)
                    });
                Some(credential(provider, &header, format))
            }
            (None, None) => None,
            (None, Some(auth)) => {
                let auth_path = join(&at, "authentication");
                static_provider(
                    auth,
                    &provider_name,
                    &auth_path,
                    &binds,
                    imported,
                    errors,
                    expanded,
                )
                .map(|(header, format)| credential(&provider_name, &header, format))
            }
        };
        upstreams.push(Upstream {
            namespace: consumes.namespace.clone(),
            base_uri,
            base_path,
            credential,
        });
    }
    for namespace in chosen.keys() {
        if !capability
            .capability
            .consumes
            .iter()
            .any(|c| &c.namespace == namespace)
        {
            errors.push(
                join(path, &format!("providers.{namespace}")),
                "the capability consumes no API of that namespace",
            );
        }
    }
    // (consumes namespace, consumed resource path) → the route serving it.
    let mut served: Vec<(String, String, String)> = Vec::new();
    for (index, exposes) in capability.capability.exposes.iter().enumerate() {
        let at = join(&label, &format!("capability.exposes[{index}]"));
        match exposes.kind.as_str() {
            "rest" => rest_routes(
                exposes,
                &at,
                &capability,
                &upstreams,
                &mut served,
                imported,
                errors,
            ),
            "mcp" => {}
            other => errors.push(
                join(&at, "type"),
                format!("`{other}` exposures are not served (rest and mcp are)"),
            ),
        }
    }
    for (index, exposes) in capability.capability.exposes.iter().enumerate() {
        if exposes.kind != "mcp" {
            continue;
        }
        let at = join(&label, &format!("capability.exposes[{index}]"));
        for (tool_index, tool) in exposes.tools.iter().enumerate() {
            let tool_path = join(&at, &format!("tools[{tool_index}]"));
            if let Some(raw) = mcp_tool(tool, &tool_path, &capability, &upstreams, &served, errors)
            {
                imported.tools.push((tool_path, raw));
            }
        }
    }
}

/// Values of the `env` binds.
struct Binds {
    env: BTreeMap<String, String>,
}

impl Binds {
    fn new(binds: &[Bind]) -> Binds {
        let mut env = BTreeMap::new();
        for bind in binds.iter().filter(|bind| bind.namespace == "env") {
            env.extend(bind.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Binds { env }
    }

    /// `text` with each `{{env.KEY}}` replaced by the bound variable's value.
    fn resolve(
        &self,
        text: &str,
        path: &str,
        errors: &mut Errors,
        expanded: &mut Expanded,
    ) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                errors.push(path, "`{{` without its `}}`");
                return None;
            };
            let reference = after[..end].trim();
            let Some(key) = reference.strip_prefix("env.") else {
                errors.push(
                    path,
                    format!("`{{{{{reference}}}}}`: only env binds are resolved"),
                );
                return None;
            };
            let Some(variable) = self.env.get(key) else {
                errors.push(
                    path,
                    format!("`{{{{env.{key}}}}}` is not among the capability's binds"),
                );
                return None;
            };
            match std::env::var(variable) {
                Ok(value) => {
                    expanded.record(path, &value, &format!("{{{{env.{key}}}}}"));
                    out.push_str(&value);
                }
                Err(_) => {
                    errors.push(
                        path,
                        format!("env {variable} is not set (bound to {{{{env.{key}}}}})"),
                    );
                    return None;
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Some(out)
    }
}

/// Provider names use lower-case letters, digits, `-` and `_`.
fn provider_name(namespace: &str) -> String {
    namespace
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .collect()
}

/// The header and format a consumed API's authentication type puts its token in.
fn credential_shape(auth: &Authentication) -> (String, &'static str) {
    match auth.kind.as_str() {
        "basic" => ("Authorization".to_owned(), "Basic {token}"),
        "apikey" => (
            auth.key.clone().unwrap_or_else(|| "X-Api-Key".to_owned()),
            "{token}",
        ),
        _ => ("Authorization".to_owned(), "Bearer {token}"),
    }
}

fn credential(provider: &str, header: &str, format: &str) -> Mapping {
    let mut map = Mapping::new();
    map.insert("provider".into(), provider.into());
    map.insert("header".into(), header.into());
    map.insert("format".into(), format.into());
    map
}

/// The consumed API's own authentication as a `static` provider; the header and format
/// its value goes in.
fn static_provider(
    auth: &Authentication,
    name: &str,
    path: &str,
    binds: &Binds,
    imported: &mut Imported,
    errors: &mut Errors,
    expanded: &mut Expanded,
) -> Option<(String, &'static str)> {
    if let Some(placement) = &auth.placement {
        if placement != "header" {
            errors.push(
                join(path, "placement"),
                format!("`{placement}` is not served (header is)"),
            );
            return None;
        }
    }
    let mut secrets = Vec::new();
    let mut resolve = |value: &Option<String>, key: &str, errors: &mut Errors| -> Option<String> {
        let Some(text) = value else {
            errors.push(
                join(path, key),
                format!("missing (needed for `{}` authentication)", auth.kind),
            );
            return None;
        };
        let value = binds.resolve(text, &join(path, key), errors, expanded)?;
        secrets.push(Secret::new(value.clone()));
        Some(value)
    };
    let mut settings = Mapping::new();
    settings.insert("type".into(), "static".into());
    match auth.kind.as_str() {
        "bearer" | "apikey" => {
            settings.insert(
                "value".into(),
                resolve(&auth.value, "value", errors)?.into(),
            );
        }
        "basic" => {
            let username = resolve(&auth.username, "username", errors);
            let password = resolve(&auth.password, "password", errors);
            let mut basic = Mapping::new();
            basic.insert("username".into(), username?.into());
            basic.insert("password".into(), password?.into());
            settings.insert("basic".into(), Value::Mapping(basic));
        }
        other => {
            errors.push(
                join(path, "type"),
                format!("`{other}` authentication is not served (bearer, basic, apikey are); put a provider behind it with the import's `providers`"),
            );
            return None;
        }
    }
    imported.providers.push(ImportedProvider {
        path: path.to_owned(),
        name: name.to_owned(),
        value: Value::Mapping(settings),
        secrets,
    });
    Some(credential_shape(auth))
}

/// Finds `namespace.operation` among the consumed APIs.
fn called<'c>(
    call: &str,
    capability: &'c Capability,
) -> Option<(&'c Consumes, &'c ConsumedResource, &'c ConsumedOperation)> {
    let (namespace, operation) = call.split_once('.')?;
    let consumes = capability
        .capability
        .consumes
        .iter()
        .find(|c| c.namespace == namespace)?;
    consumes.resources.iter().find_map(|resource| {
        resource
            .operations
            .iter()
            .find(|op| op.name == operation)
            .map(|op| (consumes, resource, op))
    })
}

/// Only mappings that pass an argument on as it is (`body: rest.body`) can be served.
fn check_with(
    with: &BTreeMap<String, String>,
    source: &str,
    path: &str,
    errors: &mut Errors,
) -> bool {
    let mut ok = true;
    for (key, value) in with {
        if value != &format!("{source}.{key}") {
            errors.push(
                join(path, &format!("with.{key}")),
                format!(
                    "`{value}`: only `{source}.{key}` (the argument passed on unchanged) is served"
                ),
            );
            ok = false;
        }
    }
    ok
}

fn rest_routes(
    exposes: &Exposes,
    path: &str,
    capability: &Capability,
    upstreams: &[Upstream],
    served: &mut Vec<(String, String, String)>,
    imported: &mut Imported,
    errors: &mut Errors,
) {
    for (index, resource) in exposes.resources.iter().enumerate() {
        let at = join(path, &format!("resources[{index}]"));
        let mut target: Option<(&Consumes, &ConsumedResource)> = None;
        let mut ok = true;
        for (op_index, operation) in resource.operations.iter().enumerate() {
            let op_path = join(&at, &format!("operations[{op_index}]"));
            ok &= check_with(&operation.with, "rest", &op_path, errors);
            let Some((consumes, consumed, consumed_op)) = called(&operation.call, capability)
            else {
                errors.push(
                    join(&op_path, "call"),
                    format!("`{}` is no consumed operation", operation.call),
                );
                ok = false;
                continue;
            };
            if !consumed_op.method.eq_ignore_ascii_case(&operation.method) {
                errors.push(
                    join(&op_path, "method"),
                    format!(
                        "{} calls a {} operation: a route forwards the method it gets",
                        operation.method, consumed_op.method
                    ),
                );
                ok = false;
            }
            match target {
                None => target = Some((consumes, consumed)),
                Some((c, r)) if c.namespace == consumes.namespace && r.path == consumed.path => {}
                Some(_) => {
                    errors.push(
                        join(&op_path, "call"),
                        "a REST resource is one route: its operations must call one consumed resource",
                    );
                    ok = false;
                }
            }
        }
        let Some((consumes, consumed)) = target else {
            if ok {
                errors.push(&at, "has no operations");
            }
            continue;
        };
        let Some(upstream) = upstreams.iter().find(|u| u.namespace == consumes.namespace) else {
            continue;
        };
        if !ok {
            continue;
        }
        let name = format!("{}.{}", exposes.namespace, resource.name);
        let (strip, upstream_path) = match consumed.path.strip_suffix(&resource.path) {
            Some(front)
                if front.is_empty() || front.ends_with('/') || resource.path.starts_with('/') =>
            {
                (false, front.trim_end_matches('/').to_owned())
            }
            _ => (true, consumed.path.clone()),
        };
        let mut route = Mapping::new();
        route.insert("name".into(), name.clone().into());
        let mut matcher = Mapping::new();
        matcher.insert("path_prefix".into(), resource.path.clone().into());
        route.insert("match".into(), Value::Mapping(matcher));
        route.insert("strip_prefix".into(), strip.into());
        let mut upstream_map = Mapping::new();
        upstream_map.insert(
            "url".into(),
            format!("{}{}", upstream.base_uri, upstream_path).into(),
        );
        route.insert("upstream".into(), Value::Mapping(upstream_map));
        if let Some(credential) = &upstream.credential {
            route.insert("credential".into(), Value::Mapping(credential.clone()));
        }
        imported.routes.push((at, Value::Mapping(route)));
        served.push((consumes.namespace.clone(), consumed.path.clone(), name));
    }
}

fn mcp_tool(
    tool: &McpTool,
    path: &str,
    capability: &Capability,
    upstreams: &[Upstream],
    served: &[(String, String, String)],
    errors: &mut Errors,
) -> Option<RawTool> {
    let with_ok = check_with(&tool.with, "tools", path, errors);
    let Some((consumes, consumed, operation)) = called(&tool.call, capability) else {
        errors.push(
            join(path, "call"),
            format!("`{}` is no consumed operation", tool.call),
        );
        return None;
    };
    let upstream = upstreams
        .iter()
        .find(|u| u.namespace == consumes.namespace)?;
    let Some((_, _, route)) = served.iter().find(|(namespace, resource, _)| {
        namespace == &consumes.namespace && resource == &consumed.path
    }) else {
        errors.push(
            join(path, "call"),
            format!(
                "tollgate sends a tool call through a route, and no rest exposure serves {} (add one)",
                consumed.path
            ),
        );
        return None;
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut query = Vec::new();
    let mut body = None;
    for (index, parameter) in operation.input_parameters.iter().enumerate() {
        let at = join(
            path,
            &format!("call({}).inputParameters[{index}]", tool.call),
        );
        let mut schema = Map::new();
        schema.insert(
            "type".into(),
            json!(parameter.kind.as_deref().unwrap_or("string")),
        );
        if let Some(description) = &parameter.description {
            schema.insert("description".into(), json!(description));
        }
        match parameter.location.as_str() {
            "body" => body = Some(parameter.name.clone()),
            "query" => query.push(parameter.name.clone()),
            "path" => {}
            other => {
                errors.push(
                    at,
                    format!("parameters in `{other}` are not served (path, query, body are)"),
                );
                return None;
            }
        }
        if parameter.required || parameter.location == "path" {
            required.push(json!(parameter.name));
        }
        properties.insert(parameter.name.clone(), Json::Object(schema));
    }
    if !with_ok {
        return None;
    }
    let mut input_schema = Map::new();
    input_schema.insert("type".into(), json!("object"));
    input_schema.insert("properties".into(), Json::Object(properties));
    if !required.is_empty() {
        input_schema.insert("required".into(), Json::Array(required));
    }
    Some(RawTool {
        name: tool.name.clone(),
        title: None,
        description: tool
            .description
            .clone()
            .or_else(|| operation.description.clone()),
        route: route.clone(),
        method: Some(operation.method.clone()),
        path: format!("{}{}", upstream.base_path, consumed.path),
        query: Some(query),
        body,
        input_schema: Some(Json::Object(input_schema)),
        hints: Some(RawHints {
            read_only: tool.hints.read_only,
            destructive: tool.hints.destructive,
            idempotent: tool.hints.idempotent,
            open_world: tool.hints.open_world,
        }),
    })
}
