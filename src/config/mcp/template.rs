//! Parsing of a tool's path template: literal text and `{argument}` placeholders.

use crate::config::model::{PathTemplate, TemplatePart};

/// The template in `text`, or why it is not one.
pub(crate) fn parse(text: &str) -> Result<PathTemplate, String> {
    if !text.starts_with('/') {
        return Err("must start with `/`".to_owned());
    }
    if text.contains(['?', '#']) {
        return Err("must not hold `?` or `#`: list query arguments in `query`".to_owned());
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a `}` without its `{`".to_owned());
        }
        if open > 0 {
            parts.push(TemplatePart::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a `{` without its `}`".to_owned());
        };
        let name = &after[..close];
        if !valid_argument_name(name) {
            return Err(format!(
                "placeholder `{{{name}}}`: argument names use letters, digits, `_` and `-`"
            ));
        }
        if matches!(parts.last(), Some(TemplatePart::Argument(_))) {
            return Err(
                "two placeholders side by side cannot be told apart: put text between them"
                    .to_owned(),
            );
        }
        parts.push(TemplatePart::Argument(name.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    let template = PathTemplate { parts };
    // The literal text must already be canonical: with every placeholder standing for a
    // plain value, the path must come out of canonicalisation unchanged.
    let sample: String = template
        .parts
        .iter()
        .map(|part| match part {
            TemplatePart::Literal(text) => text.as_str(),
            TemplatePart::Argument(_) => "a",
        })
        .collect();
    let policy = crate::canonical::PathPolicy::default();
    match crate::canonical::canonical_path(sample.as_bytes(), &policy) {
        Ok(canonical) if canonical == sample.as_str() => Ok(template),
        Ok(canonical) => Err(format!(
            "is not a canonical path (`{canonical}` with placeholders as plain values): write it without `.`/`..` segments, `//`, or escapes of plain characters"
        )),
        Err(refusal) => Err(refusal.detail().to_owned()),
    }
}

pub(crate) fn valid_argument_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The template with `prefix` (literal text at its start) removed, or `None` when it does
/// not start with it.
pub(crate) fn strip_literal_prefix(template: &PathTemplate, prefix: &str) -> Option<PathTemplate> {
    if prefix.is_empty() {
        return Some(template.clone());
    }
    let start = template.literal_start();
    let rest = start.strip_prefix(prefix)?;
    let mut parts = Vec::with_capacity(template.parts.len());
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    parts.extend(template.parts.iter().skip(1).cloned());
    Some(PathTemplate { parts })
}

/// `prefix` put before the template's text.
pub(crate) fn with_literal_prefix(template: &PathTemplate, prefix: &str) -> PathTemplate {
    let mut parts = template.parts.clone();
    match parts.first_mut() {
        Some(TemplatePart::Literal(text)) => text.insert_str(0, prefix),
        _ if !prefix.is_empty() => parts.insert(0, TemplatePart::Literal(prefix.to_owned())),
        _ => {}
    }
    if parts.is_empty() {
        parts.push(TemplatePart::Literal("/".to_owned()));
    }
    PathTemplate { parts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_literals() {
        let template = parse("/users/{user_id}/sessions/{id}.json").unwrap();
        assert_eq!(
            template.parts,
            vec![
                TemplatePart::Literal("/users/".into()),
                TemplatePart::Argument("user_id".into()),
                TemplatePart::Literal("/sessions/".into()),
                TemplatePart::Argument("id".into()),
                TemplatePart::Literal(".json".into()),
            ]
        );
        assert_eq!(template.to_string(), "/users/{user_id}/sessions/{id}.json");
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, says) in [
            ("users", "start with `/`"),
            ("/a?b=1", "query"),
            ("/a/{x", "without its `}`"),
            ("/a/x}", "without its `{`"),
            ("/a/{}", "argument names"),
            ("/a/{a b}", "argument names"),
            ("/a/{x}{y}", "side by side"),
            ("/a/../b", "canonical"),
            ("/a//b", "canonical"),
            ("/a/%2e%2e/b", "canonical"),
            ("/a/%2F/b", "encoded slash"),
            ("/a\\b", "backslash"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn literal_prefixes_come_off_and_go_on() {
        let template = parse("/api/v1/users/{id}").unwrap();
        let rest = strip_literal_prefix(&template, "/api/v1").unwrap();
        assert_eq!(rest.to_string(), "/users/{id}");
        assert!(strip_literal_prefix(&template, "/other").is_none());
        assert_eq!(
            with_literal_prefix(&rest, "/engine").to_string(),
            "/engine/users/{id}"
        );
        let bare = parse("/{id}").unwrap();
        assert_eq!(with_literal_prefix(&bare, "/x").to_string(), "/x/{id}");
    }
}
