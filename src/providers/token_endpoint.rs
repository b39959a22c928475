//! What the OAuth 2.0 clients (`oauth2`, RFC 6749, and `token_exchange`, RFC 8693) share
//! at a token endpoint: the client's authentication (RFC 6749 section 2.3.1) on a POSTed
//! form, the token reply (section 5.1) and the error reply (section 5.2).

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::http::{parse_json, ProviderHttp};
use super::{Grant, ProviderError};
use crate::config::{ClientAuth, TokenClient};
use crate::outbound::Reply;
use crate::secret::Secret;

/// Longest OAuth error code taken from a reply; a longer one is not a code.
const MAX_ERROR_CODE: usize = 64;

/// A token endpoint and the client that authenticates at it.
pub struct TokenEndpoint {
    url: url::Url,
    client_id: String,
    client_secret: Option<Secret>,
    client_auth: ClientAuth,
    http: ProviderHttp,
}

/// RFC 6749 section 5.1: what a successful reply holds besides a grant type's own fields.
#[derive(Deserialize)]
pub struct TokenReply {
    access_token: Secret,
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

/// A non-2xx reply of the endpoint, read as far as it is an RFC 6749 error reply.
pub struct EndpointError {
    pub status: u16,
    /// The `error` code, when the reply carries one that is a code.
    pub code: Option<String>,
    /// `error: error_description` (or the body, when it is no error reply), cleaned.
    pub detail: String,
}

impl TokenEndpoint {
    pub fn new(client: &TokenClient, http: ProviderHttp) -> Self {
        TokenEndpoint {
            url: client.token_url.clone(),
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone(),
            client_auth: client.client_auth,
            http,
        }
    }

    pub fn client_secret(&self) -> Option<&Secret> {
        self.client_secret.as_ref()
    }

    /// POSTs `form` (asking for JSON) with the client authenticated as configured: a Basic
    /// header, or `client_id` and `client_secret` added to the form.
    pub async fn post(&self, mut form: Vec<(&str, &str)>) -> Result<Reply, ProviderError> {
        let mut request = self
            .http
            .client()
            .post(self.url.clone())
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
        self.http.exchange(request.form(&form)).await
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

    /// The error a non-2xx `reply` carries, its text cleaned of `secrets` (and of the
    /// provider's secret references).
    pub fn error(&self, reply: &Reply, secrets: &[&Secret]) -> EndpointError {
        let parsed = serde_json::from_slice::<ErrorReply>(&reply.body).ok();
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
                self.http.error_detail(text.as_bytes(), secrets)
            }
            None => self.http.error_detail(&reply.body, secrets),
        };
        EndpointError {
            status: reply.status.as_u16(),
            code,
            detail,
        }
    }
}

impl TokenReply {
    /// A reply read by a grant type that parses its own fields too.
    pub fn new(
        access_token: Secret,
        token_type: Option<String>,
        expires_in: Option<u64>,
        refresh_token: Option<Secret>,
    ) -> Self {
        TokenReply {
            access_token,
            token_type,
            expires_in,
            refresh_token,
        }
    }

    /// Parses a 2xx reply body; `what` names the reply in errors. An empty `access_token`
    /// is a bad reply.
    pub fn parse(body: &[u8], what: &str) -> Result<TokenReply, ProviderError> {
        let reply: TokenReply = parse_json(body, what)?;
        reply.checked(what)
    }

    /// The reply itself, unless its `access_token` is empty.
    pub fn checked(self, what: &str) -> Result<TokenReply, ProviderError> {
        if self.access_token.is_empty() {
            return Err(ProviderError::BadReply(format!(
                "{what}: empty access_token"
            )));
        }
        Ok(self)
    }

    /// The grant: an empty refresh token is none.
    pub fn into_grant(self) -> Grant {
        Grant {
            access_token: self.access_token,
            expires_in: self.expires_in.map(Duration::from_secs),
            refresh_token: self.refresh_token.filter(|t| !t.is_empty()),
            refresh_expires_in: None,
            token_type: self.token_type,
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
