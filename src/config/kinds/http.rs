//! `type: http`: a declarative login for any JSON API.

use http::{HeaderName, Method};

use super::http_url;
use crate::config::error::{join, Errors};
use crate::config::model::*;
use crate::config::raw::*;
use crate::secret::Secret;

/// What a refresh request template refers to the held refresh value by.
pub const REFRESH_PLACEHOLDER: &str = "{refresh_token}";

pub(crate) fn validate(
    raw: RawHttpLogin,
    path: &str,
    errors: &mut Errors,
) -> Option<HttpLoginSettings> {
    let login = request(raw.login, &join(path, "login"), errors);
    pointer(&raw.token_pointer, &join(path, "token_pointer"), errors);
    let expiry = raw.expiry.map(|expiry| {
        pointer(&expiry.pointer, &join(path, "expiry.pointer"), errors);
        ExpiryField {
            pointer: expiry.pointer,
            format: match expiry.format.unwrap_or(RawExpiryFormat::Seconds) {
                RawExpiryFormat::Seconds => ExpiryFormat::Seconds,
                RawExpiryFormat::Epoch => ExpiryFormat::Epoch,
                RawExpiryFormat::Rfc3339 => ExpiryFormat::Rfc3339,
            },
        }
    });
    let refresh = match (raw.refresh_request, raw.refresh_token_pointer) {
        (Some(template), Some(token_pointer)) => {
            pointer(&token_pointer, &join(path, "refresh_token_pointer"), errors);
            request(template, &join(path, "refresh_request"), errors).map(|request| HttpRefresh {
                request,
                refresh_token_pointer: token_pointer,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            errors.push(
                join(path, "refresh_token_pointer"),
                "missing (needed with refresh_request: where the refresh value is in the login reply)",
            );
            None
        }
        (None, Some(_)) => {
            errors.push(
                join(path, "refresh_request"),
                "missing (needed with refresh_token_pointer)",
            );
            None
        }
    };
    Some(HttpLoginSettings {
        login: login?,
        token_pointer: raw.token_pointer,
        expiry,
        refresh,
    })
}

/// RFC 6901: empty (the whole document) or `/`-separated.
fn pointer(text: &str, path: &str, errors: &mut Errors) {
    if !text.is_empty() && !text.starts_with('/') {
        errors.push(
            path,
            "a JSON pointer is empty or starts with `/` (RFC 6901), like /auth/token",
        );
    }
}

fn request(raw: RawHttpRequest, path: &str, errors: &mut Errors) -> Option<HttpRequestTemplate> {
    let method_text = raw.method.unwrap_or_else(|| "POST".to_owned());
    let method = match Method::from_bytes(method_text.to_ascii_uppercase().as_bytes()) {
        Ok(method) => Some(method),
        Err(_) => {
            errors.push(
                join(path, "method"),
                format!("`{method_text}` is not an HTTP method"),
            );
            None
        }
    };
    // The placeholder is not a valid URL part yet; check the URL with it filled in.
    let url_check = raw.url.replace(REFRESH_PLACEHOLDER, "x");
    let url = http_url(&url_check, &join(path, "url"), errors).map(|_| Secret::new(raw.url));
    let mut headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let header_path = join(&join(path, "headers"), &name);
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(header_path, "is not a valid header name");
            continue;
        };
        if value
            .expose()
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            errors.push(
                header_path,
                "must not contain CR, LF or NUL (header injection)",
            );
            continue;
        }
        headers.push((header, value));
    }
    let body = match (raw.json, raw.form, raw.body) {
        (None, None, None) => None,
        (Some(json), None, None) => match serde_json::to_string(&json) {
            Ok(text) => Some(HttpBody::Json(Secret::new(text))),
            Err(error) => {
                errors.push(
                    join(path, "json"),
                    format!("cannot be sent as JSON: {error}"),
                );
                None
            }
        },
        (None, Some(form), None) => Some(HttpBody::Form(form.into_iter().collect())),
        (None, None, Some(text)) => Some(HttpBody::Raw {
            content_type: raw
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".to_owned()),
            text,
        }),
        _ => {
            errors.push(path, "give at most one of json, form and body");
            None
        }
    };
    if raw.content_type.is_some() && !matches!(body, Some(HttpBody::Raw { .. })) {
        errors.push(join(path, "content_type"), "only applies to a raw `body`");
    }
    Some(HttpRequestTemplate {
        method: method?,
        url: url?,
        headers,
        body,
    })
}
