//! OAuth 2.0 token endpoint client (RFC 6749): client_credentials, password and
//! refresh_token grants, client authentication by Basic header or form body.

use async_trait::async_trait;

use super::token_endpoint::{TokenEndpoint, TokenReply};
use super::{Grant, Provider, ProviderError, ProviderHttp};
use crate::config::{OAuth2Grant, OAuth2Settings};
use crate::secret::Secret;

pub struct OAuth2 {
    endpoint: TokenEndpoint,
    grant: OAuth2Grant,
    scope: Option<String>,
    audience: Option<String>,
    resources: Vec<String>,
}

impl OAuth2 {
    pub fn new(settings: &OAuth2Settings, http: ProviderHttp) -> Self {
        OAuth2 {
            endpoint: TokenEndpoint::new(&settings.client, http),
            grant: settings.grant.clone(),
            scope: (!settings.scopes.is_empty()).then(|| settings.scopes.join(" ")),
            audience: settings.audience.clone(),
            resources: settings.resources.clone(),
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
        let reply = self.endpoint.post(form).await?;
        if reply.status.is_success() {
            return Ok(TokenReply::parse(&reply.body, "token reply")?.into_grant());
        }
        let mut secrets = self.secrets();
        secrets.extend(refreshing);
        let error = self.endpoint.error(&reply, &secrets);
        let (status, detail) = (error.status, error.detail);
        Err(match (status, error.code.as_deref()) {
            (400, Some("invalid_grant")) if refreshing.is_some() => {
                ProviderError::RefreshRejected { status, detail }
            }
            (
                400 | 401,
                Some(
                    "invalid_client"
                    | "invalid_grant"
                    | "unauthorized_client"
                    | "invalid_scope"
                    | "invalid_target",
                ),
            )
            | (401 | 403, _) => ProviderError::Rejected { status, detail },
            _ => ProviderError::Failed { status, detail },
        })
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets: Vec<&Secret> = self.endpoint.client_secret().into_iter().collect();
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
