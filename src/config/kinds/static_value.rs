//! `type: static`: a fixed secret (an API key, or Basic credentials).

use base64::Engine;

use super::require_secret;
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use crate::secret::Secret;

pub(crate) fn validate(raw: RawStatic, path: &str, errors: &mut Errors) -> Option<StaticSettings> {
    let value = match (raw.value, raw.basic) {
        (Some(value), None) => require_secret(Some(value), &join(path, "value"), "", errors),
        (None, Some(basic)) => {
            if basic.username.contains(':') {
                errors.push(
                    join(path, "basic.username"),
                    "must not contain `:` (RFC 7617)",
                );
                return None;
            }
            let pair = format!("{}:{}", basic.username, basic.password.expose());
            Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(pair),
            ))
        }
        (None, None) => {
            errors.push(
                path,
                "needs `value` (e.g. an API key) or `basic` (username, password)",
            );
            None
        }
        (Some(_), Some(_)) => {
            errors.push(path, "give either `value` or `basic`, not both");
            None
        }
    }?;
    if value
        .expose()
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        errors.push(
            join(path, "value"),
            "must not contain CR, LF or NUL (header injection)",
        );
        return None;
    }
    Some(StaticSettings { value })
}
