//! OAuth 2.0 token endpoint client (RFC 6749): client_credentials, password and
//! refresh_token grants, client authentication by Basic header or form body.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::Deserialize;

use super::http::{parse_json, ProviderHttp};
use super::{Grant, Provider, ProviderError};
use crate::config::{ClientAuth, OAuth2Grant, OAuth2Settings};
use crate::secret::Secret;

pub struct OAuth2 {
    token_url: url::Url,
    grant: OAuth2Grant,
    client_id: String,
    client_secret: Option<Secret>,
    client_auth: ClientAuth,
    scope: Option<String>,
    audience: Option<String>,
    resources: Vec<String>,
    http: ProviderHttp,
}

/// RFC 6749 §5.1.
#[derive(Deserialize)]
struct TokenReply {
    access_token: Secret,
    token_type: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
}

/// RFC 6749 §5.2.
#[derive(Deserialize)]
struct ErrorReply {
    error: String,
    error_description: Option<String>,
}

impl OAuth2 {
    pub fn new(settings: &OAuth2Settings, http: ProviderHttp) -> Self {
        OAuth2 {
            token_url: settings.token_url.clone(),
            grant: settings.grant.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            client_auth: settings.client_auth,
            scope: (!settings.scopes.is_empty()).then(|| settings.scopes.join(" ")),
            audience: settings.audience.clone(),
            resources: settings.resources.clone(),
            http,
        }
    }

    /// `refreshing` is the held refresh token being traded, if that is what this is.
    async fn request(
        &self,
        mut form: Vec<(&str, &str)>,
        refreshing: Option<&Secret>,
    ) -> Result<Grant, ProviderError> {
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        // RFC 8707: one `resource` parameter per resource, on a refresh too.
        for resource in &self.resources {
            form.push(("resource", resource));
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
        let (status, body) = (reply.status, reply.body);
        if status.is_success() {
            let reply: TokenReply = parse_json(&body, "token reply")?;
            if reply.access_token.is_empty() {
                return Err(ProviderError::BadReply(
                    "token reply: empty access_token".to_owned(),
                ));
            }
            return Ok(Grant {
                access_token: reply.access_token,
                expires_in: reply.expires_in.map(Duration::from_secs),
                refresh_token: reply.refresh_token.filter(|t| !t.is_empty()),
                refresh_expires_in: None,
                token_type: reply.token_type,
            });
        }
        Err(self.error(status.as_u16(), &body, refreshing))
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

    fn error(&self, status: u16, body: &[u8], refreshing: Option<&Secret>) -> ProviderError {
        let mut secrets = self.secrets();
        secrets.extend(refreshing);
        let detail = match serde_json::from_slice::<ErrorReply>(body) {
            Ok(reply) => match reply.error_description {
                Some(description) => self.http.error_detail(
                    format!("{}: {description}", reply.error).as_bytes(),
                    &secrets,
                ),
                None => self.http.error_detail(reply.error.as_bytes(), &secrets),
            },
            Err(_) => self.http.error_detail(body, &secrets),
        };
        let oauth_error = serde_json::from_slice::<ErrorReply>(body)
            .map(|r| r.error)
            .unwrap_or_default();
        match (status, oauth_error.as_str()) {
            (400, "invalid_grant") if refreshing.is_some() => {
                ProviderError::RefreshRejected { status, detail }
            }
            (
                400 | 401,
                "invalid_client"
                | "invalid_grant"
                | "unauthorized_client"
                | "invalid_scope"
                | "invalid_target",
            )
            | (401 | 403, _) => ProviderError::Rejected { status, detail },
            _ => ProviderError::Failed { status, detail },
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets: Vec<&Secret> = self.client_secret.iter().collect();
        match &self.grant {
            OAuth2Grant::Password { password, .. } => secrets.push(password),
            OAuth2Grant::RefreshToken { refresh_token } => secrets.push(refresh_token),
            OAuth2Grant::ClientCredentials => {}
        }
        secrets
    }
}

#[async_trait]
impl Provider for OAuth2 {
    async fn login(&self) -> Result<Grant, ProviderError> {
        match &self.grant {
            OAuth2Grant::ClientCredentials => {
                self.request(vec![("grant_type", "client_credentials")], None)
                    .await
            }
            OAuth2Grant::Password { username, password } => {
                let form = vec![
                    ("grant_type", "password"),
                    ("username", username.as_str()),
                    ("password", password.expose()),
                ];
                self.request(form, None).await
            }
            OAuth2Grant::RefreshToken { refresh_token } => {
                let form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                ];
                self.request(form, None).await
            }
        }
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        self.request(form, Some(refresh_token)).await
    }
}
