//! BigBucks Solutions Auth Engine (seed 002): `POST {base}/signin` with
//! `{username, password, recaptcha?}`; the reply body is the JWT as a JSON string, injected
//! as `X-Auth`. Its lifetime comes from the JWT `exp`.

use async_trait::async_trait;
use serde::Serialize;

use super::http::{endpoint, parse_json, ProviderHttp};
use super::{Grant, Provider, ProviderError};
use crate::config::BigBucksSettings;
use crate::outbound::Reply;
use crate::secret::Secret;

pub struct BigBucks {
    signin_url: url::Url,
    username: String,
    password: Secret,
    recaptcha: Option<Secret>,
    http: ProviderHttp,
}

#[derive(Serialize)]
struct SigninRequest<'a> {
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recaptcha: Option<&'a str>,
}

impl BigBucks {
    pub fn new(settings: &BigBucksSettings, http: ProviderHttp) -> Self {
        BigBucks {
            signin_url: endpoint(&settings.base_url, "/signin"),
            username: settings.username.clone(),
            password: settings.password.clone(),
            recaptcha: settings.recaptcha.clone(),
            http,
        }
    }

    /// The seed's three error answers, each told apart.
    fn failure(&self, reply: &Reply) -> ProviderError {
        let status = reply.status.as_u16();
        let mut secrets = vec![&self.password];
        secrets.extend(self.recaptcha.as_ref());
        let detail = self.http.error_detail(&reply.body, &secrets);
        match status {
            400 => ProviderError::Rejected {
                status,
                detail: format!("sign-in refused as a bad request (wrong password, missing field or recaptcha): {detail}"),
            },
            404 => ProviderError::Rejected {
                status,
                detail: format!("user {} not found: {detail}", self.username),
            },
            401 | 403 => ProviderError::Rejected { status, detail },
            _ => ProviderError::Failed {
                status,
                detail: format!("Auth Engine error: {detail}"),
            },
        }
    }
}

#[async_trait]
impl Provider for BigBucks {
    async fn login(&self) -> Result<Grant, ProviderError> {
        let request = self
            .http
            .client()
            .post(self.signin_url.clone())
            .json(&SigninRequest {
                username: &self.username,
                password: self.password.expose(),
                recaptcha: self.recaptcha.as_ref().map(Secret::expose),
            });
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            return Err(self.failure(&reply));
        }
        let token: Secret = parse_json(&reply.body, "signin reply (a JSON string)")?;
        if token.is_empty() {
            return Err(ProviderError::BadReply(
                "signin reply is an empty string".to_owned(),
            ));
        }
        Ok(Grant::bare(token))
    }
}
