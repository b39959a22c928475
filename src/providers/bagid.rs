//! BagID (seed 004): federated, B2B-secret, attestation and guest logins, and refresh with
//! `POST /v2/auth/refresh`. Attestation and guest logins first take a nonce, hand it to the
//! configured attestor, and never use a nonce past its expiry.

use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::http::{endpoint, parse_json, Call, ProviderHttp};
use super::{Grant, Provider, ProviderError, PER_CALLER_ONLY};
use crate::config::{Attestor, BagIdFlow, BagIdSettings, FederatedToken};
use crate::secret::Secret;

const APP_KEY_HEADER: &str = "X-Source-App-Key";
const B2B_SECRET_HEADER: &str = "X-B2B-Secret";
/// Nonces are short-lived; a stated lifetime beyond this is treated as this.
const MAX_NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// BagID answers a refused login or refresh token with 400 as well as 401 and 403.
const BAGID_REFUSALS: &[u16] = &[400, 401, 403];
/// Longest attestation object accepted from an attestor.
const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

pub struct BagId {
    base_url: url::Url,
    flow: BagIdFlow,
    http: ProviderHttp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    access_token: Option<Secret>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
    refresh_expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NonceResponse {
    nonce: Option<String>,
    expires_at: Option<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestorReply {
    attestation_object: String,
}

/// A nonce and the instant it stops being usable.
struct Nonce {
    value: String,
    usable_until: Instant,
}

impl BagId {
    pub fn new(settings: &BagIdSettings, http: ProviderHttp) -> Self {
        BagId {
            base_url: settings.base_url.clone(),
            flow: settings.flow.clone(),
            http,
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        match &self.flow {
            BagIdFlow::Federated { app_key, token } => match token {
                FederatedToken::Value(token) => vec![app_key, token],
                FederatedToken::File(_) | FederatedToken::FromCaller => vec![app_key],
            },
            BagIdFlow::B2bSecret {
                app_key,
                b2b_secret,
                password,
                ..
            } => vec![app_key, b2b_secret, password],
            BagIdFlow::Attestation { .. } | BagIdFlow::Guest { .. } => Vec::new(),
        }
    }

    async fn post_login(
        &self,
        request: reqwest::RequestBuilder,
        extra_secrets: &[&Secret],
    ) -> Result<Grant, ProviderError> {
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            let mut secrets = self.secrets();
            secrets.extend_from_slice(extra_secrets);
            return Err(self
                .http
                .failure(&reply, &secrets, Call::Login, BAGID_REFUSALS));
        }
        grant_from(parse_json(&reply.body, "login reply")?)
    }

    async fn nonce(&self) -> Result<Nonce, ProviderError> {
        let request = self
            .http
            .client()
            .post(endpoint(&self.base_url, "/v2/auth/nonces"));
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            return Err(ProviderError::Failed {
                status: reply.status.as_u16(),
                detail: format!(
                    "nonce request failed: {}",
                    self.http.error_detail(&reply.body, &[])
                ),
            });
        }
        let reply: NonceResponse = parse_json(&reply.body, "nonce reply")?;
        let value = reply
            .nonce
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ProviderError::BadReply("nonce reply has no nonce".to_owned()))?;
        let now = Instant::now();
        // Capped, so that a nonsense lifetime cannot overflow the clock.
        let within = |left: Duration| now + left.min(MAX_NONCE_LIFETIME);
        let mut usable_until: Option<Instant> = reply
            .ttl_seconds
            .map(|ttl| within(Duration::from_secs(ttl)));
        if let Some(expires_at) = reply.expires_at {
            let at = humantime::parse_rfc3339_weak(&expires_at).map_err(|_| {
                ProviderError::BadReply(format!("nonce expiresAt `{expires_at}` is not RFC 3339"))
            })?;
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let until = within(left);
            usable_until = Some(usable_until.map_or(until, |other| other.min(until)));
        }
        let usable_until = usable_until.unwrap_or(now + Duration::from_secs(30));
        if usable_until <= now {
            return Err(ProviderError::BadReply(
                "nonce is already expired (check clocks)".to_owned(),
            ));
        }
        Ok(Nonce {
            value,
            usable_until,
        })
    }

    async fn attest(&self, attestor: &Attestor, nonce: &str) -> Result<Secret, ProviderError> {
        let object = match attestor {
            Attestor::Http { url, timeout } => {
                let request = self
                    .http
                    .client()
                    .post(url.clone())
                    .timeout(*timeout)
                    .json(&json!({"nonce": nonce}));
                let reply = self.http.exchange(request).await.map_err(|error| {
                    ProviderError::Attestor(format!("cannot reach the attestor: {error}"))
                })?;
                if !reply.status.is_success() {
                    return Err(ProviderError::Attestor(format!(
                        "attestor answered HTTP {}",
                        reply.status.as_u16()
                    )));
                }
                let reply: AttestorReply = serde_json::from_slice(&reply.body).map_err(|_| {
                    ProviderError::Attestor("attestor reply has no attestationObject".to_owned())
                })?;
                reply.attestation_object
            }
            Attestor::Command {
                program,
                args,
                timeout,
            } => {
                let run = tokio::process::Command::new(program)
                    .args(args)
                    .arg(nonce)
                    .kill_on_drop(true)
                    .output();
                let output = tokio::time::timeout(*timeout, run)
                    .await
                    .map_err(|_| {
                        ProviderError::Attestor(format!(
                            "{program} did not finish within {timeout:?}"
                        ))
                    })?
                    .map_err(|e| ProviderError::Attestor(format!("cannot run {program}: {e}")))?;
                if !output.status.success() {
                    return Err(ProviderError::Attestor(format!(
                        "{program} exited with {}",
                        output.status
                    )));
                }
                String::from_utf8(output.stdout)
                    .map_err(|_| {
                        ProviderError::Attestor(format!("{program} printed non-UTF-8 output"))
                    })?
                    .trim()
                    .to_owned()
            }
        };
        if object.is_empty() || object.len() > MAX_ATTESTATION_BYTES {
            return Err(ProviderError::Attestor(
                "attestation object is empty or too large".to_owned(),
            ));
        }
        Ok(Secret::new(object))
    }

    async fn attested_login(
        &self,
        attestor: &Attestor,
        path: &str,
    ) -> Result<Grant, ProviderError> {
        let nonce = self.nonce().await?;
        let object = self.attest(attestor, &nonce.value).await?;
        if Instant::now() >= nonce.usable_until {
            return Err(ProviderError::Attestor(
                "the nonce expired before the attestation was ready; not using it".to_owned(),
            ));
        }
        let request = self
            .http
            .client()
            .post(endpoint(&self.base_url, path))
            .json(&json!({"nonce": nonce.value, "attestationObject": object.expose()}));
        self.post_login(request, &[&object]).await
    }
}

impl BagId {
    /// `POST /v2/auth/federated/sessions` with the host app's `token`.
    async fn federated_login(
        &self,
        app_key: &Secret,
        token: &Secret,
    ) -> Result<Grant, ProviderError> {
        let request = self
            .http
            .client()
            .post(endpoint(&self.base_url, "/v2/auth/federated/sessions"))
            .header(APP_KEY_HEADER, app_key.expose())
            .json(&json!({"token": token.expose()}));
        self.post_login(request, &[token]).await
    }
}

fn grant_from(reply: LoginResponse) -> Result<Grant, ProviderError> {
    let access_token = reply
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::BadReply("login reply has no accessToken".to_owned()))?;
    Ok(Grant {
        access_token,
        expires_in: reply.expires_in.map(Duration::from_secs),
        refresh_token: reply.refresh_token.filter(|t| !t.is_empty()),
        refresh_expires_in: reply.refresh_expires_in.map(Duration::from_secs),
        token_type: reply.token_type,
    })
}

#[async_trait]
impl Provider for BagId {
    async fn login(&self) -> Result<Grant, ProviderError> {
        match &self.flow {
            BagIdFlow::Federated { app_key, token } => {
                let token = match token {
                    FederatedToken::FromCaller => {
                        return Err(ProviderError::Unsupported(PER_CALLER_ONLY))
                    }
                    FederatedToken::Value(value) => value.clone(),
                    FederatedToken::File(path) => std::fs::read_to_string(path)
                        .map(|text| Secret::new(text.trim_end_matches(['\n', '\r'])))
                        .map_err(|e| {
                            ProviderError::BadReply(format!(
                                "cannot read the federated token file {}: {e}",
                                path.display()
                            ))
                        })?,
                };
                self.federated_login(app_key, &token).await
            }
            BagIdFlow::B2bSecret {
                app_key,
                b2b_secret,
                username,
                password,
            } => {
                let request = self
                    .http
                    .client()
                    .post(endpoint(&self.base_url, "/v2/auth/b2b-secret/sessions"))
                    .header(APP_KEY_HEADER, app_key.expose())
                    .header(B2B_SECRET_HEADER, b2b_secret.expose())
                    .json(&json!({"username": username, "password": password.expose()}));
                self.post_login(request, &[]).await
            }
            BagIdFlow::Attestation { attestor } => {
                self.attested_login(attestor, "/v2/auth/attestation/sessions")
                    .await
            }
            BagIdFlow::Guest { attestor } => {
                self.attested_login(attestor, "/v2/auth/guest/sessions")
                    .await
            }
        }
    }

    /// `federated_token: from_caller`: the caller's verified token is the federated token,
    /// one BagID session per caller. BagID refusing it (400, 401, 403: the seed names no
    /// error answers, so they cannot be told from a refused app key) refuses that caller.
    async fn exchange(&self, subject: &Secret) -> Result<Grant, ProviderError> {
        let BagIdFlow::Federated {
            app_key,
            token: FederatedToken::FromCaller,
        } = &self.flow
        else {
            return Err(ProviderError::Unsupported(
                "only bagid with federated_token: from_caller mints tokens per caller",
            ));
        };
        match self.federated_login(app_key, subject).await {
            Err(ProviderError::Rejected { status, detail }) => Err(ProviderError::CallerRefused {
                status,
                error: None,
                detail,
            }),
            other => other,
        }
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        let request = self
            .http
            .client()
            .post(endpoint(&self.base_url, "/v2/auth/refresh"))
            .json(&json!({"refreshToken": refresh_token.expose()}));
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            let secrets = [refresh_token];
            return Err(self
                .http
                .failure(&reply, &secrets, Call::Refresh, BAGID_REFUSALS));
        }
        grant_from(parse_json(&reply.body, "refresh reply")?)
    }
}
