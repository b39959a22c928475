//! Loopback stand-ins for the auth providers and for an upstream, used by `tollgate demo`
//! and by tollgate's tests. Test scaffolding: none of them is meant to face a network, and
//! this crate does not depend on tollgate (tollgate depends on it).
//!
//! Every stand-in is a [`StandIn`]: a server on a tokio task of the current runtime and the
//! state its handlers share (counters, issued tokens, switches). What every stand-in offers
//! (its address, stopping it, and for the providers going down, slow, token lifetimes and
//! the book of issued tokens) is written once in [`handle`]; each stand-in's module adds
//! its own methods in `impl StandIn<ItsState>`. [`inbound`] is the kit of tollgate's
//! inbound tests: fixed keys, JWT minting and a JWKS server.

pub mod bagid;
pub mod bigbucks;
pub mod bigid;
pub mod controls;
pub mod echo;
pub mod fortanix;
pub mod handle;
pub mod inbound;
pub mod jwt;
pub mod oauth2;
#[cfg(feature = "pki")]
pub mod pki;
pub mod redis;
pub mod resource;
pub mod scripted;
mod server;
pub mod stack;
#[cfg(test)]
mod testing;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub use handle::{Provider, StandIn, Switched};
pub use server::{serve, RunningServer};

/// `127.0.0.1:0`: any free loopback port.
pub(crate) fn any_loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Lock a mutex, ignoring poisoning: stand-in state stays usable after a panicking test.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A response with the given status, body and `Content-Type`.
pub(crate) fn typed_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response with the given status and body.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    typed_response(status, "application/json", body.to_string())
}

/// The value of header `name` as text (lossy UTF-8), as a stand-in records it.
pub(crate) fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Every header as (lower-case name, lossy UTF-8 value), in the order received.
pub(crate) fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The first value of header `name` (any case) in a recorded header list.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `base64(id ":" secret)`, the value of an HTTP Basic header, as (id, secret).
pub(crate) fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `value` without the auth scheme `scheme` (any case), or None for another scheme.
pub(crate) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(rest.trim_start())
}
