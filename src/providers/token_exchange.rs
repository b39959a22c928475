//! OAuth 2.0 token exchange (RFC 8693) at a token endpoint: the caller's verified token is
//! the `subject_token`, traded for a token of the target service, one per caller.
//!
//! The request (section 2.1) carries `grant_type` =
//! `urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token` and
//! `subject_token_type`, and as configured `requested_token_type`, `audience` and `resource`
//! (each as many times as there are values), `scope`, and `actor_token` with
//! `actor_token_type`. The client authenticates as for any RFC 6749 grant (section 2.3.1).
//! The reply (section 2.2.1) must carry `access_token` and `issued_token_type`. A
//! `refresh_token` in it is traded with the `refresh_token` grant (RFC 6749 section 6).
//!
//! Errors (section 2.2.2, RFC 6749 section 5.2): `invalid_request` (the subject token is
//! invalid or unacceptable), `invalid_grant` and `invalid_target` (no token for that target)
//! refuse the caller; `invalid_client`, `unauthorized_client`, `unsupported_grant_type` and
//! `invalid_scope` refuse the gateway's own client; anything else is a failure of the
//! endpoint.

use async_trait::async_trait;
use serde::Deserialize;

use super::http::parse_json;
use super::token_endpoint::{TokenEndpoint, TokenReply};
use super::{Grant, Provider, ProviderError, ProviderHttp, PER_CALLER_ONLY};
use crate::config::{ActorToken, TokenExchangeSettings};
use crate::secret::Secret;

/// RFC 8693 section 2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 section 2.2.1: the `token_type` of an issued token that is not an access token.
const NOT_APPLICABLE: &str = "N_A";

pub struct TokenExchange {
    endpoint: TokenEndpoint,
    subject_token_type: String,
    requested_token_type: Option<String>,
    audiences: Vec<String>,
    resources: Vec<String>,
    scope: Option<String>,
    actor: Option<ActorToken>,
}

/// RFC 8693 section 2.2.1 (and RFC 6749 section 5.1 for a refresh): the token reply and
/// the type of the token issued.
#[derive(Deserialize)]
struct Reply {
    access_token: Secret,
    issued_token_type: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
}

/// What one request to the endpoint is.
#[derive(Clone, Copy)]
enum Call<'a> {
    Exchange { subject: &'a Secret },
    Refresh { refresh_token: &'a Secret },
}

impl TokenExchange {
    pub fn new(settings: &TokenExchangeSettings, http: ProviderHttp) -> Self {
        TokenExchange {
            endpoint: TokenEndpoint::new(&settings.client, http),
            subject_token_type: settings.subject_token_type.clone(),
            requested_token_type: settings.requested_token_type.clone(),
            audiences: settings.audiences.clone(),
            resources: settings.resources.clone(),
            scope: (!settings.scopes.is_empty()).then(|| settings.scopes.join(" ")),
            actor: settings.actor.clone(),
        }
    }

    async fn request(&self, call: Call<'_>) -> Result<Grant, ProviderError> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(12);
        match call {
            Call::Exchange { subject } => {
                form.push(("grant_type", TOKEN_EXCHANGE_GRANT));
                form.push(("subject_token", subject.expose()));
                form.push(("subject_token_type", &self.subject_token_type));
                if let Some(requested) = &self.requested_token_type {
                    form.push(("requested_token_type", requested));
                }
                if let Some(actor) = &self.actor {
                    form.push(("actor_token", actor.token.expose()));
                    form.push(("actor_token_type", &actor.token_type));
                }
            }
            Call::Refresh { refresh_token } => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh_token.expose()));
            }
        }
        // RFC 8693 section 2.1: `audience` and `resource` may each be given several times.
        for audience in &self.audiences {
            form.push(("audience", audience));
        }
        for resource in &self.resources {
            form.push(("resource", resource));
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let reply = self.endpoint.post(form).await?;
        if !reply.status.is_success() {
            return Err(self.error(&reply, call));
        }
        let what = match call {
            Call::Exchange { .. } => "token exchange reply",
            Call::Refresh { .. } => "refresh reply",
        };
        let Reply {
            access_token,
            issued_token_type,
            token_type,
            expires_in,
            refresh_token,
        } = parse_json(&reply.body, what)?;
        // `N_A`: the issued token is not an access token; the route's format says how it is
        // sent, and `{token_type}` falls back to Bearer.
        let token_type = token_type.filter(|t| !t.eq_ignore_ascii_case(NOT_APPLICABLE));
        let reply =
            TokenReply::new(access_token, token_type, expires_in, refresh_token).checked(what)?;
        if matches!(call, Call::Exchange { .. })
            && issued_token_type.as_deref().is_none_or(str::is_empty)
        {
            return Err(ProviderError::BadReply(format!(
                "{what}: no issued_token_type (RFC 8693 section 2.2.1)"
            )));
        }
        Ok(reply.into_grant())
    }

    fn error(&self, reply: &crate::outbound::Reply, call: Call<'_>) -> ProviderError {
        let mut secrets: Vec<&Secret> = self.endpoint.client_secret().into_iter().collect();
        secrets.extend(self.actor.as_ref().map(|actor| &actor.token));
        match call {
            Call::Exchange { subject } => secrets.push(subject),
            Call::Refresh { refresh_token } => secrets.push(refresh_token),
        }
        let error = self.endpoint.error(reply, &secrets);
        let (status, detail) = (error.status, error.detail);
        match (call, status, error.code.as_deref()) {
            (Call::Refresh { .. }, 400, Some("invalid_grant")) => {
                ProviderError::RefreshRejected { status, detail }
            }
            (
                Call::Exchange { .. },
                400,
                Some("invalid_request" | "invalid_grant" | "invalid_target"),
            ) => ProviderError::CallerRefused {
                status,
                error: error.code,
                detail,
            },
            (
                _,
                400 | 401,
                Some(
                    "invalid_client"
                    | "unauthorized_client"
                    | "unsupported_grant_type"
                    | "invalid_scope",
                ),
            )
            | (_, 401 | 403, _) => ProviderError::Rejected { status, detail },
            _ => ProviderError::Failed { status, detail },
        }
    }
}

#[async_trait]
impl Provider for TokenExchange {
    async fn login(&self) -> Result<Grant, ProviderError> {
        Err(ProviderError::Unsupported(PER_CALLER_ONLY))
    }

    async fn exchange(&self, subject: &Secret) -> Result<Grant, ProviderError> {
        self.request(Call::Exchange { subject }).await
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        self.request(Call::Refresh { refresh_token }).await
    }
}
