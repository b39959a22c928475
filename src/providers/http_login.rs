//! `http`: a declarative login for any JSON API. The config gives the request, a JSON
//! pointer to the token in the reply, optionally one to its lifetime, and an optional
//! refresh request that uses a value of the last reply (`{refresh_token}`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;

use super::http::{Call, ProviderHttp, REFUSAL_STATUSES};
use super::{Grant, Provider, ProviderError};
use crate::config::{ExpiryField, ExpiryFormat, HttpBody, HttpLoginSettings, HttpRequestTemplate};
use crate::secret::Secret;

const PLACEHOLDER: &str = "{refresh_token}";

pub struct HttpLogin {
    settings: HttpLoginSettings,
    http: ProviderHttp,
}

impl HttpLogin {
    pub fn new(settings: &HttpLoginSettings, http: ProviderHttp) -> Self {
        HttpLogin {
            settings: settings.clone(),
            http,
        }
    }

    /// Every secret a template holds, to blank out of error text.
    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = Vec::new();
        let templates = std::iter::once(&self.settings.login)
            .chain(self.settings.refresh.as_ref().map(|r| &r.request));
        for template in templates {
            secrets.extend(template.headers.iter().map(|(_, value)| value));
            match &template.body {
                Some(HttpBody::Json(text)) | Some(HttpBody::Raw { text, .. }) => secrets.push(text),
                Some(HttpBody::Form(fields)) => {
                    secrets.extend(fields.iter().map(|(_, value)| value))
                }
                None => {}
            }
        }
        secrets
    }

    async fn send(
        &self,
        template: &HttpRequestTemplate,
        refresh_value: Option<&Secret>,
        refreshing: bool,
    ) -> Result<Grant, ProviderError> {
        let fill = |text: &str, escape: fn(&str) -> String| -> String {
            match refresh_value {
                Some(value) => text.replace(PLACEHOLDER, &escape(value.expose())),
                None => text.to_owned(),
            }
        };
        let url = fill(template.url.expose(), percent_encode);
        let url = url::Url::parse(&url).map_err(|_| {
            ProviderError::BadReply("the refresh value does not fit in the URL".to_owned())
        })?;
        let mut request = self.http.client().request(template.method.clone(), url);
        for (name, value) in &template.headers {
            let value = fill(value.expose(), str::to_owned);
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(ProviderError::BadReply(
                    "the refresh value cannot go in a header".to_owned(),
                ));
            }
            request = request.header(name.clone(), value);
        }
        request = match &template.body {
            None => request,
            Some(HttpBody::Json(text)) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(fill(text.expose(), json_escape)),
            Some(HttpBody::Form(fields)) => {
                let filled: Vec<(String, String)> = fields
                    .iter()
                    .map(|(name, value)| (name.clone(), fill(value.expose(), str::to_owned)))
                    .collect();
                request.form(&filled)
            }
            Some(HttpBody::Raw { content_type, text }) => request
                .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                .body(fill(text.expose(), str::to_owned)),
        };
        let reply = self.http.exchange(request).await?;
        if !reply.status.is_success() {
            let mut secrets = self.secrets();
            secrets.extend(refresh_value);
            // A refresh request refused with a 400 too means: log in again.
            let (call, refusing) = if refreshing {
                (Call::Refresh, &[400, 401, 403][..])
            } else {
                (Call::Login, REFUSAL_STATUSES)
            };
            return Err(self.http.failure(&reply, &secrets, call, refusing));
        }
        let reply: Value = serde_json::from_slice(&reply.body).map_err(|error| {
            ProviderError::BadReply(
                if error.is_eof() {
                    "truncated JSON"
                } else {
                    "not JSON"
                }
                .to_owned(),
            )
        })?;
        self.grant_from(&reply)
    }

    fn grant_from(&self, reply: &Value) -> Result<Grant, ProviderError> {
        let pointer = &self.settings.token_pointer;
        let token = reply
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ProviderError::BadReply(format!("no token string at `{pointer}` in the reply"))
            })?;
        let mut grant = Grant::bare(Secret::new(token));
        if let Some(expiry) = &self.settings.expiry {
            grant.expires_in = Some(lifetime(reply, expiry)?);
        }
        if let Some(refresh) = &self.settings.refresh {
            grant.refresh_token = reply
                .pointer(&refresh.refresh_token_pointer)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(Secret::new);
        }
        Ok(grant)
    }
}

/// The token's lifetime from the reply, in the configured format.
fn lifetime(reply: &Value, expiry: &ExpiryField) -> Result<Duration, ProviderError> {
    let pointer = &expiry.pointer;
    let value = reply.pointer(pointer).ok_or_else(|| {
        ProviderError::BadReply(format!("no lifetime at `{pointer}` in the reply"))
    })?;
    let number = || {
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| {
                ProviderError::BadReply(format!(
                    "the lifetime at `{pointer}` is not a whole number"
                ))
            })
    };
    let now_unix = crate::clock::unix_now();
    let seconds = match expiry.format {
        ExpiryFormat::Seconds => number()?,
        ExpiryFormat::Epoch => number()?.saturating_sub(now_unix),
        ExpiryFormat::Rfc3339 => {
            let text = value.as_str().ok_or_else(|| {
                ProviderError::BadReply(format!("the expiry at `{pointer}` is not a string"))
            })?;
            let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
                ProviderError::BadReply(format!("the expiry at `{pointer}` is not RFC 3339"))
            })?;
            at.duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs())
        }
    };
    if seconds == 0 {
        return Err(ProviderError::BadReply(
            "the token is already expired (check clocks)".to_owned(),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn percent_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The value as it goes inside a JSON string literal.
fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted.trim_matches('"').to_owned()
}

#[async_trait]
impl Provider for HttpLogin {
    async fn login(&self) -> Result<Grant, ProviderError> {
        self.send(&self.settings.login, None, false).await
    }

    async fn refresh(&self, refresh_token: &Secret) -> Result<Grant, ProviderError> {
        match &self.settings.refresh {
            Some(refresh) => self.send(&refresh.request, Some(refresh_token), true).await,
            None => self.login().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use serde_json::json;

    fn field(pointer: &str, format: ExpiryFormat) -> ExpiryField {
        ExpiryField {
            pointer: pointer.to_owned(),
            format,
        }
    }

    #[test]
    fn lifetime_in_each_format() {
        let reply = json!({"a": 600, "b": "600", "c": unix_now() + 600, "d": humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(600)).to_string()});
        let near = |d: Duration| d.as_secs().abs_diff(600) <= 2;
        assert!(near(
            lifetime(&reply, &field("/a", ExpiryFormat::Seconds)).unwrap()
        ));
        assert!(near(
            lifetime(&reply, &field("/b", ExpiryFormat::Seconds)).unwrap()
        ));
        assert!(near(
            lifetime(&reply, &field("/c", ExpiryFormat::Epoch)).unwrap()
        ));
        assert!(near(
            lifetime(&reply, &field("/d", ExpiryFormat::Rfc3339)).unwrap()
        ));
    }

    #[test]
    fn missing_garbled_or_past_lifetimes_are_errors() {
        let reply = json!({"past": unix_now() - 5, "word": "soon"});
        let missing = lifetime(&reply, &field("/nope", ExpiryFormat::Seconds)).unwrap_err();
        assert!(
            missing.to_string().contains("no lifetime at `/nope`"),
            "{missing}"
        );
        let garbled = lifetime(&reply, &field("/word", ExpiryFormat::Seconds)).unwrap_err();
        assert!(
            garbled.to_string().contains("not a whole number"),
            "{garbled}"
        );
        let past = lifetime(&reply, &field("/past", ExpiryFormat::Epoch)).unwrap_err();
        assert!(past.to_string().contains("already expired"), "{past}");
    }

    #[test]
    fn refresh_values_are_escaped_for_where_they_go() {
        assert_eq!(json_escape("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(percent_encode("a b&c"), "a+b%26c");
    }
}
