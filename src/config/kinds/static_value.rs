//! `type: static`: a fixed secret (an API key, or Basic credentials).

use base64::Engine;

use super::{one_of, require_secret, OneOf};
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use crate::secret::Secret;

pub(crate) fn validate(raw: RawStatic, path: &str, errors: &mut Errors) -> Option<StaticSettings> {
    let given = one_of(
        raw.value,
        raw.basic,
        path,
        "needs `value` (e.g. an API key) or `basic` (username, password)",
        "give either `value` or `basic`, not both",
        errors,
    );
    let value = match given? {
        OneOf::First(value) => require_secret(Some(value), &join(path, "value"), "", errors),
        OneOf::Second(basic) => {
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
