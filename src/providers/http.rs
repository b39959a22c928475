//! The HTTP side shared by every provider client: the provider's [`Outbound`] client, its
//! replies read up to a size cap, one mapping from a non-2xx reply to a [`ProviderError`],
//! and error text with the provider's secrets blanked.

use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;

use super::{BuildError, ProviderError};
use crate::config::ProviderSpec;
use crate::outbound::{Outbound, OutboundError, Reply};
use crate::secret::Secret;

/// Replies larger than this are not a token answer.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Longest piece of a provider's error text that is kept for logs and 503 details.
const MAX_DETAIL_CHARS: usize = 200;

/// The statuses with which most providers refuse what was sent (the credentials, or the
/// refresh token); any other non-2xx answer is a failure.
pub const REFUSAL_STATUSES: &[u16] = &[401, 403];

/// What a non-2xx reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Login,
    Refresh,
}

pub struct ProviderHttp {
    outbound: Outbound,
    /// The values of the provider's secret references, blanked from every error text.
    reference_values: Vec<Secret>,
}

impl ProviderHttp {
    pub fn new(spec: &ProviderSpec) -> Result<Self, BuildError> {
        let outbound = Outbound::new(spec.timeout, &spec.tls).map_err(|reason| BuildError {
            provider: spec.name.clone(),
            reason,
        })?;
        Ok(ProviderHttp {
            outbound,
            reference_values: spec.reference_values.clone(),
        })
    }

    /// For building requests; send them with [`ProviderHttp::exchange`].
    pub fn client(&self) -> &reqwest::Client {
        self.outbound.client()
    }

    /// Sends the request and reads the reply (at most 1 MiB).
    pub async fn exchange(&self, request: RequestBuilder) -> Result<Reply, ProviderError> {
        self.outbound
            .exchange(request, MAX_REPLY_BYTES)
            .await
            .map_err(|error| match error {
                OutboundError::Timeout(timeout) => ProviderError::Timeout(timeout),
                OutboundError::Unreachable(cause) => ProviderError::Unreachable(cause),
                other => ProviderError::BadReply(other.to_string()),
            })
    }

    /// A non-2xx reply as the error it is: a status in `refusing` refuses what `call` sent
    /// (the credentials, or the refresh token: log in again); any other is a failure. Its
    /// text has `secrets` blanked.
    pub fn failure(
        &self,
        reply: &Reply,
        secrets: &[&Secret],
        call: Call,
        refusing: &[u16],
    ) -> ProviderError {
        let status = reply.status.as_u16();
        let detail = self.error_detail(&reply.body, secrets);
        match call {
            _ if !refusing.contains(&status) => ProviderError::Failed { status, detail },
            Call::Login => ProviderError::Rejected { status, detail },
            Call::Refresh => ProviderError::RefreshRejected { status, detail },
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
