//! `identity_headers:`: the headers set for the upstream, each read from a JWT claim, a
//! `/me` field, or the client certificate (`client_cert.subject`, `client_cert.sans`).

use std::collections::BTreeMap;

use crate::config::error::{join, Errors};
use crate::config::model::{IdentityHeaderSetting, IdentitySource};
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
        let source = match source(field) {
            Ok(source) => source,
            Err(message) => {
                errors.push(&at, message);
                ok = false;
                continue;
            }
        };
        headers.push(IdentityHeaderSetting { header, source });
    }
    ok.then_some(headers)
}

/// The prefix of the client certificate's fields. A JWT claim of that very name is still
/// reachable as a JSON pointer (`/client_cert.subject`).
const CLIENT_CERT_PREFIX: &str = "client_cert.";

fn source(text: String) -> Result<IdentitySource, String> {
    match text.strip_prefix(CLIENT_CERT_PREFIX) {
        Some("subject") => Ok(IdentitySource::ClientCertSubject),
        Some("sans") => Ok(IdentitySource::ClientCertSans),
        Some(_) => Err(format!(
            "`{text}` is not a client certificate field (client_cert.subject, client_cert.sans)"
        )),
        None => field_reference(&text).map(|()| IdentitySource::Field(text)),
    }
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
    use crate::config::inbound::{from_yaml, IdentitySource};

    #[test]
    fn client_certificate_fields_are_identity_sources() {
        let settings = from_yaml(
            "client_cert: {}\nidentity_headers: { X-Client-Subject: client_cert.subject, X-Client-Sans: client_cert.sans }",
        )
        .unwrap();
        assert!(settings.client_cert);
        let sources: Vec<_> = settings
            .identity_headers
            .iter()
            .map(|h| (h.header.as_str(), h.source.clone()))
            .collect();
        assert_eq!(
            sources,
            [
                ("x-client-sans", IdentitySource::ClientCertSans),
                ("x-client-subject", IdentitySource::ClientCertSubject),
            ]
        );
        let jwt = format!(
            "jwt: {{ algorithms: [HS256], secret: '{SECRET}' }}\nidentity_headers: {{ X-Odd: /client_cert.subject }}"
        );
        let settings = from_yaml(&jwt).unwrap();
        assert_eq!(
            settings.identity_headers[0].source,
            IdentitySource::Field("/client_cert.subject".into())
        );
    }

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
            &format!("{jwt}identity_headers: {{ X-Client: client_cert.subject }}"),
            "routes[0].inbound.identity_headers.x-client: reads the client certificate: configure client_cert",
        );
        assert_error(
            "client_cert: {}\nidentity_headers: { X-Client: client_cert.issuer }",
            "routes[0].inbound.identity_headers.X-Client: `client_cert.issuer` is not a client certificate field",
        );
        assert_error(
            "client_cert: {}\nidentity_headers: { X-User: sub }",
            "routes[0].inbound.identity_headers: identity headers are read from JWT claims or from /me",
        );
        assert_error(
            "client_cert: { required: true }",
            "routes[0].inbound.client_cert.required: unknown field `required`",
        );
        assert_error(
            &format!("{jwt}identity_headers: {{ Authorization: sub }}"),
            "routes[0].inbound.identity_headers.authorization: is also where the caller's credential is read",
        );
    }
}
