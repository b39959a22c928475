//! `mcp.import: - openapi: { file, route, include }`: a route's OpenAPI 3 operations as
//! tools.
//!
//! Each operation (optionally only those whose `operationId` is in `include`) becomes a
//! tool named after its `operationId` (with `name_prefix` in front), described by its
//! summary and description. Its path is the first server URL's path followed by the
//! operation's path, which is the path the route's upstream receives; path parameters are
//! placeholders, query parameters query arguments, and a JSON request body the `body`
//! argument, each with its schema (local `$ref`s inlined). Header parameters are left out:
//! the route injects the credential header, and tools send no others. Hints follow the
//! method: GET and HEAD read only, PUT and DELETE idempotent, DELETE destructive.

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use super::{read_import, Imported};
use crate::config::error::{join, Errors};
use crate::config::raw::{RawHints, RawOpenApiImport, RawTool};

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
/// How deep `$ref`s are followed; deeper (or cyclic) schemas are left open (`{}`).
const MAX_REF_DEPTH: usize = 12;

pub(crate) fn import(
    raw: RawOpenApiImport,
    path: &str,
    base_dir: &Path,
    imported: &mut Imported,
    errors: &mut Errors,
) {
    let label = format!("{path}({})", raw.file);
    let Some(document) = read_import(&raw.file, base_dir, &join(path, "file"), errors) else {
        return;
    };
    let document: Json = match serde_json::to_value(&document) {
        Ok(document) => document,
        Err(error) => {
            errors.push(&label, format!("cannot be read as JSON data: {error}"));
            return;
        }
    };
    let version = document.get("openapi").and_then(Json::as_str).unwrap_or("");
    if !version.starts_with("3.") {
        errors.push(
            join(&label, "openapi"),
            "an OpenAPI 3 document is needed (`openapi: 3.x`)",
        );
        return;
    }
    let server_path = document
        .pointer("/servers/0/url")
        .and_then(Json::as_str)
        .map(server_path)
        .unwrap_or_default();
    let Some(paths) = document.get("paths").and_then(Json::as_object) else {
        errors.push(join(&label, "paths"), "missing");
        return;
    };
    let include = raw.include.as_ref();
    let mut found = Vec::new();
    for (op_path, item) in paths {
        let shared_parameters = item
            .get("parameters")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let Some(id) = operation.get("operationId").and_then(Json::as_str) else {
                continue;
            };
            if include.is_some_and(|include| !include.iter().any(|wanted| wanted == id)) {
                continue;
            }
            found.push(id.to_owned());
            let at = format!("{label}.paths.{op_path}.{method}");
            let mut parameters = shared_parameters.clone();
            parameters.extend(
                operation
                    .get("parameters")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            if let Some(tool) = tool(
                &raw,
                &document,
                &server_path,
                op_path,
                method,
                operation,
                &parameters,
                &at,
                errors,
            ) {
                imported.tools.push((at, tool));
            }
        }
    }
    for (index, wanted) in include.into_iter().flatten().enumerate() {
        if !found.contains(wanted) {
            errors.push(
                join(path, &format!("include[{index}]")),
                format!("no operation has the operationId `{wanted}`"),
            );
        }
    }
}

/// The path of a server URL (`https://host/api/v1`, `//host/api/v1` or `/api/v1`), without
/// a trailing `/`.
fn server_path(url: &str) -> String {
    let rest = match url.split_once("//") {
        Some((_, after)) => after.find('/').map_or("", |slash| &after[slash..]),
        None => url,
    };
    rest.trim_end_matches('/').to_owned()
}

#[allow(clippy::too_many_arguments)]
fn tool(
    raw: &RawOpenApiImport,
    document: &Json,
    server_path: &str,
    op_path: &str,
    method: &str,
    operation: &Json,
    parameters: &[Json],
    at: &str,
    errors: &mut Errors,
) -> Option<RawTool> {
    let id = operation.get("operationId").and_then(Json::as_str)?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut query = Vec::new();
    for parameter in parameters {
        let parameter = resolve(document, parameter, 0);
        let (Some(name), Some(location)) = (
            parameter.get("name").and_then(Json::as_str),
            parameter.get("in").and_then(Json::as_str),
        ) else {
            continue;
        };
        match location {
            "path" => required.push(json!(name)),
            "query" => {
                query.push(name.to_owned());
                if parameter.get("required").and_then(Json::as_bool) == Some(true) {
                    required.push(json!(name));
                }
            }
            // The route injects its credential; tools send no caller headers or cookies.
            _ => continue,
        }
        let mut schema = parameter
            .get("schema")
            .map(|schema| inline(document, schema, 0))
            .and_then(|schema| schema.as_object().cloned())
            .unwrap_or_default();
        if let Some(description) = parameter.get("description").and_then(Json::as_str) {
            schema.insert("description".into(), json!(description));
        }
        properties.insert(name.to_owned(), Json::Object(schema));
    }
    let mut body = None;
    if let Some(request_body) = operation
        .get("requestBody")
        .map(|b| resolve(document, b, 0))
    {
        let Some(schema) = request_body.pointer("/content/application~1json/schema") else {
            errors.push(
                join(at, "requestBody"),
                "only an application/json request body can be sent by a tool",
            );
            return None;
        };
        let mut schema = inline(document, schema, 0);
        if let (Some(object), Some(description)) = (
            schema.as_object_mut(),
            request_body.get("description").and_then(Json::as_str),
        ) {
            object.entry("description").or_insert(json!(description));
        }
        if properties.contains_key("body") {
            errors.push(
                join(at, "requestBody"),
                "a parameter is already named `body`",
            );
            return None;
        }
        properties.insert("body".into(), schema);
        if request_body.get("required").and_then(Json::as_bool) == Some(true) {
            required.push(json!("body"));
        }
        body = Some("body".to_owned());
    }
    let mut input_schema = Map::new();
    input_schema.insert("type".into(), json!("object"));
    input_schema.insert("properties".into(), Json::Object(properties));
    if !required.is_empty() {
        input_schema.insert("required".into(), Json::Array(required));
    }
    let text = |key: &str| operation.get(key).and_then(Json::as_str).map(str::trim);
    let description = match (text("summary"), text("description")) {
        (Some(summary), Some(description)) => Some(format!("{summary}. {description}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    };
    let upper = method.to_ascii_uppercase();
    Some(RawTool {
        name: format!("{}{id}", raw.name_prefix.as_deref().unwrap_or("")),
        title: text("summary").map(str::to_owned),
        description,
        route: raw.route.clone(),
        method: Some(upper.clone()),
        path: format!("{server_path}{op_path}"),
        query: Some(query),
        body,
        input_schema: Some(Json::Object(input_schema)),
        hints: Some(RawHints {
            read_only: Some(matches!(upper.as_str(), "GET" | "HEAD" | "OPTIONS")),
            destructive: Some(upper == "DELETE"),
            idempotent: Some(matches!(
                upper.as_str(),
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
            )),
            open_world: None,
        }),
    })
}

/// A `$ref` object replaced by what it points at (one level).
fn resolve<'d>(document: &'d Json, value: &'d Json, depth: usize) -> &'d Json {
    match value.get("$ref").and_then(Json::as_str) {
        Some(reference) if depth < MAX_REF_DEPTH => reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .map_or(value, |target| resolve(document, target, depth + 1)),
        _ => value,
    }
}

/// `schema` with every local `$ref` inlined; a cycle or a deep nest ends in `{}`.
fn inline(document: &Json, schema: &Json, depth: usize) -> Json {
    if depth > MAX_REF_DEPTH {
        return json!({});
    }
    match schema {
        Json::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Json::as_str) {
                return reference
                    .strip_prefix('#')
                    .and_then(|pointer| document.pointer(pointer))
                    .map_or(json!({}), |target| inline(document, target, depth + 1));
            }
            Json::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), inline(document, value, depth + 1)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| inline(document, item, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}
