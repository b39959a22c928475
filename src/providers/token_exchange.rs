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

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;

use super::http::{parse_json, ProviderHttp};
use super::{Grant, Provider, ProviderError, PER_CALLER_ONLY};
use crate::config::{ActorToken, ClientAuth, TokenExchangeSettings};
use crate::secret::Secret;

/// RFC 8693 section 2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 section 2.2.1: the `token_type` of an issued token that is not an access token.
const NOT_APPLICABLE: &str = "N_A";
/// Longest OAuth error code taken from a reply; a longer one is not a code.
const MAX_ERROR_CODE: usize = 64;

pub struct TokenExchange {
    token_url: url::Url,
    client_id: String,
    client_secret: Option<Secret>,
    client_auth: ClientAuth,
    subject_token_type: String,
    requested_token_type: Option<String>,
    audiences: Vec<String>,
    resources: Vec<String>,
    scope: Option<String>,
    actor: Option<ActorToken>,
    http: ProviderHttp,
}

/// RFC 8693 section 2.2.1 (and RFC 6749 section 5.1 for a refresh).
#[derive(Deserialize)]
struct Reply {
    access_token: Secret,
    issued_token_type: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
}

/// RFC 6749 section 5.2.
#[derive(Deserialize)]
struct ErrorReply {
    error: String,
    error_description: Option<String>,
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
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            client_auth: settings.client_auth,
            subject_token_type: settings.subject_token_type.clone(),
            requested_token_type: settings.requested_token_type.clone(),
            audiences: settings.audiences.clone(),
            resources: settings.resources.clone(),
            scope: (!settings.scopes.is_empty()).then(|| settings.scopes.join(" ")),
            actor: settings.actor.clone(),
            http,
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
        let mut request = self
            .http
            .client()
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        match self.client_auth {
            ClientAuth::Basic => {
                request = request.header(reqwest::header::AUTHORIZATION, self.basic_credentials());
            }
            ClientAuth::Post => {
                form.push(("client_id", &self.client_id));
                if let Some(secret) = &self.client_secret {
                    form.push(("client_secret", secret.expose()));
                }
            }
        }
        let reply = self.http.exchange(request.form(&form)).await?;
        if !reply.status.is_success() {
            return Err(self.error(reply.status.as_u16(), &reply.body, call));
        }
        let what = match call {
            Call::Exchange { .. } => "token exchange reply",
            Call::Refresh { .. } => "refresh reply",
        };
        let reply: Reply = parse_json(&reply.body, what)?;
        if reply.access_token.is_empty() {
            return Err(ProviderError::BadReply(format!(
                "{what}: empty access_token"
            )));
        }
        if matches!(call, Call::Exchange { .. })
            && reply.issued_token_type.as_deref().is_none_or(str::is_empty)
        {
            return Err(ProviderError::BadReply(format!(
                "{what}: no issued_token_type (RFC 8693 section 2.2.1)"
            )));
        }
        // `N_A`: the issued token is not an access token; the route's format says how it
        // is sent, and `{token_type}` falls back to Bearer.
        let token_type = reply
            .token_type
            .filter(|t| !t.eq_ignore_ascii_case(NOT_APPLICABLE));
        Ok(Grant {
            access_token: reply.access_token,
            expires_in: reply.expires_in.map(Duration::from_secs),
            refresh_token: reply.refresh_token.filter(|t| !t.is_empty()),
            refresh_expires_in: None,
            token_type,
        })
    }

    /// RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined.
    fn basic_credentials(&self) -> String {
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let secret = self
            .client_secret
            .as_ref()
            .map_or(String::new(), |s| encode(s.expose()));
        let pair = format!("{}:{}", encode(&self.client_id), secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    fn error(&self, status: u16, body: &[u8], call: Call<'_>) -> ProviderError {
        let mut secrets: Vec<&Secret> = self.client_secret.iter().collect();
        secrets.extend(self.actor.as_ref().map(|actor| &actor.token));
        match call {
            Call::Exchange { subject } => secrets.push(subject),
            Call::Refresh { refresh_token } => secrets.push(refresh_token),
        }
        let parsed = serde_json::from_slice::<ErrorReply>(body).ok();
        let code = parsed
            .as_ref()
            .map(|reply| reply.error.as_str())
            .filter(|code| is_error_code(code))
            .map(str::to_owned);
        let detail = match &parsed {
            Some(reply) => {
                let text = match &reply.error_description {
                    Some(description) => format!("{}: {description}", reply.error),
                    None => reply.error.clone(),
                };
                self.http.error_detail(text.as_bytes(), &secrets)
            }
            None => self.http.error_detail(body, &secrets),
        };
        match (call, status, code.as_deref()) {
            (Call::Refresh { .. }, 400, Some("invalid_grant")) => {
                ProviderError::RefreshRejected { status, detail }
            }
            (
                Call::Exchange { .. },
                400,
                Some("invalid_request" | "invalid_grant" | "invalid_target"),
            ) => ProviderError::CallerRefused {
                status,
                error: code,
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

/// RFC 6749 section 5.2: an error code is printable ASCII without `"` and `\`.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_ERROR_CODE
        && code
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_printable_words() {
        assert!(is_error_code("invalid_target"));
        assert!(!is_error_code(""));
        assert!(!is_error_code("a\"b"));
        assert!(!is_error_code("line\nbreak"));
        assert!(!is_error_code(&"x".repeat(65)));
    }
}
