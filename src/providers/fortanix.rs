//! Fortanix DSM (seed 003): `POST /sys/v1/session/auth` with HTTP Basic (user email and
//! password, or app id and secret) or a body method. A reply carrying an MFA challenge
//! cannot be used by a gateway and is reported as such.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::http::{endpoint, parse_json, Call, ProviderHttp, REFUSAL_STATUSES};
use super::{Grant, Provider, ProviderError};
use crate::config::{FortanixLogin, FortanixSettings};
use crate::secret::Secret;

pub struct Fortanix {
    auth_url: url::Url,
    terminate_url: url::Url,
    login: FortanixLogin,
    terminate_on_shutdown: bool,
    http: ProviderHttp,
}

#[derive(Deserialize)]
struct AuthReply {
    access_token: Option<Secret>,
    expires_in: Option<u64>,
    token_type: Option<String>,
    challenge: Option<serde_json::Value>,
    allowed_mfa_methods: Option<serde_json::Value>,
}

impl Fortanix {
    pub fn new(settings: &FortanixSettings, http: ProviderHttp) -> Self {
        Fortanix {
            auth_url: endpoint(&settings.base_url, "/sys/v1/session/auth"),
            terminate_url: endpoint(&settings.base_url, "/sys/v1/session/terminate"),
            login: settings.login.clone(),
            terminate_on_shutdown: settings.terminate_on_shutdown,
            http,
        }
    }

    fn password(&self) -> &Secret {
        match &self.login {
            FortanixLogin::Basic { password, .. }
            | FortanixLogin::Password { password, .. }
            | FortanixLogin::AppName { password, .. }
            | FortanixLogin::Ldap { password, .. } => password,
        }
    }
}

/// Present and not JSON null.
fn present(value: &Option<serde_json::Value>) -> bool {
    value.as_ref().is_some_and(|v| !v.is_null())
}

#[async_trait]
impl Provider for Fortanix {
    async fn login(&self) -> Result<Grant, ProviderError> {
        let request = self.http.client().post(self.auth_url.clone());
        let request = match &self.login {
            FortanixLogin::Basic { username, password } => request.basic_auth(username, Some(password.expose())),
            FortanixLogin::Password { email, password } => {
                request.json(&json!({"method": "password", "email": email, "password": password.expose()}))
            }
            FortanixLogin::AppName { acct_id, name, password } => request.json(&json!({
                "method": "auth-by-app-name", "acct_id": acct_id, "name": name, "password": password.expose()
            })),
            FortanixLogin::Ldap {
                idp_id,
                email,
                password,
                acct_id,
            } => {
                let mut body = json!({
                    "method": "ldap-basic-auth", "idp_id": idp_id, "email": email, "password": password.expose()
                });
                if let Some(acct_id) = acct_id {
                    body["acct_id"] = json!(acct_id);
                }
                request.json(&body)
            }
        };
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            let secrets = [self.password()];
            return Err(self
                .http
                .failure(&reply, &secrets, Call::Login, REFUSAL_STATUSES));
        }
        let reply: AuthReply = parse_json(&reply.body, "session/auth reply")?;
        if present(&reply.challenge) || present(&reply.allowed_mfa_methods) {
            return Err(ProviderError::MfaRequired);
        }
        let access_token = reply
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ProviderError::BadReply("session/auth reply has no access_token".to_owned())
            })?;
        Ok(Grant {
            access_token,
            expires_in: reply.expires_in.map(Duration::from_secs),
            refresh_token: None,
            refresh_expires_in: None,
            token_type: reply.token_type,
        })
    }

    async fn end_session(&self, token: &Secret) -> Result<(), ProviderError> {
        if !self.terminate_on_shutdown {
            return Ok(());
        }
        let request = self
            .http
            .client()
            .post(self.terminate_url.clone())
            .bearer_auth(token.expose());
        let reply = self.http.exchange(request).await?;
        if reply.status.is_success() {
            return Ok(());
        }
        // Ending a session refuses nothing that a new login could fix.
        Err(self.http.failure(&reply, &[token], Call::Login, &[]))
    }

    fn ends_sessions(&self) -> bool {
        self.terminate_on_shutdown
    }
}
