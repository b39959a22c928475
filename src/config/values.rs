//! Checks of single values that every section shares: URLs, TLS settings, secrets, header
//! names, and pairs of keys that exclude each other.

use std::path::PathBuf;

use http::HeaderName;
use url::Url;

use super::error::{join, Errors};
use super::model::TlsSettings;
use super::raw::RawTls;
use crate::secret::Secret;

pub(crate) fn http_url(text: &str, path: &str, errors: &mut Errors) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                errors.push(path, "must not carry credentials; use the provider's keys");
                return None;
            }
            Some(url)
        }
        Ok(_) => {
            errors.push(
                path,
                format!("`{text}` is not an http:// or https:// URL with a host"),
            );
            None
        }
        Err(error) => {
            errors.push(path, format!("`{text}` is not a valid URL: {error}"));
            None
        }
    }
}

pub(crate) fn tls_settings(raw: RawTls, path: &str, errors: &mut Errors) -> TlsSettings {
    let ca_file = raw.ca_file.map(PathBuf::from);
    if let Some(file) = &ca_file {
        if let Err(message) = crate::tls::read_ca_file(file) {
            errors.push(join(path, "ca_file"), message);
        }
    }
    TlsSettings {
        ca_file,
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
    }
}

pub(crate) fn require_secret(
    secret: Option<Secret>,
    path: &str,
    what: &str,
    errors: &mut Errors,
) -> Option<Secret> {
    match secret {
        Some(secret) if !secret.is_empty() => Some(secret),
        Some(_) => {
            errors.push(path, "is empty");
            None
        }
        None => {
            errors.push(path, format!("missing ({what})"));
            None
        }
    }
}

/// A header name, or an error at `path` quoting `text`.
pub(crate) fn header_name(text: &str, path: &str, errors: &mut Errors) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.push(path, format!("`{text}` is not a valid header name"));
            None
        }
    }
}

/// One of two keys that exclude each other.
pub(crate) enum OneOf<A, B> {
    First(A),
    Second(B),
}

/// Exactly one of two keys that exclude each other; with `neither` or `both` given, that
/// message is the error at `path`.
pub(crate) fn one_of<A, B>(
    first: Option<A>,
    second: Option<B>,
    path: &str,
    neither: &str,
    both: &str,
    errors: &mut Errors,
) -> Option<OneOf<A, B>> {
    match (first, second) {
        (Some(first), None) => Some(OneOf::First(first)),
        (None, Some(second)) => Some(OneOf::Second(second)),
        (None, None) => {
            errors.push(path, neither);
            None
        }
        (Some(_), Some(_)) => {
            errors.push(path, both);
            None
        }
    }
}
