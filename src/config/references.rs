//! `${env:NAME}` and `${file:/path}` references, expanded in every string value of the
//! YAML tree before it is typed, so any key may hold a secret reference.

use serde_yaml_ng::Value;

use super::error::{join, ConfigErrors, Errors};
use crate::secret::Secret;

/// Values shorter than this are not held back from error text: replacing every "1" or
/// "on" in a message would garble it, and no real secret is that short.
const MIN_REDACTED_LEN: usize = 4;

/// What each reference expanded to, so error messages can show the reference instead.
/// A reference may sit in any key, also one whose errors quote the value (a duration, an
/// address, a type mismatch), and its value may be a secret.
#[derive(Default)]
pub(crate) struct Expanded(Vec<Expansion>);

struct Expansion {
    /// Key path of the string that held the reference.
    path: String,
    value: String,
    reference: String,
}

impl Expanded {
    /// The values references expanded to at `path` or below it: the secrets a provider's
    /// error text must never echo, whatever key they sit in.
    pub(crate) fn values_under(&self, path: &str) -> Vec<Secret> {
        self.0
            .iter()
            .filter(|e| {
                e.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .map(|e| Secret::new(e.value.clone()))
            .collect()
    }

    /// Records a value that came from outside the file under another reference syntax
    /// (an import's `{{env.NAME}}` binds), so error text shows `reference` instead.
    pub(crate) fn record(&mut self, path: &str, value: &str, reference: &str) {
        self.0.push(Expansion {
            path: path.to_owned(),
            value: value.to_owned(),
            reference: reference.to_owned(),
        });
    }

    /// Every expanded value in `errors` replaced by the reference that produced it.
    pub(crate) fn redact(&self, mut errors: ConfigErrors) -> ConfigErrors {
        let mut pairs: Vec<(&String, &String)> = self
            .0
            .iter()
            .filter(|e| e.value.len() >= MIN_REDACTED_LEN)
            .map(|e| (&e.value, &e.reference))
            .collect();
        // The longest first, so a value that contains another is replaced whole.
        pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        for error in &mut errors.0 {
            for (value, reference) in &pairs {
                if error.message.contains(value.as_str()) {
                    error.message = error.message.replace(value.as_str(), reference.as_str());
                }
            }
        }
        errors
    }
}

pub(crate) fn expand_tree(
    value: &mut Value,
    path: &str,
    errors: &mut Errors,
    expanded: &mut Expanded,
) {
    match value {
        Value::String(text) => {
            if text.contains("${") {
                let mut found = Vec::new();
                match expand_recording(text, &mut found) {
                    Ok(result) => {
                        *text = result;
                        expanded
                            .0
                            .extend(found.into_iter().map(|(value, reference)| Expansion {
                                path: path.to_owned(),
                                value,
                                reference,
                            }));
                    }
                    Err(message) => errors.push(path, message),
                }
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_tree(item, &join(path, &format!("[{index}]")), errors, expanded);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key_name(key);
                expand_tree(item, &join(path, &key), errors, expanded);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, errors, expanded),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

pub(crate) fn key_name(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        _ => "<non-string key>".to_owned(),
    }
}

/// Replaces each `${env:NAME}` / `${file:PATH}` in `text`. The error names the reference,
/// never a value, so it is safe to print.
pub fn expand(text: &str) -> Result<String, String> {
    expand_recording(text, &mut Vec::new())
}

/// [`expand`], also recording each (value, reference) pair.
fn expand_recording(text: &str, expanded: &mut Vec<(String, String)>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated reference: `${` without a closing `}`".to_owned());
        };
        let reference = &after[..end];
        let value = resolve(reference)?;
        out.push_str(&value);
        expanded.push((value, format!("${{{reference}}}")));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        if name.is_empty() {
            return Err("`${env:}` needs a variable name".to_owned());
        }
        return match std::env::var(name) {
            Ok(value) => Ok(value),
            Err(std::env::VarError::NotPresent) => Err(format!("env {name} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("env {name} is not valid UTF-8")),
        };
    }
    if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err("`${file:}` needs a path".to_owned());
        }
        return match std::fs::read_to_string(path) {
            // Secret mounts usually end with a newline that is not part of the secret.
            Ok(contents) => Ok(contents.trim_end_matches(['\n', '\r']).to_owned()),
            Err(error) => Err(format!("file {path} cannot be read: {error}")),
        };
    }
    Err(format!(
        "unknown reference `${{{reference}}}`: use ${{env:NAME}} or ${{file:/path}}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_and_file_references_inside_text() {
        std::env::set_var("TOLLGATE_TEST_REF", "abc");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = format!("x-${{env:TOLLGATE_TEST_REF}}-${{file:{}}}", file.display());
        assert_eq!(expand(&text).unwrap(), "x-abc-from-file");
    }

    #[test]
    fn missing_variable_names_it() {
        let error = expand("${env:TOLLGATE_SURELY_UNSET_VAR}").unwrap_err();
        assert_eq!(error, "env TOLLGATE_SURELY_UNSET_VAR is not set");
    }

    #[test]
    fn unknown_scheme_and_unterminated_are_errors() {
        assert!(expand("${vault:x}")
            .unwrap_err()
            .contains("unknown reference"));
        assert!(expand("${env:X").unwrap_err().contains("unterminated"));
    }
}
