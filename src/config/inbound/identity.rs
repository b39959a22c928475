//! `identity_headers:`: the headers set for the upstream, each read from a JWT claim or a
//! `/me` field.

use std::collections::BTreeMap;

use crate::config::error::{join, Errors};
use crate::config::model::IdentityHeaderSetting;
use crate::config::values::header_name;

/// Headers that frame the message or the connection; an identity header must not be one.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "cookie",
];

pub(super) fn validate(
    raw: BTreeMap<String, String>,
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<IdentityHeaderSetting>> {
    let mut headers: Vec<IdentityHeaderSetting> = Vec::new();
    let mut ok = true;
    for (name, field) in raw {
        let at = join(path, &name);
        let Some(header) = header_name(&name, &at, errors) else {
            ok = false;
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            errors.push(&at, format!("`{name}` cannot be an identity header"));
            ok = false;
            continue;
        }
        if headers.iter().any(|h| h.header == header) {
            errors.push(&at, "the same header is listed twice (names ignore case)");
            ok = false;
            continue;
        }
        if let Err(message) = field_reference(&field) {
            errors.push(&at, message);
            ok = false;
            continue;
        }
        headers.push(IdentityHeaderSetting { header, field });
    }
    ok.then_some(headers)
}

/// A top-level name (`sub`) or an RFC 6901 JSON pointer (`/profile/email`).
pub(super) fn field_reference(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the claim or field name is empty".to_owned());
    }
    if let Some(pointer) = text.strip_prefix('/') {
        let mut chars = pointer.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "`{text}` is not a JSON pointer (`~` must be followed by 0 or 1)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::inbound::tests::{assert_error, SECRET};

    #[test]
    fn identity_headers_are_checked() {
        let jwt = format!("jwt: {{ algorithms: [HS256], secret: '{SECRET}' }}\n");
        assert_error(
            "api_keys: { keys: ['0123456789abcdef'] }\nidentity_headers: { X-User: sub }",
            "routes[0].inbound.identity_headers: identity headers are read from JWT claims or from /me",
        );
        assert_error(
            "authorize: { url: 'http://e', action: a, resource: r, scope: s }\nidentity_headers: { X-User: /username }",
            "routes[0].inbound.identity_headers: identity headers are read from JWT claims or from /me",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ Host: sub }}"),
            "routes[0].inbound.identity_headers.Host: `Host` cannot be an identity header",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: sub, x-user: email }}"),
            "routes[0].inbound.identity_headers.x-user: the same header is listed twice",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: '/a~2b' }}"),
            "routes[0].inbound.identity_headers.X-User: `/a~2b` is not a JSON pointer",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ X-User: '' }}"),
            "routes[0].inbound.identity_headers.X-User: the claim or field name is empty",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ Authorization: sub }}"),
            "routes[0].inbound.identity_headers.authorization: is also where the caller's credential is read",
        );
    }
}
