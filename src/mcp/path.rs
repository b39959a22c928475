//! A tool call's request from its arguments: the path template filled in, the query
//! string, the JSON body. A placeholder's value is percent-encoded as one segment's data,
//! and the filled-in path must be canonical as it is, so an argument can never climb out
//! of the tool's route (`..`, `%2e%2e`, `/`, `\` are refused, not encoded into a new
//! segment).

use serde_json::{Map, Value as Json};

use crate::canonical::{canonical_path, escape_all, PathPolicy};
use crate::config::{PathTemplate, TemplatePart};

/// Why the arguments cannot make a request; the text is shown to the MCP caller (it names
/// arguments, never quotes their values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgumentError(pub String);

fn error(text: impl Into<String>) -> ArgumentError {
    ArgumentError(text.into())
}

/// The path with every placeholder replaced by its argument, percent-encoded.
pub fn expand(
    template: &PathTemplate,
    arguments: &Map<String, Json>,
    policy: &PathPolicy,
) -> Result<String, ArgumentError> {
    let mut path = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(text) => path.push_str(text),
            TemplatePart::Argument(name) => {
                let value = arguments.get(name).ok_or_else(|| {
                    error(format!(
                        "argument `{name}` is required (it is part of the path)"
                    ))
                })?;
                let text = scalar(value).ok_or_else(|| {
                    error(format!(
                        "argument `{name}` must be a string, number or boolean"
                    ))
                })?;
                if text.is_empty() {
                    return Err(error(format!("argument `{name}` must not be empty")));
                }
                if text.contains(['/', '\\']) {
                    return Err(error(format!(
                        "argument `{name}` must not contain `/` or `\\`: it is one path segment"
                    )));
                }
                if text.chars().any(char::is_control) {
                    return Err(error(format!(
                        "argument `{name}` must not contain control characters"
                    )));
                }
                path.push_str(&escape_all(&text));
            }
        }
    }
    // `.` and `..` are unreserved characters, so no encoding keeps a value of `..` from
    // being a dot segment (and `%2E` is decoded back to `.` by RFC 3986 normalisation).
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(error(
            "an argument makes a `.` or `..` path segment, which would leave the tool's route",
        ));
    }
    match canonical_path(path.as_bytes(), policy) {
        Ok(canonical) if canonical == path.as_str() => Ok(path),
        _ => Err(error(
            "the arguments do not make a canonical path inside the tool's route",
        )),
    }
}

/// `name=value` pairs of the query arguments present (arrays repeat the name).
pub fn query(
    names: &[String],
    arguments: &Map<String, Json>,
) -> Result<Option<String>, ArgumentError> {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for name in names {
        let Some(value) = arguments.get(name) else {
            continue;
        };
        let values: Vec<&Json> = match value {
            Json::Null => continue,
            Json::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            let text = scalar(value).ok_or_else(|| {
                error(format!(
                    "argument `{name}` must be a string, number or boolean (or a list of them)"
                ))
            })?;
            serializer.append_pair(name, &text);
            any = true;
        }
    }
    Ok(any.then(|| serializer.finish()))
}

/// Required arguments present, none unknown (a dropped argument would silently widen a
/// query the caller meant to narrow).
pub fn check(
    schema: &Map<String, Json>,
    arguments: &Map<String, Json>,
) -> Result<(), ArgumentError> {
    if let Some(required) = schema.get("required").and_then(Json::as_array) {
        for name in required.iter().filter_map(Json::as_str) {
            if !arguments.contains_key(name) {
                return Err(error(format!("argument `{name}` is required")));
            }
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Json::as_object) {
        let open = schema.get("additionalProperties").and_then(Json::as_bool) == Some(true);
        if !open {
            if let Some(unknown) = arguments
                .keys()
                .find(|name| !properties.contains_key(*name))
            {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                let unknown: String = unknown
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect();
                return Err(error(format!(
                    "unknown argument `{unknown}` (this tool takes: {})",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn scalar(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        Json::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EscapedSlashes, TemplatePart};
    use serde_json::json;

    fn template(parts: &[(&str, bool)]) -> PathTemplate {
        PathTemplate {
            parts: parts
                .iter()
                .map(|(text, argument)| {
                    if *argument {
                        TemplatePart::Argument((*text).to_owned())
                    } else {
                        TemplatePart::Literal((*text).to_owned())
                    }
                })
                .collect(),
        }
    }

    fn users() -> PathTemplate {
        template(&[("/api/users/", false), ("id", true), ("/sessions", false)])
    }

    fn args(value: Json) -> Map<String, Json> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn expand_id(id: Json) -> Result<String, ArgumentError> {
        expand(&users(), &args(json!({ "id": id })), &PathPolicy::default())
    }

    #[test]
    fn values_are_percent_encoded_into_their_segment() {
        assert_eq!(
            expand_id(json!("alice")).unwrap(),
            "/api/users/alice/sessions"
        );
        assert_eq!(expand_id(json!(42)).unwrap(), "/api/users/42/sessions");
        assert_eq!(
            expand_id(json!("a b?c#d&e=%")).unwrap(),
            "/api/users/a%20b%3Fc%23d%26e%3D%25/sessions"
        );
        assert_eq!(expand_id(json!("é")).unwrap(), "/api/users/%C3%A9/sessions");
        assert_eq!(expand_id(json!("..a")).unwrap(), "/api/users/..a/sessions");
    }

    #[test]
    fn no_value_climbs_out_of_its_segment() {
        for value in ["..", ".", "../admin", "a/../../b", "/etc", "a\\..\\b", "\\"] {
            let refused = expand_id(json!(value));
            assert!(refused.is_err(), "{value:?} gave {refused:?}");
        }
        // Escapes are data: `%2e%2e` is sent as `%252e%252e`, which no server reads as `..`.
        assert_eq!(
            expand_id(json!("%2e%2e")).unwrap(),
            "/api/users/%252e%252e/sessions"
        );
        assert_eq!(
            expand_id(json!("%2F..%2F")).unwrap(),
            "/api/users/%252F..%252F/sessions"
        );
    }

    #[test]
    fn a_value_completing_a_dot_segment_with_the_template_is_refused() {
        let dotted = template(&[("/files/", false), ("name", true), (".", false)]);
        let refused = expand(&dotted, &args(json!({"name": "."})), &PathPolicy::default());
        assert!(refused.is_err());
        let fine = expand(&dotted, &args(json!({"name": "x"})), &PathPolicy::default());
        assert_eq!(fine.unwrap(), "/files/x.");
        let policy = PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert!(expand(&dotted, &args(json!({"name": "."})), &policy).is_err());
    }

    #[test]
    fn missing_empty_and_structured_values_are_refused_by_name() {
        let missing = expand(&users(), &Map::new(), &PathPolicy::default()).unwrap_err();
        assert!(missing.0.contains("`id` is required"));
        assert!(expand_id(json!("")).unwrap_err().0.contains("empty"));
        assert!(expand_id(json!({"a": 1}))
            .unwrap_err()
            .0
            .contains("string, number"));
        assert!(expand_id(json!("a\nb")).unwrap_err().0.contains("control"));
    }

    #[test]
    fn query_arguments_are_form_encoded_and_lists_repeat() {
        let names = vec!["q".to_owned(), "tag".to_owned(), "page".to_owned()];
        let query = query(
            &names,
            &args(json!({"q": "a b&c", "tag": ["x", "y"], "page": 2, "other": "no"})),
        )
        .unwrap();
        assert_eq!(query.as_deref(), Some("q=a+b%26c&tag=x&tag=y&page=2"));
        assert_eq!(super::query(&names, &Map::new()).unwrap(), None);
        assert!(super::query(&names, &args(json!({"q": {"x": 1}}))).is_err());
    }

    #[test]
    fn required_and_unknown_arguments_are_checked_against_the_schema() {
        let schema = args(json!({
            "type": "object",
            "properties": {"id": {"type": "string"}, "q": {}},
            "required": ["id"]
        }));
        assert!(check(&schema, &args(json!({"id": "x"}))).is_ok());
        assert!(check(&schema, &args(json!({"q": "x"})))
            .unwrap_err()
            .0
            .contains("`id` is required"));
        assert!(check(&schema, &args(json!({"id": "x", "zz": 1})))
            .unwrap_err()
            .0
            .contains("unknown argument `zz`"));
    }
}
