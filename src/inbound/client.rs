//! The HTTP side of the inbound checks (JWKS, `/user/authorize`, `/me`), following
//! `providers/http.rs`: a pooled reqwest client (rustls) with a whole-request timeout, TLS
//! settings, redirects off, capped replies, and error texts without URLs or headers.

use std::time::Duration;

use reqwest::Response;

use crate::config::TlsSettings;

pub(crate) fn build(timeout: Duration, tls: &TlsSettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &tls.ca_file {
        for der in crate::tls::read_ca_file(path)? {
            let cert = reqwest::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if tls.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Why a call failed, for details and logs: the cause below reqwest's error (refused, DNS,
/// TLS), never the URL or a header.
pub(crate) fn transport_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}s", timeout.as_secs_f32());
    }
    let kind = if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

/// The whole body, or an error once it grows past `limit` bytes (read chunk by chunk, so an
/// endless reply never sits in memory).
pub(crate) async fn body(
    mut response: Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(format!("reply larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("reply larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) if error.is_timeout() => {
                return Err(format!("timed out after {}s", timeout.as_secs_f32()))
            }
            Err(_) => return Err("reply body was cut off".to_owned()),
        }
    }
}
