//! Responses tollgate makes itself: always JSON, never with a secret in them.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

use super::{Gateway, RequestContext};
use crate::inbound::Refusal;
use crate::tokens::CredentialUnavailable;

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
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    pub detail: &'a str,
}

/// An error response: the body and what goes with it.
pub struct Answer<'a> {
    pub body: ErrorBody<'a>,
    /// Becomes `Retry-After` in whole seconds.
    pub retry_after_seconds: Option<u64>,
    /// The challenge of a 401.
    pub www_authenticate: Option<&'a str>,
    pub close: bool,
}

/// Writes the JSON error. `close` ends the connection after the answer (pingora does not
/// reuse a downstream connection once a request failed past upstream selection).
pub async fn send_error(
    session: &mut Session,
    answer: &Answer<'_>,
    request_id: &http::HeaderValue,
) -> pingora::Result<()> {
    let body = &answer.body;
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    let mut header = ResponseHeader::build(body.error.status(), Some(5))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, json.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(super::rewrite::X_REQUEST_ID, request_id.clone())?;
    if let Some(seconds) = answer.retry_after_seconds {
        header.insert_header(http::header::RETRY_AFTER, seconds.max(1).to_string())?;
    }
    if let Some(challenge) = answer.www_authenticate {
        header.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
    }
    // An unread request body would be taken for the next request on this connection.
    if answer.close || !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(json)), true)
        .await?;
    Ok(())
}

/// The answers the gateway gives itself, with their metrics.
impl Gateway {
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        kind: ErrorKind,
        detail: &str,
        retry_after: Option<u64>,
        close: bool,
    ) {
        self.answer(
            session,
            ctx,
            Answer {
                body: self.error_body(ctx, kind, detail),
                retry_after_seconds: retry_after,
                www_authenticate: None,
                close,
            },
        )
        .await;
    }

    pub(super) fn error_body<'a>(
        &self,
        ctx: &'a RequestContext,
        kind: ErrorKind,
        detail: &'a str,
    ) -> ErrorBody<'a> {
        ErrorBody {
            error: kind,
            route: ctx.route.as_deref().map(|r| r.name.as_str()),
            provider: ctx
                .route
                .as_deref()
                .and_then(|r| r.credential.as_ref())
                .map(|c| c.provider_name.as_str()),
            detail,
        }
    }

    pub(super) async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        answer: Answer<'_>,
    ) {
        if let Err(error) = send_error(session, &answer, &ctx.request_id).await {
            tracing::debug!(%error, "could not send the error response");
        }
    }

    /// The caller did not pass the route's inbound checks; nothing is forwarded.
    pub(super) async fn refuse_caller(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        refusal: &Refusal,
    ) {
        let (kind, www_authenticate, retry_after) = match refusal {
            Refusal::Unauthenticated {
                www_authenticate, ..
            } => (
                ErrorKind::Unauthenticated,
                Some(www_authenticate.as_str()),
                None,
            ),
            Refusal::Forbidden { .. } => (ErrorKind::Forbidden, None, None),
            Refusal::Unavailable { retry_after, .. } => (
                ErrorKind::AuthorizationUnavailable,
                None,
                Some(retry_after.as_secs_f64().ceil() as u64),
            ),
        };
        let mut body = self.error_body(ctx, kind, refusal.detail());
        body.provider = None;
        let answer = Answer {
            body,
            retry_after_seconds: retry_after,
            www_authenticate,
            close: false,
        };
        self.answer(session, ctx, answer).await;
    }

    pub(super) async fn refuse_unavailable(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        unavailable: &CredentialUnavailable,
        close: bool,
    ) {
        if let Some(route) = &ctx.route {
            self.metrics
                .credential_unavailable
                .with_label_values(&[&route.name])
                .inc();
        }
        let detail = format!(
            "no valid credential from provider {}: {}",
            unavailable.provider, unavailable.reason
        );
        let retry_after = unavailable.retry_after.as_secs_f64().ceil() as u64;
        self.refuse(
            session,
            ctx,
            ErrorKind::CredentialUnavailable,
            &detail,
            Some(retry_after),
            close,
        )
        .await;
    }
}
