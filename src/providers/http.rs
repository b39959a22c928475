//! The HTTP side shared by every provider client: one pooled reqwest client per provider
//! with its timeout and TLS settings, and error mapping that keeps secrets out of messages.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::{BuildError, ProviderError};
use crate::config::ProviderSpec;
use crate::secret::Secret;

/// Replies larger than this are not a token answer.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Longest piece of a provider's error text that is kept for logs and 503 details.
const MAX_DETAIL_CHARS: usize = 200;

pub struct ProviderHttp {
    client: reqwest::Client,
    timeout: Duration,
    /// The values of the provider's secret references, blanked from every error text.
    reference_values: Vec<Secret>,
}

impl ProviderHttp {
    pub fn new(spec: &ProviderSpec) -> Result<Self, BuildError> {
        let error = |reason: String| BuildError {
            provider: spec.name.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &spec.tls.ca_file {
            for der in crate::tls::read_ca_file(path).map_err(error)? {
                let cert = reqwest::Certificate::from_der(der.as_ref())
                    .map_err(|e| error(e.to_string()))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        if spec.tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| error(e.to_string()))?;
        Ok(ProviderHttp {
            client,
            timeout: spec.timeout,
            reference_values: spec.reference_values.clone(),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request; transport failures become [`ProviderError`]s without the URL's
    /// query or any header in them.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, ProviderError> {
        request
            .send()
            .await
            .map_err(|error| self.transport_error(error))
    }

    fn transport_error(&self, error: reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return ProviderError::Timeout(self.timeout);
        }
        let kind = if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        // The chain below the reqwest error says why (refused, DNS, TLS) without the URL.
        let mut cause = String::new();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        if cause.is_empty() {
            ProviderError::Unreachable(kind.to_owned())
        } else {
            ProviderError::Unreachable(format!("{kind}: {cause}"))
        }
    }

    /// A short, printable summary of an error body. Every form of `secrets` and of the
    /// provider's secret references is blanked (before it is shortened), in case the
    /// provider echoes them.
    pub fn error_detail(&self, body: &[u8], secrets: &[&Secret]) -> String {
        let mut all: Vec<&Secret> = self.reference_values.iter().collect();
        all.extend_from_slice(secrets);
        crate::redact::clean(body, &all, MAX_DETAIL_CHARS)
    }

    /// Reads a whole reply body, refusing oversized ones.
    pub async fn body(&self, response: Response) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|length| length > MAX_REPLY_BYTES as u64)
        {
            return Err(ProviderError::BadReply(format!(
                "reply larger than {MAX_REPLY_BYTES} bytes"
            )));
        }
        let bytes = response.bytes().await.map_err(|error| {
            if error.is_timeout() {
                ProviderError::Timeout(self.timeout)
            } else {
                ProviderError::BadReply("reply body was cut off".to_owned())
            }
        })?;
        if bytes.len() > MAX_REPLY_BYTES {
            return Err(ProviderError::BadReply(format!(
                "reply larger than {MAX_REPLY_BYTES} bytes"
            )));
        }
        Ok((status, bytes.to_vec()))
    }
}

/// `path` appended to the base URL's own path (`https://h/api/v1` + `/signin`).
pub fn endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// Parses a 2xx reply body as `T`, with an error that names what was wrong but not the body.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|error| {
        let reason = if error.is_eof() {
            "truncated JSON".to_owned()
        } else if error.is_syntax() {
            "not JSON".to_owned()
        } else {
            // serde's text for a mistyped field quotes the value, which may be a token.
            let text = error.to_string();
            match text.strip_suffix(&format!(
                " at line {} column {}",
                error.line(),
                error.column()
            )) {
                Some(missing) if missing.starts_with("missing field") => missing.to_owned(),
                _ => format!(
                    "a field has the wrong type (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            }
        };
        ProviderError::BadReply(format!("{what}: {reason}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_json_names_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        struct Reply {
            #[allow(dead_code)]
            access_token: String,
        }
        let truncated = parse_json::<Reply>(b"{\"access_token\":\"ab", "token reply").unwrap_err();
        assert_eq!(
            truncated,
            ProviderError::BadReply("token reply: truncated JSON".into())
        );
        let garbage = parse_json::<Reply>(b"<html>", "token reply").unwrap_err();
        assert_eq!(
            garbage,
            ProviderError::BadReply("token reply: not JSON".into())
        );
        let missing = parse_json::<Reply>(b"{}", "token reply").unwrap_err();
        assert!(missing.to_string().contains("missing field `access_token`"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct TokenReply {
            access_token: Secret,
            expires_in: Option<u64>,
            refresh_token: Option<Secret>,
        }

        fn bodies() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                any::<Vec<u8>>(),
                "\\PC{0,120}".prop_map(String::into_bytes),
                ("[a-z_]{1,14}", "\\PC{0,30}")
                    .prop_map(
                        |(key, value)| format!("{{\"{key}\":\"SECRET{value}\"}}").into_bytes()
                    ),
                any::<i64>().prop_map(|n| {
                    format!("{{\"access_token\":{n},\"expires_in\":\"SECRET\"}}").into_bytes()
                }),
            ]
        }

        proptest! {
            // Cases it finds become named tests, not a seed file at the top of the repository.
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_reply_body_parses_or_gives_an_error_without_its_content(body in bodies()) {
                if let Err(error) = parse_json::<TokenReply>(&body, "token reply") {
                    let text = error.to_string();
                    prop_assert!(!text.contains("SECRET"), "{}", text);
                    prop_assert!(matches!(error, ProviderError::BadReply(_)));
                }
            }
        }
    }
}
