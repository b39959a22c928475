//! BigID (seeds 000 and 001): a long-lived user token is exchanged for a short-lived
//! system token at `POST /api/v1/refresh-access-token`, or a username and password open a
//! session at `POST /api/v1/sessions`. BigID states no lifetime: the JWT's `exp` gives it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::http::{endpoint, parse_json, Call, ProviderHttp, REFUSAL_STATUSES};
use super::{Grant, Provider, ProviderError};
use crate::config::{BigIdLogin, BigIdSettings};
use crate::secret::Secret;

pub struct BigId {
    sessions_url: url::Url,
    refresh_url: url::Url,
    login: BigIdLogin,
    http: ProviderHttp,
}

#[derive(Serialize)]
struct SessionRequest<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct SessionResponse {
    auth_token: Option<Secret>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(rename = "systemToken")]
    system_token: Option<Secret>,
}

impl BigId {
    pub fn new(settings: &BigIdSettings, http: ProviderHttp) -> Self {
        BigId {
            sessions_url: endpoint(&settings.base_url, "/api/v1/sessions"),
            refresh_url: endpoint(&settings.base_url, "/api/v1/refresh-access-token"),
            login: settings.login.clone(),
            http,
        }
    }
}

fn token_or_error(token: Option<Secret>, field: &str) -> Result<Grant, ProviderError> {
    match token {
        Some(token) if !token.is_empty() => Ok(Grant::bare(token)),
        _ => Err(ProviderError::BadReply(format!("reply has no {field}"))),
    }
}

#[async_trait]
impl Provider for BigId {
    async fn login(&self) -> Result<Grant, ProviderError> {
        match &self.login {
            BigIdLogin::UserToken(user_token) => {
                let request = self
                    .http
                    .client()
                    .post(self.refresh_url.clone())
                    .bearer_auth(user_token.expose());
                let reply = self.http.exchange(request).await?;
                if !reply.status.is_success() {
                    let secrets = [user_token];
                    return Err(self
                        .http
                        .failure(&reply, &secrets, Call::Login, REFUSAL_STATUSES));
                }
                let reply: TokenResponse = parse_json(&reply.body, "refresh-access-token reply")?;
                token_or_error(reply.system_token, "systemToken")
            }
            BigIdLogin::Password { username, password } => {
                let request =
                    self.http
                        .client()
                        .post(self.sessions_url.clone())
                        .json(&SessionRequest {
                            username,
                            password: password.expose(),
                        });
                let reply = self.http.exchange(request).await?;
                if !reply.status.is_success() {
                    let secrets = [password];
                    return Err(self
                        .http
                        .failure(&reply, &secrets, Call::Login, REFUSAL_STATUSES));
                }
                let reply: SessionResponse = parse_json(&reply.body, "sessions reply")?;
                token_or_error(reply.auth_token, "auth_token")
            }
        }
    }
}
