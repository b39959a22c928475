//! The answers tollgate gives itself: every reason it refuses or fails a request, mapped in
//! one place to its status, error kind, text and headers; JSON, or for a gRPC request a
//! gRPC status; never with a secret in them.
//!
//! A request whose `content-type` is `application/grpc` (or `application/grpc+proto`...)
//! gets what a gRPC client reads: HTTP 200 with `content-type: application/grpc` and
//! `grpc-status`/`grpc-message` in one header block that ends the stream (a
//! "Trailers-Only" response), the status mapped from the error kind
//! ([`ErrorKind::grpc_status`]).

use std::borrow::Cow;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::HttpTask;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use serde::Serialize;

use super::rewrite::X_REQUEST_ID;
use crate::inbound;
use crate::tokens::{CallerRefused, CredentialUnavailable};

/// Why the gateway answers a request itself.
#[derive(Debug)]
pub enum Refusal {
    /// The request has no canonical form, or could not be read.
    BadRequest(&'static str),
    NoRoute,
    PayloadTooLarge {
        limit: u64,
    },
    /// The caller did not pass the route's inbound checks.
    Caller(inbound::Refusal),
    CredentialUnavailable(CredentialUnavailable),
    /// The route's per-caller provider refused the caller's token.
    CallerRefused(CallerRefused),
    UpstreamUnreachable,
    UpstreamTimeout,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoRoute,
    CredentialUnavailable,
    UpstreamUnreachable,
    UpstreamTimeout,
    BadRequest,
    PayloadTooLarge,
    Unauthenticated,
    Forbidden,
    AuthorizationUnavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::NoRoute => 404,
            ErrorKind::CredentialUnavailable => 503,
            ErrorKind::UpstreamUnreachable => 502,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::BadRequest => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::AuthorizationUnavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The gRPC status code a gRPC caller gets instead of the HTTP status.
    pub fn grpc_status(self) -> u8 {
        match self {
            ErrorKind::BadRequest => 3,      // INVALID_ARGUMENT
            ErrorKind::UpstreamTimeout => 4, // DEADLINE_EXCEEDED
            ErrorKind::NoRoute => 5,         // NOT_FOUND
            ErrorKind::Forbidden => 7,       // PERMISSION_DENIED
            ErrorKind::PayloadTooLarge => 8, // RESOURCE_EXHAUSTED
            ErrorKind::Internal => 13,       // INTERNAL
            ErrorKind::CredentialUnavailable
            | ErrorKind::UpstreamUnreachable
            | ErrorKind::AuthorizationUnavailable => 14, // UNAVAILABLE
            ErrorKind::Unauthenticated => 16, // UNAUTHENTICATED
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::CredentialUnavailable => "credential_unavailable",
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::AuthorizationUnavailable => "authorization_unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl Refusal {
    /// What a failed proxy exchange means for the caller; `None` when the caller itself is
    /// gone (nothing can be sent).
    pub fn from_proxy_error(error: &Error) -> Option<Refusal> {
        Some(match (error.esource(), error.etype()) {
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Refusal::UpstreamTimeout,
            (ErrorSource::Upstream, _) => Refusal::UpstreamUnreachable,
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => return None,
            (ErrorSource::Downstream, _) => Refusal::BadRequest("the request could not be read"),
            _ => Refusal::Internal,
        })
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Refusal::BadRequest(_) => ErrorKind::BadRequest,
            Refusal::NoRoute => ErrorKind::NoRoute,
            Refusal::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Refusal::Caller(inbound::Refusal::Unauthenticated { .. }) => ErrorKind::Unauthenticated,
            Refusal::Caller(inbound::Refusal::Forbidden { .. }) => ErrorKind::Forbidden,
            Refusal::Caller(inbound::Refusal::Unavailable { .. }) => {
                ErrorKind::AuthorizationUnavailable
            }
            Refusal::CredentialUnavailable(_) => ErrorKind::CredentialUnavailable,
            Refusal::CallerRefused(_) => ErrorKind::Forbidden,
            Refusal::UpstreamUnreachable => ErrorKind::UpstreamUnreachable,
            Refusal::UpstreamTimeout => ErrorKind::UpstreamTimeout,
            Refusal::Internal => ErrorKind::Internal,
        }
    }

    fn detail(&self) -> Cow<'_, str> {
        match self {
            Refusal::BadRequest(detail) => Cow::Borrowed(detail),
            Refusal::NoRoute => Cow::Borrowed("no route matches this host and path"),
            Refusal::PayloadTooLarge { limit } => Cow::Owned(format!(
                "the request body is larger than this route's limit of {limit} bytes"
            )),
            Refusal::Caller(refusal) => Cow::Borrowed(refusal.detail()),
            Refusal::CredentialUnavailable(unavailable) => Cow::Owned(format!(
                "no valid credential from provider {}: {}",
                unavailable.provider, unavailable.reason
            )),
            Refusal::CallerRefused(refused) => Cow::Borrowed(&refused.detail),
            Refusal::UpstreamUnreachable => Cow::Borrowed("the upstream could not be reached"),
            Refusal::UpstreamTimeout => Cow::Borrowed("the upstream did not answer in time"),
            Refusal::Internal => Cow::Borrowed("the gateway failed to proxy the request"),
        }
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        let wait = match self {
            Refusal::CredentialUnavailable(unavailable) => unavailable.retry_after,
            Refusal::Caller(inbound::Refusal::Unavailable { retry_after, .. }) => *retry_after,
            _ => return None,
        };
        Some((wait.as_secs_f64().ceil() as u64).max(1))
    }

    fn www_authenticate(&self) -> Option<&str> {
        match self {
            Refusal::Caller(inbound::Refusal::Unauthenticated {
                www_authenticate, ..
            }) => Some(www_authenticate),
            _ => None,
        }
    }

    /// Whether the connection is closed after the answer: after a request that could not
    /// be read, whose body was not read, or that failed on its way upstream.
    fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Refusal::NoRoute
                | Refusal::Caller(_)
                | Refusal::CredentialUnavailable(_)
                | Refusal::CallerRefused(_)
        )
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    detail: &'a str,
}

/// Where the refusal happened: the route (if one matched) and whether an upstream attempt
/// was made.
pub struct Place<'a> {
    pub route: Option<&'a crate::routing::CompiledRoute>,
    pub upstream_tried: bool,
}

/// Writes the answer for `refusal` (JSON, or a gRPC status for a gRPC request); returns
/// the HTTP status and whether the connection may serve another request.
pub async fn send(
    session: &mut Session,
    refusal: &Refusal,
    place: Place<'_>,
    request_id: &http::HeaderValue,
) -> (u16, bool) {
    let kind = refusal.kind();
    let detail = refusal.detail();
    let body = ErrorBody {
        error: kind,
        route: place.route.map(|route| route.name.as_str()),
        // A caller refusal is about the caller, not the route's provider.
        provider: place
            .route
            .filter(|_| !matches!(refusal, Refusal::Caller(_)))
            .and_then(|route| route.credential.as_ref())
            .map(|credential| credential.provider_name.as_str()),
        detail: &detail,
    };
    // pingora does not reuse a downstream connection once a request failed past upstream
    // selection, and an unread body would be taken for the next request.
    let reuse = !refusal.closes_connection() && !place.upstream_tried && session.is_body_empty();
    let answer = Answer {
        refusal,
        body,
        reuse,
        request_id,
    };
    let written = if is_grpc(session) {
        answer.write_grpc(session).await.map(|()| GRPC_HTTP_STATUS)
    } else {
        answer.write_json(session).await.map(|()| kind.status())
    };
    match written {
        Ok(status) => (status, reuse),
        Err(error) => {
            tracing::debug!(%error, "could not send the error response");
            (kind.status(), reuse)
        }
    }
}

/// gRPC carries its status in trailers; the HTTP status of any gRPC answer is 200.
const GRPC_HTTP_STATUS: u16 = 200;

/// A gRPC request: `content-type` is `application/grpc`, alone or with a `+codec` or
/// `;parameters` suffix (gRPC-Web's `application/grpc-web` is not gRPC on the wire).
fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.get(..16).map(|head| (head, &text[16..])))
        .is_some_and(|(head, rest)| {
            head.eq_ignore_ascii_case("application/grpc")
                && (rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
        })
}

/// One refusal's answer, as [`send`] decided it: what it says, and whether the connection
/// stays open for another request.
struct Answer<'a> {
    refusal: &'a Refusal,
    body: ErrorBody<'a>,
    reuse: bool,
    request_id: &'a http::HeaderValue,
}

impl Answer<'_> {
    /// The gRPC "Trailers-Only" answer: status and message in the one header block, which
    /// ends the stream.
    async fn write_grpc(&self, session: &mut Session) -> pingora::Result<()> {
        let body = &self.body;
        let mut header = ResponseHeader::build(GRPC_HTTP_STATUS, Some(7))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        header.insert_header("grpc-status", body.error.grpc_status().to_string())?;
        let message = format!("{}: {}", body.error.as_str(), body.detail);
        header.insert_header("grpc-message", grpc_message(&message))?;
        self.insert_common_headers(&mut header)?;
        if session.req_header().version != http::Version::HTTP_2 {
            // HTTP/1.1 has no trailers-only frame: an empty body keeps the framing clear.
            header.insert_header(http::header::CONTENT_LENGTH, "0")?;
        }
        self.keep_alive_or_close(session);
        // As a task: pingora's `write_response_header` never ends an HTTP/2 stream.
        session
            .as_mut()
            .response_duplex_vec(vec![HttpTask::Header(Box::new(header), true)])
            .await
            .map(|_| ())
    }

    /// The JSON answer.
    async fn write_json(&self, session: &mut Session) -> pingora::Result<()> {
        let json =
            serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
        let mut header = ResponseHeader::build(self.body.error.status(), Some(5))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, json.len().to_string())?;
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        self.insert_common_headers(&mut header)?;
        self.keep_alive_or_close(session);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(Bytes::from(json)), true)
            .await
    }

    /// What every refusal's answer carries: the request id, and `Retry-After` and
    /// `WWW-Authenticate` when the refusal has them.
    fn insert_common_headers(&self, header: &mut ResponseHeader) -> pingora::Result<()> {
        header.insert_header(X_REQUEST_ID, self.request_id.clone())?;
        if let Some(seconds) = self.refusal.retry_after_seconds() {
            header.insert_header(http::header::RETRY_AFTER, seconds.to_string())?;
        }
        if let Some(challenge) = self.refusal.www_authenticate() {
            header.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
        }
        Ok(())
    }

    fn keep_alive_or_close(&self, session: &mut Session) {
        if !self.reuse {
            session.set_keepalive(None);
        }
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_follow_the_error_kinds() {
        assert_eq!(ErrorKind::Unauthenticated.grpc_status(), 16);
        assert_eq!(ErrorKind::Forbidden.grpc_status(), 7);
        assert_eq!(ErrorKind::CredentialUnavailable.grpc_status(), 14);
        assert_eq!(ErrorKind::AuthorizationUnavailable.grpc_status(), 14);
        assert_eq!(ErrorKind::UpstreamUnreachable.grpc_status(), 14);
        assert_eq!(ErrorKind::NoRoute.grpc_status(), 5);
        assert_eq!(ErrorKind::UpstreamTimeout.grpc_status(), 4);
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("no route: 100% é"), "no route: 100%25 %C3%A9");
    }
}
